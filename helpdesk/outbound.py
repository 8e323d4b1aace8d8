"""Agents' replies: committed with an outbox row first, delivered by a job, at most once per success."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import pathlib
import re
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from flask import current_app

from channels.base import ChannelRegistry
from channels.messages import Attachment as AttachmentData
from channels.messages import ChannelName, DeliveryStatus, IdentityKind, OutboundMessage, SenderIdentity
from helpdesk.attachments import attachment_path, store_attachment
from helpdesk.customers import find_identity, normalize_identity
from helpdesk.database import begin_write, insert_row, inserted_id
from helpdesk.extensions import db
from helpdesk.message_templates import render_acknowledgement
from helpdesk.models import (
    Agent,
    Attachment,
    CustomerIdentity,
    Direction,
    Message,
    OutboxItem,
    OutboxState,
    Ticket,
    TicketStatus,
)
from helpdesk.models.base import utcnow
from helpdesk.realtime import publish_after_commit
from helpdesk.sms import text_reply_refusal
from helpdesk.tickets import change_field, record_event

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
#: A claim older than this is taken to belong to a crashed worker.
CLAIM_LEASE = dt.timedelta(minutes=5)

_IDENTITY_FOR_CHANNEL = {
    ChannelName.EMAIL: IdentityKind.EMAIL,
    ChannelName.SMS: IdentityKind.PHONE,
    ChannelName.WHATSAPP: IdentityKind.PHONE,
    ChannelName.CHAT: IdentityKind.VISITOR,
}


#: The shape of every Message-ID _new_external_id gives outgoing mail.
_OUR_EMAIL_MESSAGE_ID = re.compile(r"<helpdesk\.[0-9a-f]{32}@[^<>@\s]+>")


class ReplyRefused(ValueError):
    """The reply cannot be sent as asked; the message says why, for the agent."""


def reply_route(ticket: Ticket) -> tuple[ChannelName, str]:
    """Return the channel and address a public reply on `ticket` goes to: where the customer last wrote.

    Automatic mail (a bounce from a mail server, an out-of-office notice) counts only when nothing else came:
    a reply after a bounce must not go to the mailer daemon that sent it.
    """
    last_inbound = db.session.scalar(
        sa.select(Message)
        .where(Message.ticket_id == ticket.id, Message.direction == Direction.INBOUND, Message.address.is_not(None))
        .order_by(Message.is_automatic, Message.id.desc())
        .limit(1)
    )
    if last_inbound is not None:
        return last_inbound.channel, last_inbound.address
    identity = ticket.customer.identity(_IDENTITY_FOR_CHANNEL[ticket.channel])
    if identity is None:
        raise ReplyRefused(f"the customer has no {ticket.channel} address to reply to")
    return ticket.channel, identity.value


def bouncing_reply_address(ticket: Ticket) -> CustomerIdentity | None:
    """The email address a public reply on `ticket` would go to, when mail to it has bounced."""
    try:
        channel, address = reply_route(ticket)
        if channel is not ChannelName.EMAIL:
            return None
        identity = normalize_identity(SenderIdentity(IdentityKind.EMAIL, address))
    except (ReplyRefused, ValueError):  # nowhere to reply to; an address that is not one
        return None
    stored = find_identity(identity.kind, identity.value)
    return stored if stored is not None and stored.bouncing_since is not None else None


def _new_external_id(channel: ChannelName) -> str:
    token = uuid.uuid4().hex
    if channel is ChannelName.EMAIL:
        # Recognizable as ours when it comes back in In-Reply-To or References.
        return f"<helpdesk.{token}@{support_domain()}>"
    return f"helpdesk-{token}"


def support_domain() -> str:
    """The domain of the support address, which our Message-IDs carry."""
    return current_app.config["HELPDESK_SUPPORT_ADDRESS"].rpartition("@")[2] or "helpdesk.localhost"


def has_our_message_id_shape(external_id: str | None) -> bool:
    """Tell whether `external_id` looks like a Message-ID we gave outgoing mail (only such an id can be ours)."""
    return bool(external_id) and _OUR_EMAIL_MESSAGE_ID.fullmatch(external_id) is not None


#: Files one reply or note may carry.
MAX_REPLY_FILES = 10


def reply(ticket: Ticket, agent: Agent, text: str, *, is_public: bool = True,
          new_status: TicketStatus | None = None, files: Sequence[AttachmentData] = ()) -> Message:
    """Store an agent's reply (or internal note) with its files and, for a reply, its outbox row; one transaction.

    Files go out with replies by email; on other channels only an internal note keeps them.
    """
    text = (text or "").strip()
    if not text:
        raise ReplyRefused("the reply is empty")
    channel, address = reply_route(ticket) if is_public else (ticket.channel, None)
    if is_public:
        # Texts: an opted-out number, a closed WhatsApp window or an over-long body is refused here, before
        # anything is stored, so the agent sees why at once.
        refusal = text_reply_refusal(channel, address, text)
        if refusal:
            raise ReplyRefused(refusal)
    _check_files(files, channel if is_public else None)
    external_id = _new_external_id(channel) if is_public else None
    message = Message(
        ticket=ticket,
        direction=Direction.OUTBOUND,
        channel=channel,
        author_agent=agent,
        is_public=is_public,
        text=text,
        address=address,
        external_id=external_id,
        dedupe_key=f"out:{external_id}" if is_public else f"note:{uuid.uuid4().hex}",
        delivery_status=DeliveryStatus.PENDING if is_public else None,
    )
    message.attachments.extend(store_attachment(file) for file in files)
    db.session.add(message)
    db.session.flush()
    if is_public:
        db.session.add(OutboxItem(message_id=message.id))
        now = utcnow()
        ticket.last_agent_reply_at = now
        if ticket.first_responded_at is None:
            ticket.first_responded_at = now
    record_event(ticket, "reply.added" if is_public else "note.added", {"message_id": message.id}, agent=agent)
    if ticket.status == TicketStatus.NEW and is_public:
        change_field(ticket, "status", TicketStatus.OPEN, agent=agent, reason="first reply sent")
    if new_status is not None:
        change_field(ticket, "status", new_status, agent=agent)
    ticket.updated_at = utcnow()
    publish_after_commit(db.session(), "message.created",
                         {"ticket": ticket.number, "message_id": message.id, "public": is_public})
    db.session.commit()
    return message


def _check_files(files: Sequence[AttachmentData], channel: ChannelName | None) -> None:
    """Refuse files a reply on `channel` (None: an internal note) cannot carry, before anything is stored."""
    if not files:
        return
    if channel is not None and channel is not ChannelName.EMAIL:
        raise ReplyRefused(f"files go out with email replies only, and this reply goes out by {channel}; "
                           "send the file as an internal note, or reply by email")
    if len(files) > MAX_REPLY_FILES:
        raise ReplyRefused(f"{len(files)} files is more than the {MAX_REPLY_FILES} one reply may carry")
    limit = current_app.config["HELPDESK_MAX_ATTACHMENT_BYTES"]
    for file in files:
        if file.size > limit:
            raise ReplyRefused(f"{file.filename} is {file.size} bytes, over the {limit}-byte limit for a file")


def _conversation_ids(message: Message) -> tuple[str, ...]:
    """External ids of earlier messages on the ticket, newest first, for In-Reply-To and References."""
    rows = db.session.scalars(
        sa.select(Message.external_id)
        .where(Message.ticket_id == message.ticket_id, Message.id < message.id, Message.external_id.is_not(None),
               Message.channel == ChannelName.EMAIL)
        .order_by(Message.id.desc())
        .limit(20)
    )
    return tuple(rows)


def _claim_due(limit: int) -> list[int]:
    """Mark up to `limit` due items as sending and return their ids; committed before any send."""
    now = utcnow()
    due = (
        sa.select(OutboxItem)
        .where(
            sa.or_(
                sa.and_(OutboxItem.state == OutboxState.PENDING, OutboxItem.next_attempt_at <= now),
                sa.and_(OutboxItem.state == OutboxState.SENDING, OutboxItem.claimed_at < now - CLAIM_LEASE),
            )
        )
        .order_by(OutboxItem.next_attempt_at)
        .limit(limit)
        # Two workers never take the same item (PostgreSQL); SQLite serializes writers anyway.
        .with_for_update(skip_locked=True)
    )
    db.session.rollback()
    begin_write()
    items = list(db.session.scalars(due))
    for item in items:
        item.state = OutboxState.SENDING
        item.claimed_at = now
        item.attempts += 1
    db.session.commit()
    return [item.id for item in items]


def deliver_due(registry: ChannelRegistry, limit: int = 50) -> int:
    """Send every due outbox item once, claiming `limit` at a time; return how many were handled."""
    handled = 0
    while True:
        claimed = _claim_due(limit)
        handled += _deliver(registry, claimed)
        if len(claimed) < limit:
            return handled


def _deliver(registry: ChannelRegistry, claimed: list[int]) -> int:
    handled = 0
    for due in _read_due(claimed):
        provider_id = None
        try:
            result = registry.get(due.message.channel).send(_with_files(due))
        except Exception as error:  # a channel bug must not stop the other deliveries
            log.exception("sending message %s failed", due.message_id)
            result_status, error_text, temporary = DeliveryStatus.FAILED, f"{type(error).__name__}: {error}", True
        else:
            result_status, error_text, temporary = result.status, result.error, result.is_temporary
            if result.provider_id and due.message.channel is not ChannelName.EMAIL:
                provider_id = result.provider_id
        # The send took a while: record it in a writer's transaction, so a commit made meanwhile (an inbound
        # text, a status report) cannot fail the write and leave a sent message looking unsent.
        db.session.rollback()
        begin_write()
        item, message = db.session.execute(
            sa.select(OutboxItem, Message).join(Message, Message.id == OutboxItem.message_id)
            .where(OutboxItem.id == due.item_id)
        ).one()
        if provider_id:
            message.external_id = provider_id
        _record_delivery(item, message, result_status, error_text, temporary, due.ticket_number)
        handled += 1
    return handled


@dataclasses.dataclass(frozen=True)
class _DueItem:
    item_id: int
    message_id: int
    ticket_number: int
    message: OutboundMessage
    #: The stored files the message carries (read as plain values: the rows expire at each commit); their
    #: bytes are read when it is sent.
    files: tuple[_OutgoingFile, ...] = ()


@dataclasses.dataclass(frozen=True)
class _OutgoingFile:
    filename: str
    content_type: str
    path: pathlib.Path | None
    content_id: str | None
    is_inline: bool

    @classmethod
    def of(cls, row: Attachment) -> _OutgoingFile:
        return cls(row.filename, row.content_type, attachment_path(row), row.content_id, row.is_inline)


def _with_files(due: _DueItem) -> OutboundMessage:
    """The message to send, with its files' bytes (a file gone from storage fails the attempt, to be retried)."""
    if not due.files:
        return due.message
    attachments = []
    for file in due.files:
        if file.path is None:
            raise FileNotFoundError(f"the file {file.filename} was never stored")
        try:
            content = file.path.read_bytes()
        except OSError as error:
            raise FileNotFoundError(f"the file {file.filename} can no longer be read: {error.strerror}") from error
        attachments.append(AttachmentData(filename=file.filename, content_type=file.content_type, content=content,
                                          content_id=file.content_id, is_inline=file.is_inline))
    return dataclasses.replace(due.message, attachments=tuple(attachments))


