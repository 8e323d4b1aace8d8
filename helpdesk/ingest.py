"""The one path every inbound message takes: dedupe, customer, thread, store, publish."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import Callable

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError, OperationalError

from channels.html import html_to_text, sanitize_html
from channels.messages import InboundMessage
from helpdesk.attachments import stored_attachment_values
from helpdesk.customers import IdentityRaceLost, normalize_identity, resolve_customer
from helpdesk.database import begin_write, inserted_id, loaded_object, once_per_transaction, plain_insert
from helpdesk.extensions import db
from helpdesk.models import (
    Attachment,
    Customer,
    CustomerIdentity,
    Direction,
    Message,
    Ticket,
    TicketStatus,
)
from helpdesk.models.base import utcnow
from helpdesk.realtime import publish_after_commit
from helpdesk.tickets import change_field, open_ticket, record_event, record_event_row
from helpdesk.triage.engine import (
    TriageConfig,
    apply_triage,
    clock_inputs,
    config_stamp_columns,
    message_language,
)

log = logging.getLogger(__name__)

_ATTEMPTS = 3


@dataclasses.dataclass(frozen=True)
class IngestResult:
    message_id: int
    ticket_id: int
    #: True when the message was already stored (a redelivery); nothing was written.
    is_duplicate: bool
    is_new_ticket: bool
    #: Why the message went to this ticket, as recorded on the ticket event.
    thread_reason: str
    #: The rows, when the path that stored the message had them loaded; else `message` and `ticket` load them.
    loaded_message: Message | None = dataclasses.field(default=None, repr=False, compare=False)
    loaded_ticket: Ticket | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, message: Message, ticket: Ticket, *, is_duplicate: bool, is_new_ticket: bool,
           thread_reason: str) -> IngestResult:
        return cls(message.id, ticket.id, is_duplicate, is_new_ticket, thread_reason, message, ticket)

    @property
    def message(self) -> Message:
        return self.loaded_message if self.loaded_message is not None else db.session.get(Message, self.message_id)

    @property
    def ticket(self) -> Ticket:
        return self.loaded_ticket if self.loaded_ticket is not None else db.session.get(Ticket, self.ticket_id)


class IngestError(Exception):
    """The message could not be stored; the caller should quarantine its raw form."""


#: Called inside the transaction that stores a new message, just before its commit (see ingest_with).
BeforeCommit = Callable[[IngestResult], None]


def find_message_by_dedupe_key(dedupe_key: str) -> Message | None:
    return db.session.scalar(_message_by_dedupe_key_query(), {"dedupe_key": dedupe_key})


# The queries every message runs are built once, with bound parameters: building a statement costs more
# Python than running it (SQLAlchemy caches the compiled SQL, not the construction).
@functools.cache
def _message_by_dedupe_key_query() -> sa.Select:
    return sa.select(Message).where(Message.dedupe_key == sa.bindparam("dedupe_key"))


# Core queries of every ticket column, their rows made objects by loaded_object: most messages run one.
@functools.cache
def _ticket_of_known_message_query() -> sa.Select:
    ticket, message = Ticket.__table__, Message.__table__
    return (
        sa.select(*ticket.columns)
        .join(message, message.c.ticket_id == ticket.c.id)
        .where(message.c.external_id.in_(sa.bindparam("external_ids", expanding=True)))
        .order_by(message.c.id.desc())
        .limit(1)
    )


@functools.cache
def _ticket_by_number_query() -> sa.Select:
    ticket = Ticket.__table__
    return sa.select(*ticket.columns).where(ticket.c.number == sa.bindparam("number"))


def _ticket_found_by(query: sa.Select, parameters: dict) -> Ticket | None:
    row = db.session.connection().execute(query, parameters).first()
    return None if row is None else loaded_object(Ticket, row)


@functools.cache
def _open_ticket_on_channel_query() -> sa.Select:
    return (
        sa.select(Ticket)
        .where(
            Ticket.customer_id == sa.bindparam("customer_id"),
            Ticket.channel == sa.bindparam("channel"),
            *_is_not(Ticket.status, _INACTIVE_STATUSES),
        )
        .order_by(Ticket.updated_at.desc(), Ticket.id.desc())
        .limit(1)
    )


def ingest(inbound: InboundMessage) -> IngestResult:
    """Store `inbound` exactly once, on the right ticket, in one transaction; publish after commit."""
    return ingest_with(inbound)


def ingest_with(inbound: InboundMessage, *, before_commit: BeforeCommit | None = None) -> IngestResult:
    """Ingest `inbound` as ingest() does; `before_commit(result)` adds its own writes to a new message's transaction.

    Nothing is called for a duplicate; if `before_commit` raises, nothing is stored.
    """
    # End whatever the caller left open (a read; events queued for a commit of theirs) as a rollback, so the
    # write below starts its own transaction. An empty transaction makes sure the rollback happens even when
    # none was open: it costs no round trip.
    session = db.session()
    if not session.in_transaction():
        session.begin()
    session.rollback()
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            # The dedupe check runs in the writer's transaction: one transaction per message, and on SQLite
            # nobody can store the same message between the check and the insert.
            begin_write()
            result = _write(inbound, before_commit)
            if result.is_duplicate:
                db.session.rollback()  # nothing to write: let go of the write lock at once
            else:
                db.session.commit()
            return result
        except (IntegrityError, IdentityRaceLost) as error:
            # Lost a race: another process stored this message (or this customer) first. Look again.
            db.session.rollback()
            log.info("ingest of %s lost a race (attempt %d): %s", inbound.dedupe_key, attempt,
                     getattr(error, "orig", error))
        except OperationalError as error:
            db.session.rollback()
            if attempt == _ATTEMPTS:
                raise IngestError(f"database unavailable: {error.orig}") from error
            log.warning("ingest of %s hit a database error (attempt %d): %s", inbound.dedupe_key, attempt, error)
        except BaseException:
            # Never leave a half-written transaction (and on SQLite, the write lock) behind.
            db.session.rollback()
            raise
    existing = find_message_by_dedupe_key(inbound.dedupe_key)
    if existing is not None:
        return _duplicate_of(existing)
    raise IngestError(f"could not store {inbound.dedupe_key} after {_ATTEMPTS} attempts")


def ingest_in_transaction(inbound: InboundMessage, *, before_commit: BeforeCommit | None = None,
                          check_stored: bool = True) -> IngestResult:
    """Write `inbound` as ingest_with() does, into the session's open write transaction; the caller commits.

    For callers that store many messages per transaction. Nothing is retried here: on any error the caller
    rolls the whole transaction back (and may store each message on its own through ingest_with()). Without
    `check_stored`, the query for a stored copy is left out: a message stored already then raises
    IntegrityError (its unique dedupe key), for callers that know duplicates to be rare.
    """
    begin_write()
    return _write(inbound, before_commit, check_stored=check_stored)


def _write(inbound: InboundMessage, before_commit: BeforeCommit | None, *, check_stored: bool = True) -> IngestResult:
    """Add `inbound` to the open write transaction, or find it stored already; commit nothing."""
    triage_config = None
    if may_continue_conversation(inbound):
        result, triage_config = write_continuation(inbound)
        if result is not None:
            return _before_commit(result, before_commit)
    if triage_config is None and not inbound.is_automatic:
        # Read before anything is added, so the reads need not flush it. (Automatic mail runs no rule on
        # a known ticket; should it open one, triage reads them itself.)
        triage_config = once_per_transaction("triage_config", TriageConfig.current)
    existing = find_message_by_dedupe_key(inbound.dedupe_key) if check_stored else None
    if existing is not None:
        return _duplicate_of(existing)
    return _ingest_once(inbound, before_commit, triage_config)


def _duplicate_of(existing: Message) -> IngestResult:
    return IngestResult.of(existing, existing.ticket, is_duplicate=True, is_new_ticket=False,
                           thread_reason="duplicate of a stored message")


# A customer's next message in a conversation that is under way --------------------------------------------
#
# Most messages are a chat visitor or a texter writing again while their ticket waits on the agents. For such a
# message the general path below only adds the message and its event and stamps the ticket: it runs no rule
# (none runs on customer messages), moves no SLA clock (the customer was already waiting) and wakes nothing.
# Then the same rows are written here with plain statements, at about a third of the general path's cost;
# whenever any of that does not hold, the general path runs instead, in the same transaction.
# tests/integration/test_ingest_continuing.py checks that both leave the same rows.

_INACTIVE_STATUSES = tuple(status for status in TicketStatus if not status.is_active)
#: The active status a customer's message changes: the ticket is back with the agents (a solved one is not
#: active, so no conversation continues on it).
_WAKING_STATUSES = (TicketStatus.PENDING,)


def may_continue_conversation(inbound: InboundMessage) -> bool:
    thread = inbound.thread
    return (thread.join_open_ticket_on_channel and not thread.reply_to_external_ids and thread.ticket_number is None
            and not inbound.is_automatic and not inbound.attachments and not inbound.html
            and not inbound.other_identities)


@functools.cache
def _ongoing_conversation_query() -> sa.Select:
    """The sender's customer and newest active ticket on the channel (as find_thread picks it), whether the
    message is stored already, and the triage rules' stamp, in one query."""
    stored = sa.select(Message.id).where(Message.dedupe_key == sa.bindparam("dedupe_key")).scalar_subquery()
    return (
        sa.select(Customer.id, Customer.name, Customer.merged_into_id, Ticket.id, Ticket.number, Ticket.subject,
                  Ticket.status, Ticket.language, Ticket.last_agent_reply_at, Ticket.last_customer_message_at,
                  stored, *config_stamp_columns())
        .select_from(CustomerIdentity)
        .join(Customer, Customer.id == CustomerIdentity.customer_id)
        .join(Ticket, Ticket.customer_id == Customer.id)
        .where(CustomerIdentity.kind == sa.bindparam("kind"), CustomerIdentity.value == sa.bindparam("value"),
               Ticket.channel == sa.bindparam("channel"), *_is_not(Ticket.status, _INACTIVE_STATUSES))
        .order_by(Ticket.updated_at.desc(), Ticket.id.desc())
        .limit(1)
    )


