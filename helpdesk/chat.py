"""Web chat on the helpdesk side: settings, and what the `/chat` namespace and the agents' pages ask of it.

    create_chat_namespace()                 # ChatNamespace wired to this module's ChatBackend
    chat_settings()                         # origins, identity secret, limits and the widget's look, as now saved
    save_widget_settings(origins, look)     # an admin's change; effective at once in this process, soon in others
    rotate_identity_secret()                # a new secret for sites' HMACs, returned once
    receive_chat_message(inbound, contact)  # ingest (commits), then the receipt the visitor is acknowledged with
    leave_offline_message(...)              # no agent online: an email ticket through the same ingest path
    visitor_history(visitor_id, after)      # public chat messages of the visitor's conversations, plain text
    send_transcript(visitor_id, contact)    # the conversation as text, by email through the outbox
    mark_read_by_visitor / mark_read_by_agent, forward_agent_typing, chat_state_for_agent
    receive_chat_upload(...)                # a visitor's file, stored as an attachment through ingest
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import threading
import time
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask, current_app

from channels.chat.contact import ContactDetails
from channels.chat.namespace import (
    CHAT_NAMESPACE,
    ChatNamespace,
    ChatReceipt,
    ChatRefused,
    ChatSettings,
    is_origin_allowed,
    visitor_room,
)
from channels.chat.settings import WidgetAppearance
from channels.chat.tokens import VisitorTokens, derive_identity_secret
from channels.chat.transcript import TranscriptLine, format_transcript
from channels.chat.uploads import INLINE_TYPES, allowed_extensions
from channels.messages import Attachment as AttachmentData
from channels.messages import (
    ChannelName,
    IdentityKind,
    InboundMessage,
    SenderIdentity,
    ThreadHints,
)
from helpdesk import presence
from helpdesk.customers import find_identity, normalize_identity
from helpdesk.database import begin_write
from helpdesk.extensions import db, socketio
from helpdesk.group_ingest import GroupIngest
from helpdesk.ingest import ingest
from helpdesk.models import (
    Agent,
    Attachment,
    ChannelAccount,
    Customer,
    CustomerIdentity,
    Direction,
    Message,
    Ticket,
    TicketEvent,
    TicketStatus,
)
from helpdesk.models.base import utcnow
from helpdesk.outbound import queue_automatic_message, send_acknowledgement, support_domain
from helpdesk.realtime import AGENT_NAMESPACE, agent_origins, publish_after_commit, ticket_room
from helpdesk.tasks import enqueue
from helpdesk.tickets import record_event

log = logging.getLogger(__name__)

#: At most this many messages per history answer; the widget asks again after the last one.
HISTORY_PAGE = 200
#: The one channel account row that holds the widget's settings (settings JSON) and identity secret (secrets).
SETTINGS_ACCOUNT_NAME = "Web chat widget"
_CACHE_KEY = "helpdesk.chat_settings"
_ACTIVE = [status for status in TicketStatus if status.is_active]


# Settings --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SavedChatSettings:
    """What admins saved on the chat settings page; empty fields fall back to the environment's defaults."""

    allowed_origins: tuple[str, ...] = ()
    appearance: WidgetAppearance = dataclasses.field(default_factory=WidgetAppearance)
    identity_secret: str | None = None
    #: When the saved identity secret was generated (ISO 8601), shown to admins instead of the secret.
    identity_secret_created_at: str | None = None
    is_saved: bool = False


def _split(value) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(item.strip() for item in value if item and item.strip())


def chat_account() -> ChannelAccount | None:
    """Return the row holding the widget's settings, or None while nothing was saved."""
    return db.session.scalar(
        sa.select(ChannelAccount).where(ChannelAccount.channel == ChannelName.CHAT).order_by(ChannelAccount.id).limit(1)
    )


