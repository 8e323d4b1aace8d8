"""Web chat on the helpdesk side: the callables the `/chat` namespace is built with.

    create_chat_namespace()               # ChatNamespace wired to ingest, history and the agents' typing
    receive_chat_message(inbound)         # ingest (commits), then the receipt the visitor is acknowledged with
    visitor_history(visitor_id, after)    # public messages of the visitor's chat tickets, plain text
    chat_settings()                       # allowed origins, identity secret, rate limits from the config
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask, current_app

from channels.chat.namespace import ChatNamespace, ChatReceipt, ChatSettings, is_origin_allowed
from channels.chat.tokens import VisitorTokens, derive_identity_secret
from channels.messages import ChannelName, IdentityKind, InboundMessage
from helpdesk.customers import find_identity
from helpdesk.extensions import db, socketio
from helpdesk.ingest import ingest
from helpdesk.models import Customer, Direction, Message, Ticket, TicketStatus
from helpdesk.realtime import AGENT_NAMESPACE, agent_origins, ticket_room

#: At most this many messages per history answer; the widget asks again after the last one.
HISTORY_PAGE = 200


def _split(value) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(item.strip() for item in value if item and item.strip())


def chat_allowed_origins(config) -> tuple[str, ...]:
    """Return the sites that may embed the widget: HELPDESK_CHAT_ALLOWED_ORIGINS, else the helpdesk itself."""
    return _split(config.get("HELPDESK_CHAT_ALLOWED_ORIGINS")) or (config["HELPDESK_PUBLIC_URL"],)


def chat_identity_secret(config) -> str:
    """Return the secret sites sign their users' ids with (HMAC-SHA256)."""
    return config.get("HELPDESK_CHAT_IDENTITY_SECRET") or derive_identity_secret(config["SECRET_KEY"])


def chat_settings() -> ChatSettings:
    config = current_app.config
    return ChatSettings(
        allowed_origins=chat_allowed_origins(config),
        identity_secret=chat_identity_secret(config),
        messages_per_minute=float(config.get("HELPDESK_CHAT_MESSAGES_PER_MINUTE", 20)),
        message_burst=float(config.get("HELPDESK_CHAT_MESSAGE_BURST", 10)),
        ip_events_per_minute=float(config.get("HELPDESK_CHAT_IP_EVENTS_PER_MINUTE", 120)),
        ip_burst=float(config.get("HELPDESK_CHAT_IP_BURST", 60)),
    )


def socket_origin_check(app: Flask):
    """Return Engine.IO's origin check: the agents' origins plus every site allowed to embed the chat.

    Engine.IO checks before any namespace is chosen, so it admits the union; each namespace then checks its
    own list (the agents' namespace admits only the helpdesk's origins).
    """

    def is_allowed(origin, environ=None) -> bool:
        allowed = (*agent_origins(app.config), *chat_allowed_origins(app.config))
        return is_origin_allowed(origin, allowed)

    return is_allowed


def receive_chat_message(inbound: InboundMessage) -> ChatReceipt:
    """Store a visitor's message (committed when this returns) and say what to acknowledge."""
    result = ingest(inbound)
    return ChatReceipt(message_id=result.message.id, seq=result.message.id, is_duplicate=result.is_duplicate)


def visitor_customer(visitor_id: str) -> Customer | None:
    identity = find_identity(IdentityKind.VISITOR, visitor_id)
    if identity is None:
        return None
    customer = identity.customer
    seen = set()
    # Follow merges, as ingest does, so a merged visitor still finds their conversation.
    while customer.merged_into_id is not None and customer.id not in seen:
        seen.add(customer.id)
        customer = db.session.get(Customer, customer.merged_into_id)
    return customer


def visitor_history(visitor_id: str, after: int = 0) -> list[dict]:
    """Return the public messages of the visitor's chat tickets after message id `after`, oldest first."""
    customer = visitor_customer(visitor_id)
    if customer is None:
        return []
    messages = db.session.scalars(
        sa.select(Message)
        .join(Ticket, Message.ticket_id == Ticket.id)
        .where(
            Ticket.customer_id == customer.id,
            Ticket.channel == ChannelName.CHAT,
            Message.is_public.is_(True),
            Message.id > after,
        )
        .order_by(Message.id)
        .limit(HISTORY_PAGE)
    )
    history = [_as_chat_entry(message) for message in messages]
    db.session.rollback()  # end the read transaction; the socket keeps no session open between events
    return history


def _as_chat_entry(message: Message) -> dict:
    # Plain text only: the widget renders with textContent, and nothing here is HTML.
    is_agent = message.direction == Direction.OUTBOUND
    return {
        "seq": message.id,
        "id": message.id,
        "key": message.external_id,
        "direction": "agent" if is_agent else "visitor",
        "author": (message.author_agent.name if message.author_agent else "") if is_agent else "",
        "text": message.text or "",
        "is_automatic": message.is_automatic,
        "created_at": message.created_at.isoformat(),
    }


def forward_visitor_typing(visitor_id: str, is_typing: bool) -> None:
    """Tell the agents watching the visitor's open chat ticket that the visitor is (or stopped) typing."""
    customer = visitor_customer(visitor_id)
    number = None
    if customer is not None:
        number = db.session.scalar(
            sa.select(Ticket.number)
            .where(Ticket.customer_id == customer.id, Ticket.channel == ChannelName.CHAT,
                   Ticket.status.in_([status for status in TicketStatus if status.is_active]))
            .order_by(Ticket.updated_at.desc(), Ticket.id.desc())
            .limit(1)
        )
    db.session.rollback()
    if number is not None:
        socketio.emit("visitor.typing", {"ticket": number, "typing": is_typing},
                      namespace=AGENT_NAMESPACE, to=ticket_room(number))


def create_chat_namespace() -> ChatNamespace:
    """Build the `/chat` namespace with this app's callables."""
    return ChatNamespace(
        tokens=lambda: VisitorTokens(current_app.config["SECRET_KEY"]),
        settings=chat_settings,
        on_message=receive_chat_message,
        history_for=visitor_history,
        on_typing=forward_visitor_typing,
    )