def _is_not(column, values) -> list:
    # Plain comparisons rather than NOT IN: an IN list's parameters are expanded again at every execution.
    return [column != value for value in values]


@functools.cache
def _stamp_continuing_ticket() -> sa.Update:
    # Guarded by the status: on PostgreSQL, an agent who solved the ticket meanwhile makes this match nothing.
    return (
        sa.update(Ticket.__table__)
        .where(Ticket.__table__.c.id == sa.bindparam("ticket_id"),
               *_is_not(Ticket.__table__.c.status, _WAKING_STATUSES + _INACTIVE_STATUSES))
        .values(last_customer_message_at=sa.bindparam("now"), updated_at=sa.bindparam("now"))
    )


def write_continuation(inbound: InboundMessage) -> tuple[IngestResult | None, TriageConfig | None]:
    """Write `inbound` on its ongoing conversation in the open write transaction (the caller commits), or return
    no result (nothing written) for the general path; and the triage config, if it was read."""
    sender = normalize_identity(inbound.sender)
    connection = db.session.connection()
    row = connection.execute(_ongoing_conversation_query(), {
        "kind": sender.kind, "value": sender.value, "channel": inbound.channel, "dedupe_key": inbound.dedupe_key,
    }).one_or_none()
    if row is None:
        return None, None  # a new customer, or no open conversation: a ticket is opened
    (customer_id, customer_name, merged_into_id, ticket_id, ticket_number, ticket_subject, status, language,
     replied_at, wrote_at, stored_id, *config_stamp) = row
    config = TriageConfig.current(tuple(config_stamp))
    customer_waits = replied_at is None or (wrote_at is not None and wrote_at > replied_at)
    if (stored_id is not None or merged_into_id is not None or (not customer_name and sender.display_name)
            or status in _WAKING_STATUSES or not customer_waits
            or any(rule.runs_on("customer_message") for rule in config.rules)):
        # A duplicate to answer, a merge to follow, a name to set, a ticket to wake, a clock to start, rules to run.
        return None, config
    now = utcnow()
    stamp = _stamp_continuing_ticket()
    if language is None and (language := message_language(inbound)) is not None:
        stamp = stamp.values(language=language)  # as triage would: the first message that tells sets it
    if connection.execute(stamp, {"ticket_id": ticket_id, "now": now}).rowcount != 1:
        return None, config
    message_id = inserted_id(Message, {
        "ticket_id": ticket_id,
        "direction": Direction.INBOUND,
        "channel": inbound.channel,
        "dedupe_key": inbound.dedupe_key,
        "external_id": inbound.external_id,
        "author_customer_id": customer_id,
        "is_public": True,
        "is_automatic": False,
        "subject": inbound.subject,
        "text": inbound.text or "",
        "reply_text": inbound.reply_text,
        "address": sender.value,
        "created_at": inbound.received_at or now,
    })
    actor_label = customer_name or sender.value
    reason = _continues_conversation_reason(inbound)
    record_event_row(ticket_id, "message.received",
                     {"message_id": message_id, "channel": str(inbound.channel), "external_id": inbound.external_id},
                     reason=reason, customer_id=customer_id, actor_label=actor_label)
    publish_after_commit(db.session(), "message.created", {
        "ticket": ticket_number, "message_id": message_id, "subject": ticket_subject, "customer": actor_label,
        "channel": str(inbound.channel),
    })
    return IngestResult(message_id, ticket_id, False, False, reason), config


