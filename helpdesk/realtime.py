"""Realtime events for agents: published only after the transaction that caused them commits."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app, request
from flask_login import current_user
from flask_socketio import Namespace, join_room

from channels.chat.namespace import is_origin_allowed
from helpdesk import presence
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


def publish_after_commit(session: so.Session, event: str, payload: dict[str, Any], room: str = ALL_AGENTS_ROOM):
    """Queue `event` for agents; it is emitted when `session` commits and dropped if it rolls back."""
    session.info.setdefault("pending_events", []).append((event, payload, room))


def _emit_pending(session: so.Session) -> None:
    for event, payload, room in session.info.pop("pending_events", []):
        socketio.emit(event, payload, namespace=AGENT_NAMESPACE, to=room)


def _drop_pending(session: so.Session, previous_transaction: so.SessionTransaction) -> None:
    # Only the outermost rollback discards the work; a savepoint rollback keeps what came before it.
    if previous_transaction.parent is None:
        session.info.pop("pending_events", None)


def install_session_hooks() -> None:
    """Emit queued events after commit and forget them after rollback (idempotent)."""
    if not sa.event.contains(so.Session, "after_commit", _emit_pending):
        sa.event.listen(so.Session, "after_commit", _emit_pending)
        sa.event.listen(so.Session, "after_soft_rollback", _drop_pending)


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
        presence.record_connect(current_user.id)
        db.session.commit()

    def on_disconnect(self, reason=None):
        if current_user.is_authenticated:
            presence.record_disconnect(current_user.id)
            db.session.commit()

    def on_heartbeat(self, data=None):
        # Sent by the client every 30 seconds or so; an agent who falls silent goes offline.
        if current_user.is_authenticated:
            presence.record_heartbeat(current_user.id)
            db.session.commit()

    def on_watch_ticket(self, data):
        # The payload comes from the client as it is; anything but {"number": <int>} is ignored.
        try:
            number = int(data.get("number", 0))
        except (AttributeError, TypeError, ValueError):
            return
        if number > 0:
            join_room(ticket_room(number), sid=request.sid)
