// The agents' realtime connection, shared by the inbox and the ticket page.
// Rows and messages arrive as server-rendered (autoescaped) HTML fragments; nothing from an event payload is
// ever written as HTML.
(function () {
  "use strict";
  if (typeof io === "undefined") return;
  const socket = io("/agents", { transports: ["websocket", "polling"] });
  const reconnectHandlers = [];
  let hasConnected = false;

  socket.on("connect", function () {
    document.body.dataset.live = "connected";
    // After a drop the page may have missed events: each page fetches what changed.
    if (hasConnected) reconnectHandlers.forEach(function (handler) { handler(); });
    hasConnected = true;
  });
  socket.on("disconnect", function () { document.body.dataset.live = "disconnected"; });
  // Presence: the server counts an agent online while heartbeats keep coming (automatic assignment uses it).
  setInterval(function () {
    if (socket.connected) socket.emit("heartbeat");
  }, 30000);

  // Parse an HTML fragment from our own server into nodes, inertly (a <template> runs no scripts).
  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html;
    return template.content;
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error(url + " answered " + r.status);
      return r.json();
    });
  }

  // Collect keys over a short moment, then run `flush(keys)` once: a burst of events costs one request.
  function batcher(flush, delay) {
    let pending = new Set();
    let timer = null;
    let running = false;
    let failed = false;
    function run() {
      timer = null;
      if (running) { timer = setTimeout(run, delay); return; }
      const keys = pending;
      pending = new Set();
      running = true;
      failed = false;
      Promise.resolve(flush(keys)).catch(function (error) {
        failed = true;
        // Keep what failed for the next try; a page that cannot reach the server shows it on reconnect.
        keys.forEach(function (key) { pending.add(key); });
        console.warn(error);
      }).finally(function () {
        running = false;
        if (pending.size && !timer) timer = setTimeout(run, failed ? 3000 : delay);
      });
    }
    return function (key) {
      pending.add(key);
      if (!timer) timer = setTimeout(run, delay);
    };
  }

  window.helpdeskLive = {
    socket: socket,
    onReconnect: function (handler) { reconnectHandlers.push(handler); },
    fragment: fragment,
    getJSON: getJSON,
    batcher: batcher,
  };
})();