def _ingest_once(inbound: InboundMessage, before_commit: BeforeCommit | None,
                 triage_config: TriageConfig | None) -> IngestResult:
    sender = normalize_identity(inbound.sender)
    # One customer's messages are threaded one at a time (the customer's row locked), so two texts arriving
    # together cannot both open a ticket.
    customer = resolve_customer(sender, inbound.other_identities, lock=True)
    # Who wrote, for the audit trail and the inbox: the customer's name, else the identity they wrote from
    # (Customer.display_name would load all their identities for that).
    actor_label = customer.name or sender.value
    # Until the message is written, nothing read here depends on what is added here (a new customer, a ticket,
    # its events): the reads need not flush first, and all of it goes to the database in one flush.
    with db.session.no_autoflush:
        ticket, reason, is_new_ticket, clock_before = _thread_into_ticket(inbound, customer, actor_label)
        html = sanitize_html(inbound.html) if inbound.html else None
        text = inbound.text or (html_to_text(html) if html else "")
        values = {
            "direction": Direction.INBOUND,
            "channel": inbound.channel,
            "dedupe_key": inbound.dedupe_key,
            "external_id": inbound.external_id,
            "is_public": True,
            "is_automatic": inbound.is_automatic,
            "subject": inbound.subject,
            "text": text,
            "reply_text": inbound.reply_text,
            "html": html,
            "address": sender.value,
            "created_at": inbound.received_at or utcnow(),
        }
        if not is_new_ticket:  # a new one was inserted with these
            if not inbound.is_automatic:
                ticket.last_customer_message_at = utcnow()
            ticket.updated_at = utcnow()
        if ticket.id is None or customer.id is None:
            db.session.flush()  # the new ticket (and customer) get their ids
        # Inserted on its own, outside the unit of work: the commonest row by far, and the unique dedupe
        # key fails here, inside the transaction, if we lost a race. Nothing here reads it as an object;
        # IngestResult.message loads one for a caller that does.
        message_id = inserted_id(Message, {**values, "ticket_id": ticket.id, "author_customer_id": customer.id})
        attachments = [stored_attachment_values(data) for data in inbound.attachments]
        if attachments:
            # One statement for all of them.
            db.session.connection().execute(plain_insert(Attachment.__table__),
                                            [{**attachment, "message_id": message_id} for attachment in attachments])

    record_event(
        ticket,
        "message.received",
        {"message_id": message_id, "channel": str(inbound.channel), "external_id": inbound.external_id},
        reason=reason,
        customer=customer,
        actor_label=actor_label,
    )
    for attachment in attachments:
        if attachment["refused_reason"]:
            record_event(ticket, "attachment.refused",
                         {"filename": attachment["filename"], "size": attachment["size"]},
                         reason=attachment["refused_reason"], actor_label="system")
    # After the message is flushed (the next-response clock reads it), before the commit: one transaction.
    # What triage reads (the message, SLA pauses and alerts, agents) is flushed or untouched here, so its
    # queries need not flush the events and ticket changes above first: they go in with the commit.
    with db.session.no_autoflush:
        apply_triage(ticket, inbound, customer, on="create" if is_new_ticket else "customer_message",
                     config=triage_config, clock_inputs_before=clock_before)
    payload = {"ticket": ticket.number, "message_id": message_id, "subject": ticket.subject,
               "customer": actor_label, "channel": str(inbound.channel)}
    publish_after_commit(db.session(), "ticket.created" if is_new_ticket else "message.created", payload)
    return _before_commit(IngestResult(message_id, ticket.id, False, is_new_ticket, reason, loaded_ticket=ticket),
                          before_commit)