def saved_chat_settings() -> SavedChatSettings:
    """Return the saved settings, read from the database at most every HELPDESK_CHAT_SETTINGS_CACHE_SECONDS."""
    cache = current_app.extensions.setdefault(_CACHE_KEY, {})
    now = time.monotonic()
    if cache.get("expires", 0) > now:
        return cache["value"]
    account = chat_account()
    if account is None:
        value = SavedChatSettings()
    else:
        settings, stored = account.settings or {}, account.secrets or {}
        value = SavedChatSettings(
            allowed_origins=_split(settings.get("allowed_origins")),
            appearance=WidgetAppearance.from_saved(settings),
            identity_secret=stored.get("identity_secret") or None,
            identity_secret_created_at=settings.get("identity_secret_created_at"),
            is_saved=True,
        )
    cache.update(value=value, expires=now + float(current_app.config.get("HELPDESK_CHAT_SETTINGS_CACHE_SECONDS", 5)))
    return value


def forget_cached_chat_settings() -> None:
    """Read the settings from the database again on next use (after a save, and in tests)."""
    current_app.extensions.pop(_CACHE_KEY, None)


def chat_allowed_origins(config) -> tuple[str, ...]:
    """Return the sites that may embed the widget: as saved by admins, else HELPDESK_CHAT_ALLOWED_ORIGINS, else
    the helpdesk itself."""
    return (
        saved_chat_settings().allowed_origins
        or _split(config.get("HELPDESK_CHAT_ALLOWED_ORIGINS"))
        or (config["HELPDESK_PUBLIC_URL"],)
    )


def chat_identity_secret(config) -> str:
    """Return the secret sites sign their users' ids with (HMAC-SHA256): saved, configured, else derived."""
    return (
        saved_chat_settings().identity_secret
        or config.get("HELPDESK_CHAT_IDENTITY_SECRET")
        or derive_identity_secret(config["SECRET_KEY"])
    )


def identity_secret_source(config) -> str:
    """Say where the identity secret in use comes from: "saved", "environment" or "derived"."""
    if saved_chat_settings().identity_secret:
        return "saved"
    return "environment" if config.get("HELPDESK_CHAT_IDENTITY_SECRET") else "derived"


