// The reply form's files: too large a file, too many, or more than one request may carry are refused here,
// before the upload, so the reply's text is not lost to a refused request. The server checks again.
(function () {
  "use strict";

  var form = document.querySelector("form.reply[data-max-file-bytes]");
  if (!form) return;
  var input = form.querySelector("input[type=file]");
  var message = document.createElement("p");
  message.className = "error";
  message.id = "files-refused";
  message.setAttribute("aria-live", "polite");
  input.insertAdjacentElement("afterend", message);

  function size(bytes) {
    return bytes >= 1024 * 1024 ? (bytes / (1024 * 1024)).toFixed(1) + " MB" : bytes + " bytes";
  }

  function refusal() {
    var maxFile = Number(form.dataset.maxFileBytes);
    var maxTotal = Number(form.dataset.maxRequestBytes);
    var maxFiles = Number(form.dataset.maxFiles);
    var files = Array.from(input.files);
    if (files.length > maxFiles) return "At most " + maxFiles + " files go with one reply.";
    var total = 0;
    for (var i = 0; i < files.length; i++) {
      if (files[i].size > maxFile) {
        return files[i].name + " is " + size(files[i].size) + ", over the " + size(maxFile) +
          " limit for a file.";
      }
      total += files[i].size;
    }
    // The text and the form's fields need some room too.
    if (total + 64 * 1024 > maxTotal) {
      return "The files come to " + size(total) + ", over the " + size(maxTotal) + " one reply may carry.";
    }
    return "";
  }

  input.addEventListener("change", function () {
    message.textContent = refusal();
  });
  form.addEventListener("submit", function (event) {
    var reason = refusal();
    message.textContent = reason;
    if (reason) event.preventDefault();
  });
})();
