// Live SMS segment counter for the reply box; mirrors channels/sms/segments.py rule for rule.
(function () {
  "use strict";

  // The GSM 03.38 default alphabet and its extension table (each extension character takes two septets).
  var GSM7_BASIC = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  var GSM7_EXTENSION = "\f^{}\\[~]|€";
  var SINGLE = { "GSM-7": 160, "UCS-2": 70 };
  var MULTI = { "GSM-7": 153, "UCS-2": 67 };

  function isGsm(ch) {
    return GSM7_BASIC.indexOf(ch) !== -1 || GSM7_EXTENSION.indexOf(ch) !== -1;
  }

  function countSegments(text) {
    text = text.replace(/\r\n/g, "\n");
    // for...of walks code points, so an emoji is one character of two UTF-16 units (ch.length === 2).
    var chars = Array.from(text);
    var outside = [];
    chars.forEach(function (ch) {
      if (!isGsm(ch) && outside.indexOf(ch) === -1) outside.push(ch);
    });
    var encoding = outside.length ? "UCS-2" : "GSM-7";
    var costs = chars.map(function (ch) {
      if (encoding === "UCS-2") return ch.length;
      return GSM7_EXTENSION.indexOf(ch) !== -1 ? 2 : 1;
    });
    var units = costs.reduce(function (a, b) { return a + b; }, 0);
    if (units <= SINGLE[encoding]) {
      return { encoding: encoding, characters: chars.length, units: units, segments: chars.length ? 1 : 0,
               perSegment: SINGLE[encoding], outside: outside };
    }
    // Greedy, never splitting an escape pair or a surrogate pair across two segments.
    var per = MULTI[encoding], segments = 1, used = 0;
    costs.forEach(function (cost) {
      if (used + cost > per) { segments += 1; used = 0; }
      used += cost;
    });
    return { encoding: encoding, characters: chars.length, units: units, segments: segments, perSegment: per,
             outside: outside };
  }

  window.countSmsSegments = countSegments;

  var form = document.querySelector("form.reply[data-text-channel]");
  if (!form) return;
  var box = form.querySelector("textarea");
  var output = document.getElementById("sms-counter");
  var internal = form.querySelector("input[name=internal]");
  if (!box || !output) return;
  var channel = form.dataset.textChannel;
  var maxSegments = Number(form.dataset.maxSegments || 10);
  var maxCharacters = Number(form.dataset.maxCharacters || 1600);

  function update() {
    if (internal && internal.checked) {
      output.textContent = "Internal note: not sent as a text.";
      output.classList.remove("error");
      return;
    }
    var count = countSegments(box.value);
    var tooLong = count.characters > maxCharacters;
    var parts = [count.characters + " characters"];
    if (channel === "sms") {
      parts.push(count.segments + (count.segments === 1 ? " segment" : " segments") + " (" + count.encoding +
        ", " + count.perSegment + " per segment)");
      if (count.outside.length) {
        parts.push("UCS-2 because of " + count.outside.slice(0, 5).join(" "));
      }
      tooLong = tooLong || count.segments > maxSegments;
      if (tooLong) parts.push("over the limit of " + maxSegments + " segments: shorten it or split it");
    } else if (tooLong) {
      parts.push("over the limit of " + maxCharacters + " characters");
    }
    output.textContent = parts.join(" · ");
    output.classList.toggle("error", tooLong);
  }

  box.addEventListener("input", update);
  if (internal) internal.addEventListener("change", update);
  update();
})();