def max_upload_bytes(config) -> int:
    """Return the largest file a visitor may send: the chat limit, never above the attachment limit."""
    return min(int(config.get("HELPDESK_CHAT_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)),
               int(config["HELPDESK_MAX_ATTACHMENT_BYTES"]))


def public_widget_settings(config) -> dict[str, Any]:
    """Return what the widget is told: its look, the pre-chat questions and the upload limits."""
    return {
        **saved_chat_settings().appearance.as_dict(),
        "max_upload_bytes": max_upload_bytes(config),
        "upload_types": allowed_extensions(),
    }


#: The settings chat_settings() reads from the app's config, besides those saved by admins.
_CONFIGURED_CHAT_SETTINGS = (
    "HELPDESK_CHAT_ALLOWED_ORIGINS", "HELPDESK_PUBLIC_URL", "HELPDESK_CHAT_IDENTITY_SECRET", "SECRET_KEY",
    "HELPDESK_CHAT_MESSAGES_PER_MINUTE", "HELPDESK_CHAT_MESSAGE_BURST", "HELPDESK_CHAT_IP_EVENTS_PER_MINUTE",
    "HELPDESK_CHAT_IP_BURST", "HELPDESK_CHAT_TRANSCRIPTS_PER_TEN_MINUTES", "HELPDESK_CHAT_MAX_UPLOAD_BYTES",
    "HELPDESK_MAX_ATTACHMENT_BYTES",
)


def chat_settings() -> ChatSettings:
    """Return the chat's settings; built again only when the saved ones were read again or the config changed
    (every visitor's message asks for them)."""
    config = current_app.config
    saved = saved_chat_settings()
    key = (saved, tuple(config.get(name) for name in _CONFIGURED_CHAT_SETTINGS))
    cache = current_app.extensions.setdefault(_CACHE_KEY, {})
    built = cache.get("chat_settings")
    if built is not None and built[0] == key:
        return built[1]
    settings = ChatSettings(
        allowed_origins=chat_allowed_origins(config),
        identity_secret=chat_identity_secret(config),
        messages_per_minute=float(config.get("HELPDESK_CHAT_MESSAGES_PER_MINUTE", 20)),
        message_burst=float(config.get("HELPDESK_CHAT_MESSAGE_BURST", 10)),
        ip_events_per_minute=float(config.get("HELPDESK_CHAT_IP_EVENTS_PER_MINUTE", 120)),
        ip_burst=float(config.get("HELPDESK_CHAT_IP_BURST", 60)),
        widget=public_widget_settings(config),
        transcripts_per_ten_minutes=float(config.get("HELPDESK_CHAT_TRANSCRIPTS_PER_TEN_MINUTES", 3)),
    )
    cache["chat_settings"] = (key, settings)
    return settings


def _settings_account_for_update() -> ChannelAccount:
    account = chat_account()
    if account is None:
        name = SETTINGS_ACCOUNT_NAME
        # Names are unique across channel accounts; a mailbox an admin happened to call this keeps its name.
        if db.session.scalar(sa.select(ChannelAccount.id).where(ChannelAccount.name == name)) is not None:
            name = f"{SETTINGS_ACCOUNT_NAME} {secrets.token_hex(4)}"
        account = ChannelAccount(channel=ChannelName.CHAT, name=name, settings={}, secrets={})
        db.session.add(account)
    return account


def save_widget_settings(allowed_origins: tuple[str, ...], appearance: WidgetAppearance) -> None:
    """Store the widget's origins and look (one transaction); they apply at once, in other processes within
    HELPDESK_CHAT_SETTINGS_CACHE_SECONDS."""
    db.session.rollback()
    begin_write()
    account = _settings_account_for_update()
    # A new dict, so the JSON column sees the change.
    account.settings = {**(account.settings or {}), **appearance.as_dict(), "allowed_origins": list(allowed_origins)}
    db.session.commit()
    forget_cached_chat_settings()


def rotate_identity_secret() -> str:
    """Generate a new identity secret, store it encrypted and return it: the only time it is shown."""
    db.session.rollback()
    begin_write()
    account = _settings_account_for_update()
    secret = secrets.token_urlsafe(32)
    account.secrets = {**(account.secrets or {}), "identity_secret": secret}
    account.settings = {**(account.settings or {}), "identity_secret_created_at": utcnow().isoformat()}
    db.session.commit()
    forget_cached_chat_settings()
    return secret


def socket_origin_check(app: Flask):
    """Return Engine.IO's origin check: the agents' origins plus every site allowed to embed the chat.

    Engine.IO checks before any namespace is chosen, so it admits the union; each namespace then checks its
    own list (the agents' namespace admits only the helpdesk's origins). It runs outside any request, so it
    opens an app context to read the saved settings (cached, so rarely the database).
    """

    def is_allowed(origin, environ=None) -> bool:
        with app.app_context():
            allowed = (*agent_origins(app.config), *chat_allowed_origins(app.config))
        return is_origin_allowed(origin, allowed)

    return is_allowed


# Visitors and their conversations -----------------------------------------------------------------------


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


def _latest_chat_ticket(customer: Customer, *, active_only: bool) -> Ticket | None:
    query = sa.select(Ticket).where(Ticket.customer_id == customer.id, Ticket.channel == ChannelName.CHAT)
    if active_only:
        query = query.where(Ticket.status.in_(_ACTIVE))
    return db.session.scalar(query.order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(1))


def _visitor_ids(customer_id: int) -> list[str]:
    """Return every chat visitor id of the customer: each has a room on /chat."""
    return list(db.session.scalars(
        sa.select(CustomerIdentity.value)
        .where(CustomerIdentity.customer_id == customer_id, CustomerIdentity.kind == IdentityKind.VISITOR)
    ))


def _emit_to_visitors(visitor_ids: list[str], event: str, payload: dict) -> None:
    for visitor_id in visitor_ids:
        socketio.emit(event, payload, namespace=CHAT_NAMESPACE, to=visitor_room(visitor_id))


def receive_chat_message(inbound: InboundMessage, contact: ContactDetails | None = None) -> ChatReceipt:
    """Store a visitor's message (committed when this returns) and say what to acknowledge."""
    db.session.rollback()  # the caller reads what the writer thread commits, not an older snapshot
    result = group_ingest().ingest(inbound)
    if contact is not None and contact.email and not result.is_duplicate:
        _remember_contact_on(result.ticket_id, contact)
    return ChatReceipt(message_id=result.message_id, seq=result.message_id, is_duplicate=result.is_duplicate)


def remember_contact(visitor_id: str, contact: ContactDetails) -> None:
    """Note on the visitor's open chat ticket the name and email they typed; the next message does it else."""
    customer = visitor_customer(visitor_id)
    ticket = _latest_chat_ticket(customer, active_only=True) if customer is not None else None
    ticket_id = ticket.id if ticket is not None else None
    db.session.rollback()
    if ticket_id is not None and contact.email:
        _remember_contact_on(ticket_id, contact)


def _recorded_contact(ticket_id: int) -> dict | None:
    return db.session.scalar(
        sa.select(TicketEvent.data)
        .where(TicketEvent.ticket_id == ticket_id, TicketEvent.kind == "chat.contact")
        .order_by(TicketEvent.id.desc())
        .limit(1)
    )


def _remember_contact_on(ticket_id: int, contact: ContactDetails) -> None:
    db.session.rollback()
    begin_write()
    if _recorded_contact(ticket_id) == contact.as_dict():
        db.session.rollback()
        return
    ticket = db.session.get(Ticket, ticket_id)
    shown = f"{contact.name} <{contact.email}>" if contact.name else contact.email
    # Typed by the visitor, so never an identity of the customer: only where a transcript may be sent.
    record_event(ticket, "chat.contact", contact.as_dict(), reason=f"the visitor gave {shown} (not verified)",
                 actor_label=contact.name or "visitor")
    db.session.commit()


def visitor_history(visitor_id: str, after: int = 0) -> list[dict]:
    """Return the public chat messages of the visitor's chat tickets after message id `after`, oldest first."""
    customer = visitor_customer(visitor_id)
    if customer is None:
        db.session.rollback()
        return []
    messages = db.session.scalars(
        sa.select(Message)
        .join(Ticket, Message.ticket_id == Ticket.id)
        .where(
            Ticket.customer_id == customer.id,
            Ticket.channel == ChannelName.CHAT,
            # A transcript or an email reply on the same ticket went by mail, not to the widget.
            Message.channel == ChannelName.CHAT,
            Message.is_public.is_(True),
            Message.id > after,
        )
        .options(so.selectinload(Message.attachments), so.joinedload(Message.author_agent))
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
        #: For the visitor's own messages: an agent has seen it.
        "read": message.read_at is not None,
        "attachments": [visitor_attachment_entry(row) for row in message.attachments],
    }


def visitor_attachment_entry(row: Attachment) -> dict:
    """Describe an attachment for the widget; `path` is fetched with the visitor's token."""
    return {
        "id": row.id,
        "filename": row.filename,
        "content_type": row.content_type,
        "size": row.size,
        "is_image": row.content_type in INLINE_TYPES and row.storage_path is not None,
        "path": f"/chat/attachments/{row.id}" if row.storage_path else None,
        "refused": row.refused_reason,
    }


def forward_visitor_typing(visitor_id: str, is_typing: bool) -> None:
    """Tell the agents watching the visitor's open chat ticket that the visitor is (or stopped) typing."""
    customer = visitor_customer(visitor_id)
    ticket = _latest_chat_ticket(customer, active_only=True) if customer is not None else None
    number = ticket.number if ticket is not None else None
    db.session.rollback()
    if number is not None:
        socketio.emit("visitor.typing", {"ticket": number, "typing": is_typing},
                      namespace=AGENT_NAMESPACE, to=ticket_room(number))


def any_agent_online() -> bool:
    """Tell whether an active agent has the helpdesk open now (a realtime connection with a recent heartbeat)."""
    online = db.session.scalar(
        sa.select(Agent.id).where(Agent.is_active.is_(True), presence.is_online_clause()).limit(1)
    )
    db.session.rollback()
    return online is not None


# No agent online: the conversation goes on by email ----------------------------------------------------------


def _offline_subject(text: str) -> str:
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(first_line) > 60:
        first_line = first_line[:57].rstrip() + "..."
    return f"Left on the web chat: {first_line}" if first_line else "Left on the web chat"


def leave_offline_message(visitor_id: str, client_id: str, contact: ContactDetails, text: str) -> ChatReceipt:
    """Store a message a visitor left while no agent was online as an email ticket; commit, then acknowledge.

    The sender is the email address the visitor typed, so replies go out by email and the customer's mail
    answer threads back on our Message-ID. The visitor id is deliberately not linked to that customer: the
    address is unproven, and linking would show its owner's chats to whoever typed it.
    """
    dedupe_key = f"chat-offline:{visitor_id}:{client_id}"
    # A second message the same visitor leaves continues the ticket of the first, as an email reply would.
    earlier = db.session.scalar(
        sa.select(Message.external_id)
        .where(Message.dedupe_key.startswith(f"chat-offline:{visitor_id}:", autoescape=True),
               Message.dedupe_key != dedupe_key)
        .order_by(Message.id.desc())
        .limit(1)
    )
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]
    inbound = InboundMessage(
        channel=ChannelName.EMAIL,
        sender=SenderIdentity(IdentityKind.EMAIL, contact.email, contact.name),
        dedupe_key=dedupe_key,
        external_id=f"<chat.{digest}@{support_domain()}>",
        text=text,
        subject=_offline_subject(text),
        thread=ThreadHints(reply_to_external_ids=(earlier,) if earlier else ()),
    )
    result = ingest(inbound)
    # The acknowledgement starts the mail thread the customer can answer at once.
    is_new = result.is_new_ticket and not result.is_duplicate
    address = normalize_identity(inbound.sender).value  # as the message stored it
    if is_new and send_acknowledgement(result.ticket, inbound.channel, address) is not None:
        enqueue("deliver_outbox")
    return ChatReceipt(message_id=result.message_id, seq=result.message_id, is_duplicate=result.is_duplicate)


# Ending a chat, and its transcript ---------------------------------------------------------------------------


def end_chat(visitor_id: str) -> None:
    """Record that the visitor ended their open chat (agents see it); the ticket's status stays the agents'."""
    customer = visitor_customer(visitor_id)
    ticket = _latest_chat_ticket(customer, active_only=True) if customer is not None else None
    if ticket is None:
        db.session.rollback()
        return
    ticket_id, customer_id = ticket.id, customer.id
    db.session.rollback()
    begin_write()
    ticket = db.session.get(Ticket, ticket_id)
    record_event(ticket, "chat.ended", {}, reason="the visitor ended the chat",
                 customer=db.session.get(Customer, customer_id))
    publish_after_commit(db.session(), "ticket.updated", {"ticket": ticket.number, "field": "chat", "new": "ended"})
    visitors = _visitor_ids(customer_id)
    db.session.commit()
    # The visitor's other tabs end too.
    _emit_to_visitors(visitors, "chat_ended", {"reason": "visitor"})


def _transcript_address(ticket: Ticket, contact: ContactDetails | None) -> str | None:
    if contact is not None and contact.email:
        return contact.email
    recorded = _recorded_contact(ticket.id)
    if recorded and recorded.get("email"):
        return recorded["email"]
    # An email identity on the customer came from a real mail or a verified (HMAC) visitor.
    identity = ticket.customer.identity(IdentityKind.EMAIL)
    return identity.value if identity is not None else None


def send_transcript(visitor_id: str, contact: ContactDetails | None) -> str:
    """Queue the visitor's latest chat as a plain-text email (through the outbox); return the address.

    Raises ChatRefused when there is no conversation, no address, or the ticket had its share of transcripts.
    """
    customer = visitor_customer(visitor_id)
    ticket = _latest_chat_ticket(customer, active_only=False) if customer is not None else None
    if ticket is None:
        db.session.rollback()
        raise ChatRefused("no_conversation", "There is no conversation to send yet.")
    address = _transcript_address(ticket, contact)
    if address is None:
        db.session.rollback()
        raise ChatRefused("no_email", "Enter your email address to get the transcript.")
    limit = int(current_app.config.get("HELPDESK_CHAT_TRANSCRIPTS_PER_TICKET", 3))
    sent = db.session.scalar(
        sa.select(sa.func.count()).select_from(TicketEvent)
        .where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "chat.transcript_sent")
    )
    if sent >= limit:
        db.session.rollback()
        raise ChatRefused("limit", f"This conversation's transcript was already sent {sent} times.")
    ticket_id = ticket.id
    db.session.rollback()
    begin_write()
    ticket = db.session.get(Ticket, ticket_id)
    messages = db.session.scalars(
        sa.select(Message)
        .where(Message.ticket_id == ticket.id, Message.channel == ChannelName.CHAT, Message.is_public.is_(True))
        .options(so.selectinload(Message.attachments), so.joinedload(Message.author_agent))
        .order_by(Message.id)
    ).all()
    lines = [
        TranscriptLine(
            at=message.created_at,
            speaker="You" if message.direction == Direction.INBOUND else (
                message.author_agent.name if message.author_agent else "Support"),
            text=message.text or "",
            files=tuple(row.filename for row in message.attachments),
        )
        for message in messages
    ]
    message_id = queue_automatic_message(
        ticket, ChannelName.EMAIL, address, "Transcript of your chat",
        format_transcript(lines, ticket_number=ticket.number, team="our support team"))
    record_event(ticket, "chat.transcript_sent", {"message_id": message_id, "address": address},
                 reason="the visitor asked for the transcript", actor_label="visitor")
    publish_after_commit(db.session(), "message.created",
                         {"ticket": ticket.number, "message_id": message_id, "public": True})
    db.session.commit()
    enqueue("deliver_outbox")
    return address