def _read_due(item_ids: list[int]) -> list[_DueItem]:
    """Return what each claimed item sends, oldest due first, read in one query (and one per conversation)."""
    if not item_ids:
        return []
    rows = db.session.execute(
        sa.select(OutboxItem.id, Message, Ticket)
        .join(Message, Message.id == OutboxItem.message_id)
        .join(Ticket, Ticket.id == Message.ticket_id)
        .where(OutboxItem.id.in_(item_ids))
    ).all()
    found = {item_id: (message, ticket) for item_id, message, ticket in rows}
    files: dict[int, list[_OutgoingFile]] = {}
    for row in db.session.scalars(sa.select(Attachment).where(
            Attachment.message_id.in_([message.id for message, _ticket in found.values()]))
            .order_by(Attachment.id)):
        files.setdefault(row.message_id, []).append(_OutgoingFile.of(row))
    due = []
    for item_id in item_ids:
        if item_id not in found:
            continue  # deleted with its ticket since it was claimed
        message, ticket = found[item_id]
        outbound = OutboundMessage(
            channel=message.channel,
            recipient=message.address or "",
            text=message.text,
            html=message.html,
            subject=_reply_subject(ticket, message.subject),
            external_id=message.external_id,
            reply_to_external_ids=_conversation_ids(message),
            is_automatic=message.is_automatic,
        )
        due.append(_DueItem(item_id, message.id, ticket.number, outbound, tuple(files.get(message.id, ()))))
    return due


