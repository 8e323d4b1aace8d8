/* Helpdesk chat widget: include with
 *   <script src="https://helpdesk.example.com/widget.js" async
 *           data-user-id="(optional) email or phone" data-user-hash="(optional) HMAC-SHA256 hex"></script>
 * Everything the widget shows is set with textContent, never as HTML. */
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
  // The last message shown on this page: a fresh page loads the whole history, a reconnect only what is new.
  var seq = 0;

  // Shadow DOM keeps the host page's styles out of the widget and ours out of the page.
  var host = document.createElement("div");
  host.setAttribute("data-helpdesk-chat", "");
  var root = host.attachShadow({mode: "open"});
  var style = document.createElement("style");
  style.textContent =
    ":host{all:initial}*{box-sizing:border-box;font:14px/1.4 system-ui,sans-serif}" +
    ".launcher{position:fixed;right:20px;bottom:20px;border:0;border-radius:24px;padding:12px 18px;" +
    "background:#1f6feb;color:#fff;cursor:pointer;z-index:2147483647}" +
    ".window{position:fixed;right:20px;bottom:76px;width:320px;height:420px;display:none;flex-direction:column;" +
    "background:#fff;border:1px solid #ccc;border-radius:8px;box-shadow:0 4px 20px rgba(0,0,0,.2);z-index:2147483647}" +
    ".window.open{display:flex}.log{flex:1;overflow-y:auto;padding:8px;margin:0;list-style:none}" +
    ".log li{margin:4px 0;padding:6px 10px;border-radius:8px;max-width:85%;white-space:pre-wrap;word-wrap:break-word}" +
    ".visitor{background:#1f6feb;color:#fff;margin-left:auto!important}.agent{background:#eee;color:#111}" +
    ".pending{opacity:.6}.status{padding:2px 8px;color:#a40;min-height:1em;font-size:12px}" +
    "form{display:flex;border-top:1px solid #ddd}textarea{flex:1;border:0;padding:8px;resize:none;height:56px}" +
    "form button{border:0;background:none;color:#1f6feb;padding:0 12px;cursor:pointer}";
  var launcher = el("button", "launcher", "Chat with us");
  launcher.type = "button";
  var win = el("div", "window");
  win.setAttribute("role", "dialog");
  win.setAttribute("aria-label", "Chat");
  var log = el("ul", "log");
  log.setAttribute("aria-live", "polite");
  var status = el("div", "status");
  var form = el("form");
  var input = el("textarea");
  input.maxLength = 5000;
  input.placeholder = "Write a message";
  input.setAttribute("aria-label", "Message");
  var send = el("button", "", "Send");
  send.type = "submit";
  form.append(input, send);
  win.append(log, status, form);
  root.append(style, launcher, win);
  document.body.appendChild(host);

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text) node.textContent = text;
    return node;
  }

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
  }

  launcher.addEventListener("click", function () {
    win.classList.toggle("open");
    if (win.classList.contains("open")) input.focus();
  });

  var socket = null;
  function start() {
    var auth = {token: store.token || null};
    if (script.dataset.userId && script.dataset.userHash) {
      auth.user_id = script.dataset.userId;
      auth.user_hash = script.dataset.userHash;
    }
    socket = window.io(base + "/chat", {auth: auth, withCredentials: false});
    socket.on("session", function (session) {
      if (session.visitor_id !== store.visitorId) {
        seq = 0;  // a new identity: nothing of the old conversation belongs to it
        log.textContent = "";
        shown = {};
      }
      store.token = session.token;
      store.visitorId = session.visitor_id;
      socket.auth.token = session.token;
      save();
      status.textContent = "";
      loadHistory();
      store.pending.forEach(function (m) { show(m.client_id, "visitor", m.text, true); });
      flush();
    });
    socket.on("reply", function (m) { show(m.key, "agent", m.text); });
    socket.on("chat_error", function (e) { status.textContent = e.message; });
    socket.on("connect_error", function () { status.textContent = "Reconnecting…"; });
    socket.on("disconnect", function () { status.textContent = "Reconnecting…"; });
  }

  function loadHistory() {
    socket.timeout(10000).emit("history", {after: seq}, function (err, answer) {
      if (err || !answer || !answer.ok) return;
      answer.messages.forEach(function (m) {
        show(m.key, m.direction, m.text);
        if (m.seq > seq) seq = m.seq;
      });
      if (answer.messages.length >= 200) loadHistory();
    });
  }

  var resendTimer = null;
  function flush() {
    // Every unacknowledged message is sent again with its client id; the server stores each id once.
    if (!socket || !socket.connected) return;
    store.pending.forEach(function (m) {
      socket.timeout(10000).emit("message", {client_id: m.client_id, text: m.text}, function (err, ack) {
        if (!err && ack && (ack.ok || !ack.temporary)) {
          store.pending = store.pending.filter(function (p) { return p.client_id !== m.client_id; });
          save();
          if (ack.ok) {
            show(m.client_id, "visitor", m.text, false);
          } else if (shown[m.client_id]) {
            shown[m.client_id].remove();
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
    var text = input.value.trim();
    if (!text) return;
    var m = {client_id: newClientId(), text: text};
    store.pending.push(m);
    save();
    input.value = "";
    show(m.client_id, "visitor", text, true);
    flush();
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  var typingSent = 0;
  input.addEventListener("input", function () {
    if (socket && socket.connected && Date.now() - typingSent > 2000) {
      typingSent = Date.now();
      socket.emit("typing", {typing: true});
    }
  });

  if (window.io) {
    start();
  } else {
    var loader = document.createElement("script");
    loader.src = base + "/static/vendor/socket.io.min.js";
    loader.onload = start;
    document.head.appendChild(loader);
  }
})();