# Read state and typing, both ways ------------------------------------------------------------------------


def mark_read_by_visitor(visitor_id: str, up_to: int) -> None:
    """Mark the agents' chat replies the visitor has seen (ids up to `up_to`) and tell the agents."""
    customer = visitor_customer(visitor_id)
    if customer is None:
        db.session.rollback()
        return
    unread = (
        sa.select(Message.id)
        .join(Ticket, Message.ticket_id == Ticket.id)
        .where(Ticket.customer_id == customer.id, Ticket.channel == ChannelName.CHAT,
               Message.direction == Direction.OUTBOUND, Message.channel == ChannelName.CHAT,
               Message.is_public.is_(True), Message.read_at.is_(None), Message.id <= up_to)
    )
    if db.session.scalar(unread.limit(1)) is None:
        db.session.rollback()
        return
    db.session.rollback()
    begin_write()
    rows = db.session.execute(
        sa.select(Message.id, Ticket.number).join(Ticket, Message.ticket_id == Ticket.id)
        .where(Message.id.in_(unread.scalar_subquery()))
    ).all()
    now = utcnow()
    db.session.execute(sa.update(Message).where(Message.id.in_([row.id for row in rows])).values(read_at=now))
    for number in {row.number for row in rows}:
        newest = max(row.id for row in rows if row.number == number)
        publish_after_commit(db.session(), "chat.read", {"ticket": number, "up_to": newest, "by": "visitor"},
                             room=ticket_room(number))
    db.session.commit()