def _record_delivery(item: OutboxItem, message: Message, status: DeliveryStatus, error: str | None,
                     temporary: bool, ticket_number: int) -> None:
    if status is DeliveryStatus.FAILED and temporary and item.attempts < MAX_ATTEMPTS:
        item.state = OutboxState.PENDING
        item.next_attempt_at = utcnow() + dt.timedelta(seconds=min(3600, 15 * 2 ** (item.attempts - 1)))
        item.last_error = (error or "")[:1000]
        message.delivery_error = item.last_error
    elif status is DeliveryStatus.FAILED:
        item.state = OutboxState.FAILED
        item.last_error = (error or "")[:1000]
        message.delivery_status = DeliveryStatus.FAILED
        message.delivery_error = item.last_error
        record_event(message.ticket, "delivery.failed", {"message_id": message.id}, reason=item.last_error)
    else:
        item.state = OutboxState.SENT
        message.delivery_status = status
        message.delivery_error = None
    item.claimed_at = None
    publish_after_commit(db.session(), "message.updated",
                         {"ticket": ticket_number, "message_id": message.id,
                          "delivery_status": str(message.delivery_status)})
    db.session.commit()


def _reply_subject(ticket: Ticket, custom: str | None = None) -> str:
    """Return the subject of mail on `ticket`: a custom one (an edited template's) or "Re: ...", with the token."""
    token = f"[#{ticket.number}]"
    if custom:
        # The token lets the customer's answer find its ticket even when their mail client drops the headers.
        return custom if token in custom else f"{custom} {token}"
    subject = ticket.subject or "Your request"
    if token in subject:
        return subject
    if not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    return f"{subject} {token}"


