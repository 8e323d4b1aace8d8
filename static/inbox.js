// Live updates for the inbox and ticket pages: a notice appears when something changed.
(function () {
  if (typeof io === "undefined") return;
  const notice = document.getElementById("live-notice");
  const ticketElement = document.querySelector(".ticket[data-ticket]");
  const watchedTicket = ticketElement ? Number(ticketElement.dataset.ticket) : null;
  const socket = io("/agents", { transports: ["websocket", "polling"] });

  socket.on("connect", function () {
    if (watchedTicket) socket.emit("watch_ticket", { number: watchedTicket });
  });
  // Presence: the server counts an agent online while heartbeats keep coming (automatic assignment uses it).
  setInterval(function () {
    if (socket.connected) socket.emit("heartbeat");
  }, 30000);

  function show() {
    if (notice) notice.hidden = false;
  }

  socket.on("ticket.created", function () {
    if (!watchedTicket) show();
  });
  ["message.created", "message.updated", "ticket.updated"].forEach(function (name) {
    socket.on(name, function (payload) {
      if (!watchedTicket || payload.ticket === watchedTicket) show();
    });
  });
})();
