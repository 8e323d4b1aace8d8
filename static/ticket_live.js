// The live ticket page: new messages, delivery states and field changes appear without a reload, and the
// agents on the same ticket see each other (viewing, or replying) and the customer typing.
(function () {
  "use strict";
  const live = window.helpdeskLive;
  const root = document.querySelector(".ticket[data-ticket]");
  if (!live || !root) return;
  const socket = live.socket;
  const number = Number(root.dataset.ticket);
  const me = Number(root.dataset.me);
  const liveUrl = root.dataset.liveUrl;
  const messagesBox = document.getElementById("messages");
  const notice = document.getElementById("live-notice");

  // --- messages, header and history -------------------------------------------------------------

  function articles() {
    return Array.from(messagesBox.querySelectorAll("article[data-message]"));
  }

  function newestShown() {
    return articles().reduce(function (max, a) { return Math.max(max, Number(a.dataset.message)); }, 0);
  }

  function comesAfter(a, b) {
    const ta = Date.parse(a.dataset.created), tb = Date.parse(b.dataset.created);
    return ta !== tb ? ta > tb : Number(a.dataset.message) > Number(b.dataset.message);
  }

  function placeMessage(article) {
    const next = articles().find(function (other) { return other !== article && comesAfter(other, article); });
    messagesBox.insertBefore(article, next || null);
  }

  function replaceById(id, html) {
    const current = document.getElementById(id);
    const replacement = live.fragment(html).firstElementChild;
    if (current && replacement) current.replaceWith(replacement);
  }

  // The aside's field selects follow the ticket, except one the agent has changed and not saved yet.
  const fieldsForm = document.querySelector("aside form.fields select[name=status]");
  const fieldSelects = fieldsForm ? Array.from(fieldsForm.form.querySelectorAll("select")) : [];
  const saved = {};
  fieldSelects.forEach(function (select) { saved[select.name] = select.value; });

  function applyFields(fields) {
    fieldSelects.forEach(function (select) {
      const value = fields[select.name];
      if (value === undefined) return;
      if (select.value === saved[select.name]) select.value = value;
      saved[select.name] = value;
    });
  }

  function apply(answer, wantsAll) {
    answer.messages.forEach(function (entry) {
      const article = live.fragment(entry.html).querySelector("article");
      const existing = document.getElementById("message-" + entry.id);
      if (existing) {
        existing.replaceWith(article);
      } else {
        if (!wantsAll) article.classList.add("live-new");
        placeMessage(article);
        if (article.classList.contains("inbound")) customerTyping(false);
      }
    });
    // Messages moved to another ticket leave this page.
    const kept = new Set(answer.message_ids);
    articles().forEach(function (a) { if (!kept.has(Number(a.dataset.message))) a.remove(); });
    document.getElementById("ticket-header").replaceChildren(live.fragment(answer.header));
    replaceById("ticket-history", answer.history);
    replaceById("other-conversations", answer.others);
    const tierActions = document.getElementById("tier-actions");
    if (tierActions && tierActions.dataset.tier !== answer.fields.tier) {
      replaceById("tier-actions", answer.tier_actions);
    }
    applyFields(answer.fields);
    if (notice) notice.hidden = true;
  }

  const queue = live.batcher(function (keys) {
    const wantsAll = keys.has("all");
    const again = [];
    keys.forEach(function (key) { if (key.startsWith("m:")) again.push(key.slice(2)); });
    const url = liveUrl + "?after=" + (wantsAll ? 0 : newestShown()) +
      (again.length && !wantsAll ? "&messages=" + again.slice(0, 50).join(",") : "");
    return live.getJSON(url).then(function (answer) { apply(answer, wantsAll); }, function (error) {
      if (notice) notice.hidden = false;
      throw error;
    });
  }, 100);

  function forThisTicket(handler) {
    return function (payload) {
      if (payload && Number(payload.ticket) === number) handler(payload);
    };
  }
  socket.on("message.created", forThisTicket(function () { queue("new"); }));
  socket.on("message.updated", forThisTicket(function (payload) {
    queue(payload.message_id ? "m:" + Number(payload.message_id) : "new");
  }));
  socket.on("ticket.updated", forThisTicket(function (payload) {
    queue(payload.field === "messages" ? "all" : "new");
  }));
  live.onReconnect(function () { queue("all"); });

  // --- presence: who else is here, and who is replying ------------------------------------------

  const presence = document.getElementById("presence");
  const SEEN_FOR = 45000;      // a tab that stops repeating itself is gone after this long
  const REPLYING_FOR = 7000;   // "is replying" fades this long after the last keystroke we heard of
  const REPEAT_EVERY = 15000;
  const viewers = new Map();   // viewer key -> {agent, state, seenAt}
  let myState = "viewing";

  function announce() {
    if (socket.connected) socket.emit("ticket_presence", { number: number, replying: myState === "replying" });
  }

  function renderPresence() {
    const now = Date.now();
    const byAgent = new Map();
    viewers.forEach(function (viewer, key) {
      if (now - viewer.seenAt > SEEN_FOR) { viewers.delete(key); return; }
      if (!viewer.agent || viewer.agent.id === me) return;
      const replying = viewer.state === "replying" && now - viewer.seenAt < REPLYING_FOR;
      const known = byAgent.get(viewer.agent.id);
      byAgent.set(viewer.agent.id, { name: viewer.agent.name, replying: replying || (known && known.replying) });
    });
    const people = Array.from(byAgent.values()).sort(function (a, b) { return a.name.localeCompare(b.name); });
    presence.replaceChildren();
    presence.hidden = people.length === 0;
    if (!people.length) return;
    presence.append("Also here: ");
    people.forEach(function (person, index) {
      const span = document.createElement("span");
      span.className = person.replying ? "viewer replying" : "viewer";
      span.textContent = person.replying ? person.name + " is replying…" : person.name;
      if (index) presence.append(", ");
      presence.append(span);
    });
  }

  socket.on("ticket.presence", forThisTicket(function (payload) {
    if (typeof payload.viewer !== "string") return;
    if (payload.state === "left") {
      viewers.delete(payload.viewer);
    } else {
      const isNew = !viewers.has(payload.viewer);
      viewers.set(payload.viewer, { agent: payload.agent, state: payload.state, seenAt: Date.now() });
      // A newcomer learns who is already here from each of us answering once.
      if (isNew) announce();
    }
    renderPresence();
  }));

  socket.on("connect", function () {
    viewers.clear();
    renderPresence();
    socket.emit("watch_ticket", { number: number }, announce);
  });
  setInterval(function () { announce(); renderPresence(); }, REPEAT_EVERY);
  setInterval(renderPresence, 2000);
  window.addEventListener("pagehide", function () {
    if (socket.connected) socket.emit("leave_ticket", { number: number });
  });

  const composer = document.querySelector("form.reply textarea");
  let lastReplyingSent = 0;
  let idleTimer = null;
  function setMyState(state) {
    const changed = state !== myState;
    myState = state;
    if (changed || (state === "replying" && Date.now() - lastReplyingSent > 3000)) {
      if (state === "replying") lastReplyingSent = Date.now();
      announce();
    }
  }
  if (composer) {
    composer.addEventListener("input", function () {
      setMyState(composer.value.trim() ? "replying" : "viewing");
      clearTimeout(idleTimer);
      idleTimer = setTimeout(function () { setMyState("viewing"); }, 5000);
    });
    composer.form.addEventListener("submit", function () { setMyState("viewing"); });
  }

  // --- the customer typing in the chat widget ---------------------------------------------------

  const typing = document.getElementById("customer-typing");
  let typingTimer = null;
  function customerTyping(isTyping) {
    if (!typing) return;
    typing.hidden = !isTyping;
    clearTimeout(typingTimer);
    if (isTyping) typingTimer = setTimeout(function () { typing.hidden = true; }, 6000);
  }
  socket.on("visitor.typing", forThisTicket(function (payload) { customerTyping(payload.typing === true); }));
})();
