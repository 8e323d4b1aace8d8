/* Helpdesk chat widget: include with
 *   <script src="https://helpdesk.example.com/widget.js" async
 *           data-user-id="(optional) email or phone" data-user-hash="(optional) HMAC-SHA256 hex"></script>
 * Everything the widget shows is set with textContent, never as HTML.
 *
 * DOM (inside the open shadow root of the element [data-helpdesk-chat]):
 *   .launcher                 button toggling .window (class "open")
 *   .window                   the chat window
 *     .header .end            "End chat" button
 *     .greeting               the greeting admins set (empty: hidden)
 *     .prechat                name/email asked before the first message (when admins ask); .prechat-error
 *     .offline                shown while no agent is online: the offline message, name and email inputs;
 *                             with an email, the next message is left for an answer by email (.offline-done)
 *     .log                    one li per message: class "visitor" or "agent", "pending" until acknowledged,
 *                             "read" once an agent saw a visitor's message; the text alone as textContent;
 *                             files as a.attachment (download) or img.attachment (images) inside the li
 *     .typing                 "<agent> is typing…", hidden after a few seconds or on the reply
 *     .status                 connection and error text (an oversized file or message says so here)
 *     .ended                  after "End chat" or once the ticket is solved: .transcript-email input,
 *                             .transcript button, .transcript-status
 *     .composer               .attach (choose a file; images, PDF, text) and the one form: textarea + submit
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__helpdeskChat) return;
  window.__helpdeskChat = true;
  var base = new URL(script.src).origin;
  var storeKey = "helpdesk-chat:" + base;
  var store = load();

  function load() {
    try { return JSON.parse(localStorage.getItem(storeKey)) || {}; } catch (e) { return {}; }
  }
  function save() {
    try { localStorage.setItem(storeKey, JSON.stringify(store)); } catch (e) { /* private mode: memory only */ }
  }
  store.pending = store.pending || [];
  // Messages left for an answer by email: kept by the browser that wrote them, because the server does not tie
  // an email ticket to a visitor (the address is unproven), so the history cannot bring them back.
  store.left = store.left || [];
  // The last message shown on this page: a fresh page loads the whole history, a reconnect only what is new.
  var seq = 0;
  var settings = {};
  var agentsOnline = true;
  var verified = false;  // the site vouched for the visitor (data-user-hash): no pre-chat questions

  // Shadow DOM keeps the host page's styles out of the widget and ours out of the page.
  var host = document.createElement("div");
  host.setAttribute("data-helpdesk-chat", "");
  var root = host.attachShadow({mode: "open"});
  var style = document.createElement("style");
  style.textContent =
    ":host{all:initial}*{box-sizing:border-box;font:14px/1.4 system-ui,sans-serif}[hidden]{display:none!important}" +
    ".launcher{position:fixed;right:20px;bottom:20px;border:0;border-radius:24px;padding:12px 18px;" +
    "background:#1f6feb;color:#fff;cursor:pointer;z-index:2147483647}" +
    ".window{position:fixed;right:20px;bottom:76px;width:320px;height:460px;display:none;flex-direction:column;" +
    "background:#fff;color:#111;border:1px solid #ccc;border-radius:8px;box-shadow:0 4px 20px rgba(0,0,0,.2);" +
    "z-index:2147483647}" +
    ".window.open{display:flex}.header{display:flex;align-items:center;padding:6px 8px;border-bottom:1px solid #eee}" +
    ".header .title{flex:1;font-weight:600}.header button,.ended button,.prechat button,.offline button{border:0;" +
    "background:none;color:#1f6feb;cursor:pointer;padding:2px 6px}" +
    ".greeting,.offline,.prechat,.ended{margin:0;padding:6px 10px;font-size:13px;border-bottom:1px solid #eee}" +
    ".by-email::after{content:\"We will reply by email to \" attr(data-email);display:block;font-size:11px;" +
    "opacity:.8;margin-top:2px}" +
    ".offline,.ended{background:#fff8e6}.offline p,.ended p,.prechat p{margin:2px 0}" +
    "input{width:100%;margin:2px 0;padding:4px 6px;border:1px solid #ccc;border-radius:4px}" +
    ".prechat-error,.transcript-status{color:#a40}.offline-done,.transcript-status.ok{color:#175}" +
    ".log{flex:1;overflow-y:auto;padding:8px;margin:0;list-style:none}" +
    ".log li{margin:4px 0;padding:6px 10px;border-radius:8px;max-width:85%;white-space:pre-wrap;word-wrap:break-word}" +
    ".visitor{background:#1f6feb;color:#fff;margin-left:auto!important}.agent{background:#eee;color:#111}" +
    ".pending{opacity:.6}.visitor.read::after{content:' \\2713';font-size:11px;opacity:.8}" +
    "img.attachment{display:block;max-width:100%;max-height:160px;margin-top:4px;border-radius:4px}" +
    "a.attachment{display:block;color:inherit;text-decoration:underline;cursor:pointer}" +
    ".typing{padding:0 10px;color:#666;font-size:12px;font-style:italic;min-height:1em}" +
    ".status{padding:2px 8px;color:#a40;min-height:1em;font-size:12px}" +
    ".composer{display:flex;border-top:1px solid #ddd}.attach{border:0;background:none;cursor:pointer;padding:0 8px;" +
    "font-size:18px;color:#666}form{display:flex;flex:1}textarea{flex:1;border:0;padding:8px;resize:none;height:56px}" +
    "form button{border:0;background:none;color:#1f6feb;padding:0 12px;cursor:pointer}";
  // Colours admins chose: only a validated #rrggbb ever reaches this style sheet.
  var theme = document.createElement("style");

  var launcher = el("button", "launcher", "Chat with us");
  launcher.type = "button";
  var win = el("div", "window");
  win.setAttribute("role", "dialog");
  win.setAttribute("aria-label", "Chat");

  var header = el("div", "header");
  var endButton = el("button", "end", "End chat");
  endButton.type = "button";
  header.append(el("span", "title", "Chat"), endButton);
  var greeting = el("p", "greeting");
  greeting.hidden = true;

  var prechat = el("div", "prechat");
  prechat.hidden = true;
  var prechatName = input("name", "Your name", "text");
  var prechatEmail = input("email", "Your email address", "email");
  var prechatStart = el("button", "start", "Start the chat");
  prechatStart.type = "button";
  var prechatError = el("p", "prechat-error");
  prechat.append(el("p", "", "Before we start:"), prechatName, prechatEmail, prechatStart, prechatError);

  var offline = el("div", "offline");
  offline.hidden = true;
  var offlineText = el("p", "offline-text");
  var offlineName = input("name", "Your name (optional)", "text");
  var offlineEmail = input("email", "Your email address", "email");
  var offlineHint = el("p", "offline-hint", "Then write your message below and send it: we will answer by email.");
  var offlineDone = el("p", "offline-done");
  offline.append(offlineText, offlineName, offlineEmail, offlineHint, offlineDone);

  var log = el("ul", "log");
  log.setAttribute("aria-live", "polite");
  var typing = el("div", "typing");
  typing.hidden = true;
  var status = el("div", "status");

  var ended = el("div", "ended");
  ended.hidden = true;
  var transcriptEmail = input("email", "Your email address", "email");
  transcriptEmail.className = "transcript-email";
  var transcriptButton = el("button", "transcript", "Email me the transcript");
  transcriptButton.type = "button";
  var transcriptStatus = el("p", "transcript-status");
  ended.append(el("p", "", "This chat has ended. Write below if you need anything else."), transcriptEmail,
    transcriptButton, transcriptStatus);

  var composer = el("div", "composer");
  var attach = el("button", "attach", "+");
  attach.type = "button";
  attach.title = "Send a file";
  attach.setAttribute("aria-label", "Send a file");
  attach.hidden = true;  // until the server says files are taken
  var fileInput = document.createElement("input");
  fileInput.type = "file";
  fileInput.hidden = true;
  fileInput.multiple = true;
  var form = el("form");
  var textarea = el("textarea");
  textarea.maxLength = 5000;
  textarea.placeholder = "Write a message";
  textarea.setAttribute("aria-label", "Message");
  var send = el("button", "", "Send");
  send.type = "submit";
  form.append(textarea, send);
  composer.append(attach, fileInput, form);

  win.append(header, greeting, prechat, offline, log, typing, status, ended, composer);
  root.append(style, theme, launcher, win);
  document.body.appendChild(host);

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text) node.textContent = text;
    return node;
  }
  function input(name, placeholder, type) {
    var node = document.createElement("input");
    node.name = name;
    node.type = type;
    node.placeholder = placeholder;
    node.setAttribute("aria-label", placeholder);
    node.maxLength = name === "email" ? 254 : 200;
    return node;
  }

  // Settings from the server ----------------------------------------------------------------------------

  function applySettings(received) {
    settings = received || {};
    var color = /^#[0-9a-f]{6}$/i.test(settings.primary_color || "") ? settings.primary_color : "#1f6feb";
    var ink = isLight(color) ? "#111" : "#fff";
    theme.textContent = ".launcher,.visitor{background:" + color + ";color:" + ink + "}" +
      "form button,.header button,.ended button,.prechat button,.offline button{color:" + color + "}";
    greeting.textContent = settings.greeting || "";
    greeting.hidden = !settings.greeting;
    offlineText.textContent = settings.offline_message || "";
    fileInput.accept = (settings.upload_types || []).join(",");
    attach.hidden = !settings.max_upload_bytes;
  }
  function isLight(hex) {
    var r = parseInt(hex.substr(1, 2), 16), g = parseInt(hex.substr(3, 2), 16), b = parseInt(hex.substr(5, 2), 16);
    return (0.299 * r + 0.587 * g + 0.114 * b) > 160;
  }

  function contact() { return store.contact || {}; }

  function updatePanels() {
    var asks = settings.ask_name || settings.ask_email;
    var started = log.children.length > 0 || store.pending.length > 0;
    prechat.hidden = !(asks && !store.contact && !started && !verified);
    prechatName.hidden = !settings.ask_name;
    prechatEmail.hidden = !settings.ask_email;
    composer.hidden = !prechat.hidden;
    offline.hidden = agentsOnline || !prechat.hidden;
    if (!offline.hidden) {
      if (!offlineEmail.value && contact().email) offlineEmail.value = contact().email;
      if (!offlineName.value && contact().name) offlineName.value = contact().name;
    }
  }

  // Messages ------------------------------------------------------------------------------------------

  var shown = {};  // key -> <li>, so history, acknowledgements and live replies never show one twice
  function show(key, direction, text, isPending) {
    var item = key && shown[key];
    if (!item) {
      item = el("li", direction);
      item.textContent = text;
      log.appendChild(item);
      if (key) shown[key] = item;
      log.scrollTop = log.scrollHeight;
    }
    item.classList.toggle("pending", !!isPending);
    updatePanels();
    return item;
  }
  function detail(item, m) {
    if (m.seq) {
      item.dataset.seq = m.seq;
      placeInOrder(item);
    }
    if (m.email) {
      item.dataset.email = m.email;  // shown by the style sheet, so the message's own text stays as written
      item.classList.add("by-email");
    }
    if (m.author) item.title = m.author;
    if (m.read) item.classList.add("read");
    if (m.attachments && m.attachments.length && !item.dataset.files) {
      item.dataset.files = "1";
      m.attachments.forEach(function (file) { showAttachment(item, file); });
    }
  }

  function placeInOrder(item) {
    // In the order the server stored them: a message left by email, shown from this browser's memory, sits
    // between the chat messages that came before and after it.
    var seq = Number(item.dataset.seq);
    var later = Array.prototype.find.call(log.children, function (other) {
      return other !== item && Number(other.dataset.seq) > seq;
    });
    if (later && later !== item.nextSibling) log.insertBefore(item, later);
  }

  var agentSeq = 0;  // the newest agent message shown, for the read receipt
  function noteAgentSeq(m) {
    if (m.direction === "agent" && m.seq > agentSeq) agentSeq = m.seq;
  }

  launcher.addEventListener("click", function () {
    win.classList.toggle("open");
    if (win.classList.contains("open")) {
      checkAvailability();
      markRead();
      if (!composer.hidden) textarea.focus();
    }
  });
  document.addEventListener("visibilitychange", markRead);

  var socket = null;
  function start() {
    var auth = {token: store.token || null, name: contact().name || null, email: contact().email || null};
    if (script.dataset.userId && script.dataset.userHash) {
      auth.user_id = script.dataset.userId;
      auth.user_hash = script.dataset.userHash;
    }
    socket = window.io(base + "/chat", {auth: auth, withCredentials: false});
    socket.on("session", function (session) {
      if (session.visitor_id !== store.visitorId) {
        seq = 0;  // a new identity: nothing of the old conversation belongs to it
        agentSeq = 0;
        log.textContent = "";
        shown = {};
        if (store.visitorId) store.left = [];
      }
      store.token = session.token;
      store.visitorId = session.visitor_id;
      socket.auth.token = session.token;
      save();
      status.textContent = "";
      agentsOnline = session.agents_online !== false;
      verified = !!session.verified;
      applySettings(session.settings);
      updatePanels();
      store.left.forEach(function (m) { detail(show(m.client_id, "visitor", m.text, false), m); });
      loadHistory();
      store.pending.forEach(function (m) { show(m.client_id, "visitor", m.text, true); });
      flush();
    });
    socket.on("reply", function (m) {
      typing.hidden = true;
      show(m.key, "agent", m.text);
      loadHistory();  // numbers the reply (for the read receipt) and brings its author and files
    });
    socket.on("typing", function (t) {
      clearTimeout(typingTimer);
      typing.textContent = t.typing ? (t.name || "Support") + " is typing\u2026" : "";
      typing.hidden = !t.typing;
      if (t.typing) typingTimer = setTimeout(function () { typing.hidden = true; }, 6000);
    });
    socket.on("read", function (r) {
      Array.prototype.forEach.call(log.querySelectorAll("li.visitor"), function (item) {
        if (Number(item.dataset.seq) && Number(item.dataset.seq) <= r.up_to) item.classList.add("read");
      });
    });
    socket.on("chat_ended", function () { showEnded(); });
    socket.on("chat_error", function (e) { status.textContent = e.message; });
    socket.on("connect_error", function () { status.textContent = "Reconnecting\u2026"; });
    socket.on("disconnect", function () { status.textContent = "Reconnecting\u2026"; });
  }
  var typingTimer = null;

  function loadHistory() {
    socket.timeout(10000).emit("history", {after: seq}, function (err, answer) {
      if (err || !answer || !answer.ok) return;
      answer.messages.forEach(function (m) {
        detail(show(m.key, m.direction, m.text), m);
        noteAgentSeq(m);
        if (m.seq > seq) seq = m.seq;
      });
      markRead();
      if (answer.messages.length >= 200) loadHistory();
    });
  }

  var readSent = 0;
  function markRead() {
    // Only what the visitor can actually see: the window is open and the page is in front.
    if (!socket || !socket.connected || !win.classList.contains("open")) return;
    if (document.visibilityState === "hidden") return;
    if (agentSeq <= readSent) return;
    readSent = agentSeq;
    socket.emit("read", {up_to: agentSeq});
  }

  function checkAvailability() {
    if (!socket || !socket.connected) return;
    socket.timeout(10000).emit("availability", {}, function (err, answer) {
      if (err || !answer || !answer.ok) return;
      agentsOnline = answer.agents_online;
      updatePanels();
    });
  }
  setInterval(function () { if (win.classList.contains("open")) checkAvailability(); }, 60000);

  var resendTimer = null;
  function flush() {
    // Every unacknowledged message is sent again with its client id; the server stores each id once.
    if (!socket || !socket.connected) return;
    store.pending.forEach(function (m) {
      var event = m.offline ? "leave_message" : "message";
      var payload = {client_id: m.client_id, text: m.text};
      if (m.offline) { payload.name = m.name; payload.email = m.email; }
      socket.timeout(10000).emit(event, payload, function (err, ack) {
        if (!err && ack && (ack.ok || !ack.temporary)) {
          store.pending = store.pending.filter(function (p) { return p.client_id !== m.client_id; });
          save();
          if (ack.ok) {
            var stored = {seq: ack.seq};
            if (m.offline) {
              offlineDone.textContent = "Thank you! We will answer at " + ack.email + " by email.";
              stored = {client_id: m.client_id, text: m.text, seq: ack.seq, email: ack.email};
              store.left = store.left.concat([stored]).slice(-50);
              save();
            }
            detail(show(m.client_id, "visitor", m.text, false), stored);
          } else {
            if (shown[m.client_id]) { shown[m.client_id].remove(); delete shown[m.client_id]; }
            // Refused for good (an invalid address): give the text back, so nothing typed is lost.
            if (m.offline && !textarea.value) textarea.value = m.text;
            updatePanels();
          }
        } else {
          retryLater();
        }
      });
    });
  }
  function retryLater() {
    if (resendTimer) return;
    resendTimer = setTimeout(function () { resendTimer = null; flush(); }, 3000);
  }

  function newClientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = textarea.value.trim();
    if (!text) return;
    var m = {client_id: newClientId(), text: text};
    if (!offline.hidden && offlineEmail.value.trim()) {
      // No agent online and an address given: the message is left for an answer by email.
      m.offline = true;
      m.email = offlineEmail.value.trim();
      m.name = offlineName.value.trim();
      store.contact = {name: m.name || contact().name || null, email: m.email};
    }
    store.pending.push(m);
    save();
    textarea.value = "";
    show(m.client_id, "visitor", text, true);
    flush();
  });
  textarea.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  var typingSent = 0;
  textarea.addEventListener("input", function () {
    if (socket && socket.connected && Date.now() - typingSent > 2000) {
      typingSent = Date.now();
      socket.emit("typing", {typing: true});
    }
  });

  // Before the chat: the pre-chat form -------------------------------------------------------------------

  prechatStart.addEventListener("click", function () {
    var given = {name: prechatName.value.trim(), email: prechatEmail.value.trim()};
    if (settings.ask_name && !given.name) { prechatError.textContent = "Please enter your name."; return; }
    if (settings.ask_email && !given.email) { prechatError.textContent = "Please enter your email address."; return; }
    if (!socket || !socket.connected) { prechatError.textContent = "Connecting\u2026 try again in a moment."; return; }
    socket.timeout(10000).emit("contact", given, function (err, ack) {
      if (err || !ack) { prechatError.textContent = "Could not reach us; try again."; return; }
      if (!ack.ok) { prechatError.textContent = ack.message; return; }
      store.contact = ack.contact;
      socket.auth.name = ack.contact.name;
      socket.auth.email = ack.contact.email;
      save();
      prechatError.textContent = "";
      updatePanels();
      textarea.focus();
    });
  });
  [prechatName, prechatEmail].forEach(function (field) {
    field.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { event.preventDefault(); prechatStart.click(); }
    });
  });

  // The end of a chat, and its transcript ---------------------------------------------------------------

  function showEnded() {
    ended.hidden = false;
    transcriptStatus.textContent = "";
    if (!transcriptEmail.value && contact().email) transcriptEmail.value = contact().email;
  }
  endButton.addEventListener("click", function () {
    if (!socket || !socket.connected) return;
    socket.timeout(10000).emit("end_chat", {}, function (err, ack) {
      if (!err && ack && ack.ok) showEnded();
    });
  });
  transcriptButton.addEventListener("click", function () {
    if (!socket || !socket.connected) { transcriptStatus.textContent = "Reconnecting\u2026"; return; }
    var email = transcriptEmail.value.trim();
    socket.timeout(15000).emit("transcript", email ? {email: email} : {}, function (err, ack) {
      transcriptStatus.classList.remove("ok");
      if (err || !ack) { transcriptStatus.textContent = "Could not reach us; try again."; return; }
      transcriptStatus.textContent = ack.ok ? "The transcript is on its way to " + ack.email + "." : ack.message;
      transcriptStatus.classList.toggle("ok", !!ack.ok);
    });
  });

  // Files ---------------------------------------------------------------------------------------------

  attach.addEventListener("click", function () { fileInput.click(); });
  fileInput.addEventListener("change", function () {
    Array.prototype.forEach.call(fileInput.files, upload);
    fileInput.value = "";
  });

  function describe(bytes) {
    return bytes >= 1048576 ? (bytes / 1048576).toFixed(0) + " MB" : Math.ceil(bytes / 1024) + " KB";
  }

  function upload(file, attempt) {
    var limit = settings.max_upload_bytes || 0;
    var extension = (file.name.match(/\.[^.]+$/) || [""])[0].toLowerCase();
    if (limit && file.size > limit) {
      status.textContent = file.name + " is too large: files are limited to " + describe(limit) + ".";
      return;
    }
    if (settings.upload_types && settings.upload_types.indexOf(extension) < 0) {
      status.textContent = file.name + ": this kind of file cannot be sent. Allowed: " +
        settings.upload_types.join(", ") + ".";
      return;
    }
    var clientId = newClientId();
    var item = show(clientId, "visitor", file.name, true);
    item.classList.add("file");
    post();

    function post() {
      var body = new FormData();
      body.append("client_id", clientId);
      body.append("file", file, file.name);
      fetch(base + "/chat/upload", {method: "POST", body: body, credentials: "omit",
                                    headers: {Authorization: "Bearer " + (store.token || "")}})
        .then(function (response) {
          return response.json().catch(function () { return {ok: false, message: "Upload failed."}; })
            .then(function (answer) { return {status: response.status, answer: answer}; });
        })
        .then(function (result) {
          if (result.answer.ok) {
            item.textContent = "";
            item.classList.remove("pending");
            detail(item, {seq: result.answer.seq, attachments: result.answer.attachments});
          } else if (result.status >= 500 || result.status === 429) {
            retry(result.answer.message);
          } else {
            status.textContent = result.answer.message || "The file was not sent.";
            item.remove();
            delete shown[clientId];
            updatePanels();
          }
        })
        .catch(function () { retry("The file could not be sent yet; trying again."); });
    }
    function retry(message) {
      status.textContent = message || "";
      attempt = (attempt || 0) + 1;
      if (attempt > 5) {
        status.textContent = file.name + " could not be sent. Try again later.";
        item.remove();
        delete shown[clientId];
        return;
      }
      setTimeout(post, 3000 * attempt);
    }
  }

  function fetchFile(file) {
    return fetch(base + file.path, {credentials: "omit", headers: {Authorization: "Bearer " + (store.token || "")}})
      .then(function (response) {
        if (!response.ok) throw new Error("unavailable");
        return response.blob();
      });
  }

  function showAttachment(item, file) {
    if (!file.path) {
      var refused = el("span", "attachment refused", file.filename + " (not kept)");
      item.appendChild(refused);
      return;
    }
    if (file.is_image) {
      var image = el("img", "attachment");
      image.alt = file.filename;
      image.title = file.filename;
      item.appendChild(image);
      fetchFile(file).then(function (blob) { image.src = URL.createObjectURL(blob); })
        .catch(function () { image.alt = file.filename + " (unavailable)"; });
      return;
    }
    var link = el("a", "attachment", file.filename);
    link.href = "#";
    link.title = file.filename + ", " + describe(file.size || 0);
    link.addEventListener("click", function (event) {
      event.preventDefault();
      fetchFile(file).then(function (blob) {
        var download = document.createElement("a");
        download.href = URL.createObjectURL(blob);
        download.download = file.filename;
        root.appendChild(download);
        download.click();
        download.remove();
        setTimeout(function () { URL.revokeObjectURL(download.href); }, 60000);
      }).catch(function () { status.textContent = file.filename + " is not available."; });
    });
    item.appendChild(link);
  }

  if (window.io) {
    start();
  } else {
    var loader = document.createElement("script");
    loader.src = base + "/static/vendor/socket.io.min.js";
    loader.onload = start;
    document.head.appendChild(loader);
  }
})();