def _before_commit(result: IngestResult, before_commit: BeforeCommit | None) -> IngestResult:
    """Let `before_commit` add its writes to the new message's transaction."""
    if before_commit is not None:
        before_commit(result)
    return result


def _thread_into_ticket(
    inbound: InboundMessage, customer: Customer, actor_label: str
) -> tuple[Ticket, str, bool, tuple | None]:
    """Find or open the ticket `inbound` belongs to; return it, why, whether it is new, and the found ticket's
    clock_inputs() from before the message changed it."""
    ticket, reason = find_thread(inbound, customer)
    clock_before = clock_inputs(ticket) if ticket is not None else None
    is_new_ticket = False
    if ticket is not None and ticket.status == TicketStatus.CLOSED and not inbound.is_automatic:
        if is_within_reopen_window(ticket):
            days = current_app.config.get("HELPDESK_REOPEN_WINDOW_DAYS", 7)
            reopened = f"reopened: the customer wrote within {days} days of closing"
            change_field(ticket, "status", TicketStatus.OPEN, reason=reopened, actor_label=actor_label)
            reason = f"{reason}; {reopened}"
        else:
            closed = ticket
            reason = f"{reason}; #{closed.number} is closed, so a follow-up ticket was opened"
            ticket = _open_ticket_for(inbound, customer, reason, actor_label, follow_up_of_id=closed.id)
            is_new_ticket = True
    elif ticket is None:
        ticket = _open_ticket_for(inbound, customer, reason, actor_label)
        is_new_ticket = True
    else:
        _wake_ticket(ticket, inbound, actor_label)
    return ticket, reason, is_new_ticket, clock_before


