// The leads' SLA dashboard, kept live: ticket events on the agents' namespace trigger a (debounced) refetch
// of the dashboard's JSON, and a timer refetches every minute so the time left counts down. Everything
// from the server is written as text (textContent), never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  if (!root) return;
  const source = root.dataset.source;
  const ticketUrl = root.dataset.ticketUrl;
  const live = document.getElementById("dash-live");
  const liveLabel = document.getElementById("dash-live-label");
  const updated = document.getElementById("dash-updated");
  const errorNote = document.getElementById("dash-error");
  const DEBOUNCE_MS = 600;
  const REFRESH_MS = 60000;

  // --- Formatting, the same as the server's (helpdesk/web/dashboard.py) ---------------------------
  function pad(n) { return String(n).padStart(2, "0"); }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "\u2014";
    let minutes = Math.floor(Math.abs(seconds) / 60);
    if (minutes < 1) return "under 1 min";
    if (minutes < 60) return minutes + " min";
    let hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    if (hours < 24) return hours + " h " + pad(minutes) + " min";
    const days = Math.floor(hours / 24);
    hours = hours % 24;
    return days + " d " + hours + " h";
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "\u2014" : Math.floor(rate * 100 + 0.5) + "%";
  }

  function rateClass(rate) {
    if (rate === null || rate === undefined) return "";
    return rate >= 0.95 ? "kpi-good" : rate >= 0.8 ? "kpi-warn" : "kpi-bad";
  }

  function when(iso, zone) {
    zone = zone || "UTC";
    const parts = {};
    new Intl.DateTimeFormat("en-GB", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    }).formatToParts(new Date(iso)).forEach(function (part) { parts[part.type] = part.value; });
    return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute + " " + zone;
  }

  function clock(iso) {
    const d = new Date(iso);
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
  }

  function listed(listing) {
    const shown = listing.tickets.length;
    return shown === listing.total ? String(listing.total) : shown + " of " + listing.total;
  }

  function sentence(text) { return text ? text.charAt(0).toUpperCase() + text.slice(1) : text; }

  // --- Building rows as text -----------------------------------------------------------------------
  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function ticketCell(number) {
    const td = document.createElement("td");
    const a = document.createElement("a");
    a.href = ticketUrl.replace(/999999999$/, String(Number(number)));
    a.textContent = "#" + number;
    td.appendChild(a);
    return td;
  }

  function emptyRow(columns, text) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell(text);
    td.colSpan = columns;
    tr.appendChild(td);
    return tr;
  }

  // A row's text cell by cell, the same whether the server or this script built it.
  function plain(row) {
    return Array.prototype.map.call(row.cells, function (td) {
      return td.textContent.replace(/\s+/g, " ").trim();
    }).join("|");
  }

  // Replace a table body's rows. Rows are keyed so the eye finds what moved: with `onlyNew` a row is marked
  // when it was not listed before (lists whose time left changes every minute), otherwise when its text changed.
  function fillBody(tableId, rows, keys, onlyNew) {
    const body = document.querySelector("#" + tableId + " tbody");
    if (!body) return;
    const before = {};
    body.querySelectorAll("tr[data-key]").forEach(function (tr) { before[tr.dataset.key] = plain(tr); });
    const hadRows = Object.keys(before).length > 0 || body.querySelector("tr.empty") !== null;
    body.replaceChildren.apply(body, rows);
    if (!keys) return;
    rows.forEach(function (tr, index) {
      const key = keys[index];
      tr.dataset.key = key;
      const isNew = before[key] === undefined;
      if (onlyNew ? isNew && hadRows : !isNew && before[key] !== plain(tr)) tr.classList.add("changed");
    });
  }

  function setText(selector, text, className) {
    const element = root.querySelector(selector);
    if (!element) return;
    element.textContent = text;
    if (className !== undefined) element.className = className;
  }

  // --- Rendering each section ----------------------------------------------------------------------
  function render(data) {
    const labels = data.labels;
    const tierLabel = function (tier) { return labels.tiers[tier] || tier; };
    const targetLabel = function (target) { return labels.targets[target] || target; };

    const windowText = [data.window.label, "since " + when(data.window.start, data.window.timezone)];
    if (data.scope.tier) windowText.push(tierLabel(data.scope.tier));
    if (data.scope.group) windowText.push(data.scope.group);
    setText("#dash-window", windowText.join(" \u00b7 "));

    ["first_response", "resolution"].forEach(function (key) {
      const item = data.compliance[key];
      setText('[data-kpi="' + key + '"] [data-field="rate"]', percent(item.rate), "kpi-value " + rateClass(item.rate));
      setText('[data-kpi="' + key + '"] [data-field="note"]', item.met + " met \u00b7 " + item.breached + " breached");
    });
    setText('[data-kpi="at_risk"] [data-field="total"]', String(data.at_risk.total),
      "kpi-value" + (data.at_risk.total ? " kpi-warn" : ""));
    setText('[data-kpi="breached"] [data-field="total"]', String(data.breached.total),
      "kpi-value" + (data.breached.total ? " kpi-bad" : ""));
    const unassigned = data.backlog.reduce(function (sum, row) { return sum + row.unassigned; }, 0);
    setText('[data-kpi="unassigned"] [data-field="total"]', String(unassigned));

    setText("#at-risk-count", listed(data.at_risk));
    const risky = data.at_risk.tickets.map(function (row) {
      const tr = document.createElement("tr");
      tr.dataset.ticket = row.number;
      const left = cell(duration(row.seconds_left), row.seconds_left < 900 ? "soon" : "");
      left.title = "due " + when(row.due_at);
      [ticketCell(row.number), cell(row.subject || "(no subject)"), cell(targetLabel(row.target)), left,
        cell(row.priority, "priority-" + row.priority), cell(tierLabel(row.tier)), cell(row.assignee || "Unassigned"),
      ].forEach(function (td) { tr.appendChild(td); });
      return tr;
    });
    fillBody("at-risk", risky.length ? risky : [emptyRow(7, "Nothing at risk right now.")],
      risky.length ? data.at_risk.tickets.map(function (row) { return "t" + row.number; }) : null, true);

    setText("#breached-count", listed(data.breached));
    const breached = data.breached.tickets.map(function (row) {
      const tr = document.createElement("tr");
      tr.dataset.ticket = row.number;
      const overdue = row.overdue_target
        ? targetLabel(row.overdue_target) + ", " + duration(row.seconds_overdue) : "met late";
      [ticketCell(row.number), cell(row.subject || "(no subject)"), cell(when(row.breached_at)), cell(overdue),
        cell(row.priority, "priority-" + row.priority), cell(tierLabel(row.tier)), cell(row.assignee || "Unassigned"),
      ].forEach(function (td) { tr.appendChild(td); });
      return tr;
    });
    fillBody("breached", breached.length ? breached : [emptyRow(7, "No open ticket has breached a target.")],
      breached.length ? data.breached.tickets.map(function (row) { return "t" + row.number; }) : null, true);

    fillBody("backlog", data.backlog.map(function (row) {
      const tr = document.createElement("tr");
      tr.dataset.tier = row.tier;
      [row.label, row.new, row.open, row.pending, row.on_hold, row.total, row.unassigned].forEach(function (value) {
        tr.appendChild(cell(String(value)));
      });
      return tr;
    }), data.backlog.map(function (row) { return row.tier; }));

    const measures = Object.keys(data.response_times);
    fillBody("response-times", measures.map(function (key) {
      const row = data.response_times[key];
      const tr = document.createElement("tr");
      tr.dataset.measure = key;
      [row.label, String(row.count), duration(row.median_seconds), duration(row.p90_seconds)].forEach(function (text) {
        tr.appendChild(cell(text));
      });
      return tr;
    }), measures);

    const agents = data.agents.map(function (row) {
      const tr = document.createElement("tr");
      tr.dataset.agent = row.id;
      const name = cell(row.name);
      if (row.role !== "agent") {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = row.role;
        name.append(" ", badge);
      }
      const presence = document.createElement("td");
      const dot = document.createElement("span");
      dot.className = "presence " + (row.is_online ? "online" : "offline");
      dot.textContent = row.is_online ? "online" : "offline";
      presence.appendChild(dot);
      const load = document.createElement("td");
      const text = document.createElement("span");
      text.className = "load-text";
      text.textContent = row.open_tickets + " / " + row.capacity;
      const bar = document.createElement("span");
      bar.className = "load-bar";
      const fill = document.createElement("span");
      if (row.open_tickets >= row.capacity) fill.className = "over";
      const share = row.capacity > 0 ? Math.min(100, Math.floor(100 * row.open_tickets / row.capacity + 0.5)) : 100;
      fill.style.width = share + "%";
      bar.appendChild(fill);
      load.append(text, " ", bar);
      [name, cell(tierLabel(row.tier)), presence, load].forEach(function (td) { tr.appendChild(td); });
      return tr;
    });
    fillBody("agents", agents.length ? agents : [emptyRow(4, "No active agents here.")],
      agents.length ? data.agents.map(function (row) { return "a" + row.id; }) : null);

    setText("#escalations-total", String(data.escalations.total));
    fillBody("escalations-agents", data.escalations.by_agents.map(function (row) {
      const tr = document.createElement("tr");
      tr.dataset.reason = row.reason;
      tr.append(cell(labels.reasons[row.reason] || row.reason), cell(String(row.count)));
      return tr;
    }), data.escalations.by_agents.map(function (row) { return row.reason; }));
    const sweep = data.escalations.by_sla_sweep.map(function (row) {
      const tr = document.createElement("tr");
      tr.append(cell(sentence(row.reason)), cell(String(row.count)));
      return tr;
    });
    fillBody("escalations-sweep", sweep.length ? sweep : [emptyRow(2, "None in this window.")],
      sweep.length ? data.escalations.by_sla_sweep.map(function (row) { return row.reason; }) : null);

    updated.textContent = "Updated " + clock(data.generated_at) + " UTC";
    root.dataset.generatedAt = data.generated_at;
  }

  // --- Fetching: one request at a time, bursts of events folded into one ----------------------------
  let timer = null;
  let inFlight = false;
  let again = false;

  function refresh() {
    timer = null;
    if (inFlight) { again = true; return; }
    inFlight = true;
    fetch(source, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) {
        const type = response.headers.get("Content-Type") || "";
        if (!response.ok || type.indexOf("application/json") === -1) {
          throw new Error(response.ok ? "the session may have ended: sign in again"
            : "the server answered " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        render(data);
        errorNote.hidden = true;
      })
      .catch(function (error) {
        errorNote.textContent = "Could not refresh: " + error.message;
        errorNote.hidden = false;
      })
      .finally(function () {
        inFlight = false;
        if (again) { again = false; schedule(); }
      });
  }

  function schedule() {
    if (!timer) timer = setTimeout(refresh, DEBOUNCE_MS);
  }

  setInterval(refresh, REFRESH_MS);

  const filters = document.getElementById("dash-filters");
  if (filters) {
    filters.querySelectorAll("select").forEach(function (select) {
      select.addEventListener("change", function () { filters.requestSubmit(); });
    });
  }

  // --- Realtime ------------------------------------------------------------------------------------
  if (typeof io === "undefined") return;
  const socket = io("/agents", { transports: ["websocket", "polling"] });
  socket.on("connect", function () {
    live.dataset.state = "connected";
    liveLabel.textContent = "Live";
    // Events between the page's rendering (or a drop) and this connection were missed: catch up once.
    schedule();
  });
  socket.on("disconnect", function () {
    live.dataset.state = "disconnected";
    liveLabel.textContent = "Reconnecting; refreshing every minute meanwhile";
  });
  // Presence: the server counts an agent online while heartbeats keep coming, as the inbox does.
  setInterval(function () {
    if (socket.connected) socket.emit("heartbeat");
  }, 30000);
  ["ticket.created", "ticket.updated", "message.created", "message.updated", "sla.escalated"].forEach(function (name) {
    socket.on(name, schedule);
  });
})();
