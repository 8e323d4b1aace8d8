// The ticket page of a web chat: the visitor sees this agent typing, the visitor's messages are marked seen
// when the agent has the page in front, the agent sees which replies the visitor has read, and the visitor's
// files open from the conversation. Everything from the server is set as text or as attributes, never as HTML.
(function () {
  "use strict";
  const root = document.querySelector(".ticket[data-ticket]");
  if (!root || typeof io === "undefined") return;
  const number = Number(root.dataset.ticket);
  const live = window.helpdeskLive;
  // The page's shared realtime connection when there is one; else one of our own.
  const socket = live && live.socket ? live.socket : io("/agents", { transports: ["websocket", "polling"] });
  let state = null;

  function isVisible() { return document.visibilityState !== "hidden"; }

  function request(event) {
    if (!socket.connected) return;
    socket.timeout(10000).emit(event, { number: number }, function (err, answer) {
      if (!err && answer && answer.ok) {
        state = answer;
        decorate();
      }
    });
  }
  // Seen only when the agent can actually see the page; otherwise just read the state.
  function refresh() { request(isVisible() ? "chat_read" : "chat_state"); }

  function articleOf(messageId) { return document.getElementById("message-" + messageId); }

  function decorate() {
    if (!state) return;
    document.querySelectorAll("article.message.outbound").forEach(function (article) {
      const id = Number((article.id || "").replace("message-", ""));
      const channel = article.querySelector(".channel");
      const isChat = channel && channel.textContent.trim().indexOf("chat") === 0;
      const seen = isChat && id && id <= state.visitor_read_up_to;
      let mark = article.querySelector(".chat-seen");
      if (seen && !mark) {
        mark = document.createElement("span");
        mark.className = "chat-seen badge";
        mark.textContent = "Seen by the visitor";
        (article.querySelector("header") || article).appendChild(mark);
      }
    });
    Object.keys(state.attachments || {}).forEach(function (messageId) {
      const article = articleOf(messageId);
      if (!article || article.querySelector(".chat-files")) return;
      const box = document.createElement("div");
      box.className = "chat-files";
      state.attachments[messageId].forEach(function (file) {
        if (!file.url) return;
        const link = document.createElement("a");
        link.href = file.url;
        link.target = "_blank";
        link.rel = "noopener";
        link.className = "chat-file";
        link.title = file.filename + " (" + file.content_type + ", " + file.size + " bytes)";
        if (file.is_image) {
          const image = document.createElement("img");
          image.src = file.url;
          image.alt = file.filename;
          image.className = "chat-thumb";
          image.style.maxWidth = "240px";
          image.style.maxHeight = "180px";
          image.style.display = "block";
          link.appendChild(image);
        } else {
          link.textContent = "Open " + file.filename;
        }
        box.appendChild(link);
      });
      article.appendChild(box);
    });
  }

  socket.on("connect", function () {
    socket.emit("watch_ticket", { number: number });
    refresh();
  });
  if (socket.connected) {
    socket.emit("watch_ticket", { number: number });
    refresh();
  }
  socket.on("chat.read", function (payload) {
    if (payload.ticket === number) request("chat_state");
  });
  document.addEventListener("visibilitychange", function () { if (isVisible()) refresh(); });

  // Messages arrive (and are re-rendered) live: mark new ones and decorate them again.
  const box = document.getElementById("messages") || root;
  let pending = null;
  new MutationObserver(function () {
    decorate();
    clearTimeout(pending);
    pending = setTimeout(refresh, 300);
  }).observe(box, { childList: true, subtree: false });

  // This agent typing a reply (never an internal note) shows in the visitor's widget.
  const composer = document.querySelector("form.reply textarea");
  if (composer) {
    const internal = composer.form.querySelector("input[name=internal]");
    let sentAt = 0;
    let idle = null;
    function typing(isTyping) {
      if (socket.connected) socket.emit("chat_typing", { number: number, typing: isTyping });
    }
    composer.addEventListener("input", function () {
      if (internal && internal.checked) return;
      if (!composer.value.trim()) { typing(false); sentAt = 0; return; }
      if (Date.now() - sentAt > 2000) { sentAt = Date.now(); typing(true); }
      clearTimeout(idle);
      idle = setTimeout(function () { typing(false); sentAt = 0; }, 5000);
    });
    composer.form.addEventListener("submit", function () { clearTimeout(idle); typing(false); sentAt = 0; });
  }
})();