def _open_ticket_for(inbound: InboundMessage, customer: Customer, reason: str, actor_label: str,
                     **columns) -> Ticket:
    # What the message sets on its new ticket goes into the ticket's INSERT, not an UPDATE right after it.
    # (Triage would set the language; set now, it only reads it.)
    if not inbound.is_automatic:
        columns["last_customer_message_at"] = utcnow()
    return open_ticket(customer, inbound.channel, _subject_for(inbound), reason=reason, actor_label=actor_label,
                       language=message_language(inbound), **columns)


def find_thread(inbound: InboundMessage, customer: Customer) -> tuple[Ticket | None, str]:
    """Return the ticket `inbound` continues and why, or (None, why a new one is opened)."""
    hints = inbound.thread
    if hints.reply_to_external_ids:
        ticket = _ticket_found_by(_ticket_of_known_message_query(),
                                  {"external_ids": list(hints.reply_to_external_ids)})
        if ticket is not None:
            return ticket, "replies to a known message of this ticket"
    if hints.ticket_number is not None:
        ticket = _ticket_found_by(_ticket_by_number_query(), {"number": hints.ticket_number})
        if ticket is not None and is_participant(ticket, customer):
            return ticket, f"names ticket #{ticket.number} and the sender takes part in it"
    if hints.join_open_ticket_on_channel and customer.id is not None:  # a customer new here has no ticket
        db.session.flush()  # the query filters and orders on the status and times of tickets changed just now
        ticket = db.session.scalar(_open_ticket_on_channel_query(),
                                   {"customer_id": customer.id, "channel": inbound.channel})
        if ticket is not None:
            return ticket, _continues_conversation_reason(inbound)
    return None, "no earlier conversation matched"


def _continues_conversation_reason(inbound: InboundMessage) -> str:
    return f"continues the customer's open {inbound.channel} conversation"


def is_within_reopen_window(ticket: Ticket, now: dt.datetime | None = None) -> bool:
    """Tell whether closed `ticket` was closed recently enough (HELPDESK_REOPEN_WINDOW_DAYS) to reopen."""
    days = current_app.config.get("HELPDESK_REOPEN_WINDOW_DAYS", 7)
    if ticket.closed_at is None or days <= 0:
        return False
    return (now or utcnow()) - ticket.closed_at <= dt.timedelta(days=days)


def is_participant(ticket: Ticket, customer: Customer) -> bool:
    """Tell whether `customer` owns `ticket` or has written on it."""
    if ticket.customer_id == customer.id:
        return True
    if customer.id is None:
        return False  # not stored yet, so has written nothing
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Message)
        .where(Message.ticket_id == ticket.id, Message.author_customer_id == customer.id)
    ) > 0


def _wake_ticket(ticket: Ticket, inbound: InboundMessage, actor_label: str) -> None:
    # The customer answered: a ticket waiting on them is back with the agents. Automatic mail
    # (out-of-office, bounces) never changes the status.
    if inbound.is_automatic:
        return
    if ticket.status in (TicketStatus.PENDING, TicketStatus.SOLVED):
        change_field(ticket, "status", TicketStatus.OPEN, reason="the customer wrote again",
                     actor_label=actor_label)


def _subject_for(inbound: InboundMessage) -> str:
    if inbound.subject and inbound.subject.strip():
        return inbound.subject.strip()
    first_line = (inbound.text or "").strip().splitlines()[0] if (inbound.text or "").strip() else ""
    if len(first_line) > 80:
        first_line = first_line[:77].rstrip() + "..."
    return first_line or f"New {inbound.channel} conversation"
