// The live inbox: new tickets appear and changed ones update in place, within the view's filters.
(function () {
  "use strict";
  const live = window.helpdeskLive;
  const table = document.getElementById("inbox");
  if (!live || !table) return;
  const body = table.tBodies[0];
  const emptyRow = body.querySelector("tr.empty");
  const notice = document.getElementById("live-notice");
  const rowsUrl = table.dataset.rowsUrl;
  const isFirstPage = table.dataset.page === "1";
  const perPage = Number(table.dataset.perPage) || 50;

  function rowOf(number) {
    return body.querySelector('tr[data-ticket="' + number + '"]');
  }

  function rows() {
    return Array.from(body.querySelectorAll("tr[data-ticket]"));
  }

  // Newest activity first, as the server orders the page: updated time, then ticket number.
  function comesBefore(a, b) {
    if (a.updated !== b.updated) return a.updated > b.updated;
    return a.number > b.number;
  }

  function sortKey(tr) {
    return { updated: Date.parse(tr.dataset.updated), number: Number(tr.dataset.ticket) };
  }

  function place(tr) {
    const key = sortKey(tr);
    const next = rows().find(function (other) { return other !== tr && comesBefore(key, sortKey(other)); });
    body.insertBefore(tr, next || emptyRow);
  }

  function showRow(entry) {
    const existing = rowOf(entry.number);
    if (!existing && !isFirstPage) {
      // A ticket new to this view belongs on the first page, not on this one.
      if (notice) notice.hidden = false;
      return;
    }
    const tr = live.fragment(entry.html).querySelector("tr");
    tr.classList.add("live-changed");
    if (existing) existing.replaceWith(tr);
    place(tr);
  }

  function updateCounts(counts) {
    Object.keys(counts || {}).forEach(function (key) {
      const span = document.querySelector('.count[data-count="' + key + '"]');
      if (span) span.textContent = String(counts[key]);
    });
  }

  function finish(answer) {
    if (isFirstPage) rows().slice(perPage).forEach(function (tr) { tr.remove(); });
    if (emptyRow) emptyRow.hidden = rows().length > 0;
    updateCounts(answer.counts);
  }

  function refresh(numbers) {
    const list = Array.from(numbers);
    return live.getJSON(rowsUrl + (rowsUrl.includes("?") ? "&" : "?") + "numbers=" + list.join(",")).then(
      function (answer) {
        const matching = new Set(answer.rows.map(function (entry) { return entry.number; }));
        // Asked about but not answered: the ticket left this view (solved, reassigned, escalated).
        list.forEach(function (number) {
          if (!matching.has(number)) {
            const gone = rowOf(number);
            if (gone) gone.remove();
          }
        });
        answer.rows.forEach(showRow);
        finish(answer);
      });
  }

  function reloadPage() {
    if (!isFirstPage) {
      rows().forEach(function (tr) { queue(Number(tr.dataset.ticket)); });
      return;
    }
    live.getJSON(rowsUrl).then(function (answer) {
      rows().forEach(function (tr) { tr.remove(); });
      answer.rows.forEach(function (entry) {
        body.insertBefore(live.fragment(entry.html).querySelector("tr"), emptyRow);
      });
      finish(answer);
    }).catch(function (error) { console.warn(error); });
  }

  const MAX_BATCH = 100;
  const queue = live.batcher(function (numbers) {
    if (numbers.size > MAX_BATCH) {
      reloadPage();
      return null;
    }
    return refresh(numbers);
  }, 150);

  function onTicketEvent(payload) {
    const number = payload && Number(payload.ticket);
    if (number > 0) queue(number);
  }
  ["ticket.created", "ticket.updated", "message.created"].forEach(function (name) {
    live.socket.on(name, onTicketEvent);
  });
  live.onReconnect(reloadPage);
})();