def _ticket_number(data) -> int | None:
    try:
        number = int(data.get("number", 0))
    except (AttributeError, TypeError, ValueError):
        return None
    return number if number > 0 else None


def _chat_ticket(number: int | None) -> Ticket | None:
    if number is None:
        return None
    ticket = db.session.scalar(sa.select(Ticket).where(Ticket.number == number))
    return ticket if ticket is not None and ticket.channel == ChannelName.CHAT else None


def mark_read_by_agent(data) -> dict:
    """Mark the visitor's chat messages on ticket {"number"} seen by an agent, tell the visitor; return the state."""
    ticket = _chat_ticket(_ticket_number(data))
    if ticket is None:
        db.session.rollback()
        return {"ok": False, "error": "not_a_chat"}
    ticket_id, customer_id = ticket.id, ticket.customer_id
    db.session.rollback()
    begin_write()
    newest = db.session.scalar(
        sa.select(sa.func.max(Message.id))
        .where(Message.ticket_id == ticket_id, Message.direction == Direction.INBOUND,
               Message.channel == ChannelName.CHAT, Message.read_at.is_(None))
    )
    if newest is None:
        db.session.rollback()
    else:
        db.session.execute(
            sa.update(Message)
            .where(Message.ticket_id == ticket_id, Message.direction == Direction.INBOUND,
                   Message.channel == ChannelName.CHAT, Message.read_at.is_(None), Message.id <= newest)
            .values(read_at=utcnow())
        )
        visitors = _visitor_ids(customer_id)
        db.session.commit()
        _emit_to_visitors(visitors, "read", {"up_to": newest})
    return chat_state_for_agent(data)


