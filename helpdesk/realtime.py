"""Realtime events for agents: published only after the transaction that caused them commits."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app, request
from flask_login import current_user
from flask_socketio import Namespace, join_room, leave_room, rooms

from channels.chat.namespace import is_origin_allowed
from helpdesk import presence
from helpdesk.database import begin_write
from helpdesk.extensions import db, socketio

AGENT_NAMESPACE = "/agents"
ALL_AGENTS_ROOM = "agents"


def agent_origins(config) -> tuple[str, ...]:
    """Return the origins the agents' pages are served from: HELPDESK_SOCKET_ORIGINS, else the public URL."""
    value = config.get("HELPDESK_SOCKET_ORIGINS") or ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(item.strip() for item in value if item and item.strip()) or (config["HELPDESK_PUBLIC_URL"],)


def ticket_room(number: int) -> str:
    return f"ticket:{number}"


def _ticket_number(data) -> int | None:
    """Return the positive ticket number in a client's {"number": ...}, or None for anything else."""
    try:
        number = int(data.get("number", 0))
    except (AttributeError, TypeError, ValueError):
        return None
    return number if number > 0 else None


def _viewer_key(sid: str) -> str:
    # One browser tab's key in presence events; the socket id itself is not handed to other clients.
    return hashlib.sha256(sid.encode()).hexdigest()[:16]


def publish_after_commit(session: so.Session, event: str, payload: dict[str, Any], room: str = ALL_AGENTS_ROOM):
    """Queue `event` for agents; it is emitted when `session` commits and dropped if it rolls back."""
    session.info.setdefault("pending_events", []).append((event, payload, room))


def _mark_committed(session: so.Session) -> None:
    # Releasing a savepoint fires after_commit too; only the outermost commit makes the events true.
    if not session.in_nested_transaction():
        session.info["events_committed"] = True


def _emit_pending(session: so.Session, transaction: so.SessionTransaction) -> None:
    # Emitted once the committed transaction has ended, that is after its connection went back to the pool:
    # sending to every agent's socket takes a while, and the next writer may be waiting for that connection.
    if transaction.parent is not None or not session.info.pop("events_committed", False):
        return
    for event, payload, room in session.info.pop("pending_events", []):
        socketio.emit(event, payload, namespace=AGENT_NAMESPACE, to=room)


def _drop_pending(session: so.Session, previous_transaction: so.SessionTransaction) -> None:
    # Only the outermost rollback discards the work; a savepoint rollback keeps what came before it.
    if previous_transaction.parent is None:
        session.info.pop("pending_events", None)
        session.info.pop("events_committed", None)


def install_session_hooks() -> None:
    """Emit queued events after commit and forget them after rollback (idempotent)."""
    if not sa.event.contains(so.Session, "after_transaction_end", _emit_pending):
        sa.event.listen(so.Session, "after_commit", _mark_committed)
        sa.event.listen(so.Session, "after_transaction_end", _emit_pending)
        sa.event.listen(so.Session, "after_soft_rollback", _drop_pending)


def _record_presence(record) -> None:
    agent_id = current_user.id
    # Loading the agent opened a read transaction; on SQLite a read turned into a write fails at once while
    # another writer holds the lock, so end it and start again as a writer, which waits its turn.
    db.session.rollback()
    begin_write()
    record(agent_id)
    db.session.commit()


class AgentNamespace(Namespace):
    """The agents' Socket.IO namespace: only logged-in agents connect."""

    def on_connect(self, auth=None):
        # Engine.IO also admits the sites that embed the chat widget; only the helpdesk's own pages may
        # open the agents' namespace, even where the browser would send an agent's cookie along.
        if not is_origin_allowed(request.headers.get("Origin"), agent_origins(current_app.config)):
            raise ConnectionRefusedError("origin not allowed")
        if not current_user.is_authenticated:
            # Refusing in connect is the only reliable place: before_request does not run for sockets.
            raise ConnectionRefusedError("login required")
        join_room(ALL_AGENTS_ROOM)
        join_room(f"agent:{current_user.id}")
        _record_presence(presence.record_connect)

    def on_disconnect(self, reason=None):
        for room in rooms():
            if room.startswith("ticket:"):
                self._announce_presence(int(room.removeprefix("ticket:")), "left")
        if current_user.is_authenticated:
            _record_presence(presence.record_disconnect)

    def on_heartbeat(self, data=None):
        # Sent by the client every 30 seconds or so; an agent who falls silent goes offline.
        if current_user.is_authenticated:
            _record_presence(presence.record_heartbeat)

    # Web chat, from the ticket page of a chat (static/chat_agent.js). helpdesk.chat imports this module, so
    # each handler imports it when called.

    def on_chat_typing(self, data=None):
        """Show the visitor of a chat ticket that this agent is typing (data: number, typing)."""
        if current_user.is_authenticated:
            from helpdesk.chat import forward_agent_typing

            forward_agent_typing(current_user, data)

    def on_chat_read(self, data=None):
        """Mark the visitor's messages on a chat ticket seen (data: number); answer with the chat's state."""
        if not current_user.is_authenticated:
            return {"ok": False, "error": "login_required"}
        from helpdesk.chat import mark_read_by_agent

        return mark_read_by_agent(data)

    def on_chat_state(self, data=None):
        """Answer with a chat ticket's read state both ways and its files (data: number)."""
        if not current_user.is_authenticated:
            return {"ok": False, "error": "login_required"}
        from helpdesk.chat import chat_state_for_agent

        return chat_state_for_agent(data)

    def on_watch_ticket(self, data):
        # The payload comes from the client as it is; anything but {"number": <int>} is ignored.
        try:
            number = int(data.get("number", 0))
        except (AttributeError, TypeError, ValueError):
            return
        if number > 0:
            join_room(ticket_room(number), sid=request.sid)

    def on_ticket_presence(self, data=None):
        """Tell the others watching a ticket that this agent is viewing it, or replying (data: number, replying)."""
        number = _ticket_number(data)
        if number is None or not current_user.is_authenticated or ticket_room(number) not in rooms():
            return
        self._announce_presence(number, "replying" if data.get("replying") is True else "viewing")

    def on_leave_ticket(self, data=None):
        """Stop watching a ticket (the page was left) and tell the others still on it."""
        number = _ticket_number(data)
        if number is None or ticket_room(number) not in rooms():
            return
        leave_room(ticket_room(number))
        self._announce_presence(number, "left")

    def _announce_presence(self, number: int, state: str) -> None:
        # Who is on a ticket lives in the browsers that watch it: each tab announces itself when it arrives,
        # answers a newcomer once, repeats every few seconds while it stays, and says when it leaves. So every
        # web process behind the message queue sees the same, and nothing is kept on the server.
        agent = {"id": current_user.id, "name": current_user.name} if current_user.is_authenticated else None
        socketio.emit(
            "ticket.presence",
            {"ticket": number, "viewer": _viewer_key(request.sid), "agent": agent, "state": state},
            namespace=AGENT_NAMESPACE, to=ticket_room(number), skip_sid=request.sid,
        )