def send_acknowledgement(ticket: Ticket, channel: ChannelName, address: str) -> int | None:
    """Queue the automatic acknowledgement of new `ticket` to `address` on `channel`, unless that address got
    too many lately; commit.

    Returns the queued message's id, or None when it was held back (recorded on the ticket either way).
    """
    begin_write()
    message_id = queue_acknowledgement(ticket, channel, address)
    db.session.commit()
    return message_id


def queue_acknowledgement(ticket: Ticket, channel: ChannelName, address: str) -> int | None:
    """Add the acknowledgement of new `ticket` to `address` on `channel` (where its first message came from,
    as stored) and its outbox row to the open transaction; the caller commits.

    Returns the queued message's id, or None when it was held back because the address got too many lately
    (recorded on the ticket either way).
    """
    window = dt.timedelta(minutes=current_app.config.get("HELPDESK_ACK_WINDOW_MINUTES", 60))
    limit = current_app.config.get("HELPDESK_ACK_LIMIT_PER_WINDOW", 3)
    # A Core query: it reads only messages, which are inserted as they are made, never held for a flush.
    recent = db.session.connection().execute(_recent_acknowledgements_query(),
                                             {"address": address, "since": utcnow() - window}).scalar_one()
    if recent >= limit:
        # A sender (or a misconfigured autoresponder) opening ticket after ticket must not start a mail loop.
        record_event(ticket, "acknowledgement.held", {"address": address},
                     reason=f"{recent} acknowledgements to this address in the last {window}")
        return None
    with db.session.no_autoflush:
        # The admins' template for the ticket's language (or their default), else the built-in text.
        subject, text = render_acknowledgement(ticket)
    message_id = queue_automatic_message(ticket, channel, address, subject, text)
    record_event(ticket, "acknowledgement.sent", {"message_id": message_id, "address": address})
    return message_id


@functools.cache
def _recent_acknowledgements_query() -> sa.Select:
    # Built once, with bound parameters: every new ticket runs it, and building it cost more than running it.
    message = Message.__table__.c
    return (
        sa.select(sa.func.count())
        .select_from(Message.__table__)
        .where(message.direction == Direction.OUTBOUND, message.is_automatic.is_(True),
               message.address == sa.bindparam("address"), message.created_at >= sa.bindparam("since"))
    )


def queue_automatic_message(ticket: Ticket, channel: ChannelName, address: str, subject: str | None,
                            text: str) -> int:
    """Add a message the helpdesk sends by itself (no agent wrote it) to `ticket`, with its outbox item; return
    the message's id."""
    external_id = _new_external_id(channel)
    if ticket.id is None:
        db.session.flush()  # the new ticket gets its id
    # Both rows inserted at once, outside the unit of work: one is added for most new tickets, and a flush
    # for them cost more than the rest of the acknowledgement. Nothing reads the message as an object here.
    message_id = inserted_id(Message, {
        "ticket_id": ticket.id,
        "direction": Direction.OUTBOUND,
        "channel": channel,
        "is_public": True,
        "is_automatic": True,
        "subject": subject,
        "text": text,
        "address": address,
        "external_id": external_id,
        "dedupe_key": f"out:{external_id}",
        "delivery_status": DeliveryStatus.PENDING,
    })
    insert_row(OutboxItem.__table__, {"message_id": message_id})
    return message_id