def chat_state_for_agent(data) -> dict:
    """Return what the agents' ticket page shows of a chat: read state both ways, attachment links, contact."""
    ticket = _chat_ticket(_ticket_number(data))
    if ticket is None:
        db.session.rollback()
        return {"ok": False, "error": "not_a_chat"}

    def newest_read(direction: Direction) -> int:
        return db.session.scalar(
            sa.select(sa.func.max(Message.id))
            .where(Message.ticket_id == ticket.id, Message.direction == direction,
                   Message.channel == ChannelName.CHAT, Message.read_at.is_not(None))
        ) or 0

    rows = db.session.execute(
        sa.select(Attachment.id, Attachment.message_id, Attachment.filename, Attachment.content_type,
                  Attachment.size, Attachment.storage_path)
        .join(Message, Attachment.message_id == Message.id)
        .where(Message.ticket_id == ticket.id, Message.channel == ChannelName.CHAT)
        .order_by(Attachment.id)
    ).all()
    attachments: dict[str, list[dict]] = {}
    for row in rows:
        attachments.setdefault(str(row.message_id), []).append({
            "id": row.id, "filename": row.filename, "content_type": row.content_type, "size": row.size,
            "is_image": row.content_type in INLINE_TYPES and row.storage_path is not None,
            "url": f"/chat/agent/attachments/{row.id}" if row.storage_path else None,
        })
    state = {
        "ok": True,
        "ticket": ticket.number,
        "visitor_read_up_to": newest_read(Direction.OUTBOUND),
        "agent_read_up_to": newest_read(Direction.INBOUND),
        "attachments": attachments,
        "contact": _recorded_contact(ticket.id),
    }
    db.session.rollback()
    return state


