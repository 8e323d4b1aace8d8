// A message's formatted view (a sandboxed frame without scripts) grows to its content, so it reads as part of
// the page; frames of messages that arrive live are caught too ("load" does not bubble, so it is captured).
(function () {
  "use strict";

  function fit(frame) {
    var body = frame.contentDocument && frame.contentDocument.documentElement;
    if (body) frame.style.height = body.scrollHeight + 2 + "px";
  }

  document.addEventListener("load", function (event) {
    if (event.target.matches && event.target.matches("iframe.formatted-body")) fit(event.target);
  }, true);
  document.addEventListener("toggle", function (event) {
    var frame = event.target.querySelector && event.target.querySelector("iframe.formatted-body");
    if (frame && event.target.open) fit(frame);
  }, true);
})();