_typing_sent: dict[tuple[int, int], float] = {}
_typing_lock = threading.Lock()


def forward_agent_typing(agent: Agent, data) -> None:
    """Show the visitor of chat ticket {"number"} that `agent` is typing ({"typing": false}: stopped)."""
    is_typing = isinstance(data, dict) and data.get("typing") is True
    number = _ticket_number(data)
    agent_id, name = agent.id, agent.name
    if number is None:
        return
    now = time.monotonic()
    with _typing_lock:
        # At most one "typing" a second per agent and ticket; "stopped" always goes through.
        if is_typing and now - _typing_sent.get((agent_id, number), 0.0) < 1.0:
            return
        _typing_sent[(agent_id, number)] = now if is_typing else 0.0
        if len(_typing_sent) > 10_000:
            _typing_sent.clear()
    ticket = _chat_ticket(number)
    visitors = _visitor_ids(ticket.customer_id) if ticket is not None else []
    db.session.rollback()
    _emit_to_visitors(visitors, "typing", {"typing": is_typing, "name": name})


# The ticket is solved: the visitor's chat ends ------------------------------------------------------------


def _note_status_change(ticket: Ticket, value, oldvalue, initiator) -> None:
    if value == oldvalue or value not in (TicketStatus.SOLVED, TicketStatus.CLOSED):
        return
    if ticket.channel != ChannelName.CHAT or ticket.customer_id is None:
        return
    session = so.object_session(ticket)
    if session is not None:
        session.info.setdefault("chat_ended_customers", set()).add(ticket.customer_id)


def _collect_chat_endings(session: so.Session) -> None:
    # A savepoint's release fires the commit events too; only the outermost commit makes the ending true.
    if session.in_nested_transaction():
        return
    customers = session.info.pop("chat_ended_customers", None)
    if customers:
        with session.no_autoflush:
            visitors = list(session.scalars(
                sa.select(CustomerIdentity.value)
                .where(CustomerIdentity.customer_id.in_(customers), CustomerIdentity.kind == IdentityKind.VISITOR)
            ))
        session.info.setdefault("chat_ended_visitors", []).extend(visitors)


def _emit_chat_endings(session: so.Session) -> None:
    if session.in_nested_transaction():
        return
    visitors = session.info.pop("chat_ended_visitors", None)
    if visitors:
        _emit_to_visitors(visitors, "chat_ended", {"reason": "solved"})


def _drop_chat_endings(session: so.Session, previous_transaction: so.SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop("chat_ended_customers", None)
        session.info.pop("chat_ended_visitors", None)


def install_chat_hooks() -> None:
    """Tell a visitor their chat ended when an agent solves or closes its ticket, once that commits (idempotent)."""
    if not sa.event.contains(Ticket.status, "set", _note_status_change):
        sa.event.listen(Ticket.status, "set", _note_status_change)
        sa.event.listen(so.Session, "before_commit", _collect_chat_endings)
        sa.event.listen(so.Session, "after_commit", _emit_chat_endings)
        sa.event.listen(so.Session, "after_soft_rollback", _drop_chat_endings)


# Files ------------------------------------------------------------------------------------------------------


def receive_chat_upload(visitor_id: str, verified: SenderIdentity | None, client_id: str, text: str,
                        attachment: AttachmentData) -> tuple[ChatReceipt, list[dict]]:
    """Store a visitor's file (already checked) as an attachment on their chat message, through ingest."""
    inbound = InboundMessage(
        channel=ChannelName.CHAT,
        sender=SenderIdentity(IdentityKind.VISITOR, visitor_id),
        dedupe_key=f"chat:{visitor_id}:{client_id}",
        external_id=client_id,
        text=text,
        attachments=(attachment,),
        thread=ThreadHints(join_open_ticket_on_channel=True),
        other_identities=(verified,) if verified else (),
    )
    result = ingest(inbound)
    entries = [visitor_attachment_entry(row) for row in result.message.attachments]
    receipt = ChatReceipt(message_id=result.message_id, seq=result.message_id, is_duplicate=result.is_duplicate)
    db.session.rollback()
    return receipt, entries


def attachment_for_visitor(visitor_id: str, attachment_id: int) -> Attachment | None:
    """Return the attachment if it belongs to a public chat message of the visitor's own conversations."""
    customer = visitor_customer(visitor_id)
    row = db.session.get(Attachment, attachment_id)
    if customer is None or row is None or row.storage_path is None:
        return None
    message = row.message
    if not (message.is_public and message.channel == ChannelName.CHAT and message.ticket.channel == ChannelName.CHAT
            and message.ticket.customer_id == customer.id):
        return None
    return row


def attachment_for_agent(attachment_id: int) -> Attachment | None:
    """Return the attachment of a chat message (any agent may see every ticket), or None."""
    row = db.session.get(Attachment, attachment_id)
    if row is None or row.storage_path is None or row.message.channel != ChannelName.CHAT:
        return None
    return row


# Wiring -----------------------------------------------------------------------------------------------------


class HelpdeskChatBackend:
    """The ChatBackend the `/chat` namespace calls: this module's functions."""

    def receive(self, inbound, contact):
        return receive_chat_message(inbound, contact)

    def history(self, visitor_id, after):
        return visitor_history(visitor_id, after)

    def visitor_typing(self, visitor_id, is_typing):
        forward_visitor_typing(visitor_id, is_typing)

    def remember_contact(self, visitor_id, contact):
        remember_contact(visitor_id, contact)

    def leave_message(self, visitor_id, client_id, contact, text):
        return leave_offline_message(visitor_id, client_id, contact, text)

    def mark_read(self, visitor_id, up_to):
        mark_read_by_visitor(visitor_id, up_to)

    def agents_online(self):
        return any_agent_online()

    def end_chat(self, visitor_id):
        end_chat(visitor_id)

    def send_transcript(self, visitor_id, contact):
        return send_transcript(visitor_id, contact)


def group_ingest() -> GroupIngest:
    """This app's writer of visitors' messages (one thread, many messages per transaction)."""
    writer = current_app.extensions.get("helpdesk.group_ingest")
    if writer is None:
        writer = current_app.extensions.setdefault("helpdesk.group_ingest",
                                                   GroupIngest(current_app._get_current_object()))
    return writer


def visitor_tokens() -> VisitorTokens:
    return VisitorTokens(current_app.config["SECRET_KEY"])


def create_chat_namespace() -> ChatNamespace:
    """Build the `/chat` namespace with this app's callables."""
    install_chat_hooks()
    return ChatNamespace(tokens=visitor_tokens, settings=chat_settings, backend=HelpdeskChatBackend())
