"""Raw email in: parse, drop our own mail, apply bounces, ingest, acknowledge; or quarantine.

Shared by pipe mode and the mailbox poller.
"""

from __future__ import annotations

import dataclasses
import logging

import sqlalchemy as sa
from flask import current_app

from channels.email.parse import parse_email
from channels.messages import ChannelName, DeliveryStatus, IdentityKind, InboundMessage, ThreadHints
from helpdesk.customers import normalize_identity
from helpdesk.database import begin_write, defer_inserts
from helpdesk.email_parsing import ParsingAhead
from helpdesk.extensions import db
from helpdesk.ingest import IngestResult, ingest_in_transaction, ingest_with
from helpdesk.models import CustomerIdentity, Direction, Message
from helpdesk.models.base import utcnow
from helpdesk.outbound import has_our_message_id_shape, queue_acknowledgement
from helpdesk.quarantine import quarantine
from helpdesk.tasks import enqueue
from helpdesk.tickets import record_event, take_ticket_numbers_in_blocks
from helpdesk.triage.engine import configured_languages
from helpdesk.triage.language import UnknownLanguage

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EmailIntake:
    """What became of one raw email."""

    result: IngestResult | None = None
    #: Why the message was deliberately not stored (our own mail coming back).
    dropped_reason: str | None = None
    quarantined_id: int | None = None
    #: An acknowledgement was committed to the outbox and waits for delivery.
    queued_reply: bool = False


def ingest_raw_email(raw: bytes, source: str) -> IngestResult | None:
    """Store one raw email; return None when it was dropped as a loop or quarantined."""
    return take_in_email(raw, source).result


def take_in_email(raw: bytes, source: str, *, deliver_now: bool = True,
                  inbound: InboundMessage | None = None) -> EmailIntake:
    """Take in one raw email; any failure keeps the bytes in quarantine and the caller moves on.

    A new ticket's acknowledgement is committed with the message; with `deliver_now` its delivery job is
    started at once, otherwise the caller starts it (once for many messages) when `queued_reply` says so.
    `inbound` is `raw` parsed already, if the caller has it.
    """
    try:
        return store_email(raw, source, deliver_now=deliver_now, inbound=inbound)
    except Exception as error:  # any failure, parser bug or database error alike, must keep the bytes
        row = quarantine(ChannelName.EMAIL, source, raw, error)
        return EmailIntake(quarantined_id=row.id)


def store_email(raw: bytes, source: str, *, deliver_now: bool = True,
                inbound: InboundMessage | None = None) -> EmailIntake:
    """take_in_email() without the quarantine: raises what fails (requeue-quarantined keeps the row then)."""
    if inbound is None:
        inbound = parse_email(raw)
    if is_own_outgoing(inbound):
        log.info("dropped our own outgoing mail %s that came back through %s", inbound.external_id, source)
        return EmailIntake(dropped_reason="our own outgoing mail came back")
    bounced = find_bounced_message(inbound)
    inbound = _filed_with_bounced(inbound, bounced)
    acknowledge = _Acknowledgement(inbound)
    result = ingest_with(inbound, before_commit=acknowledge)
    if inbound.is_bounce:
        # Also after a duplicate delivery: a crash between the two transactions must not lose the bounce.
        apply_bounce(inbound, bounced.id if bounced is not None else None)
    if acknowledge.queued and deliver_now:
        enqueue("deliver_outbox")
    return EmailIntake(result=result, queued_reply=acknowledge.queued)


class EmailBatch:
    """Takes in many polled emails per transaction; `commit()` makes them stored.

    A transaction per message cost more than most of the work in it (BEGIN, COMMIT, and on PostgreSQL a
    round trip and a WAL flush each). Mail that needs more than one transaction (a bounce, our own mail,
    mail that cannot be parsed) commits the batch and is taken in on its own. If anything in the batch fails,
    the batch is rolled back and each of its messages is taken in again on its own, as take_in_email()
    does: stored, or quarantined with its error. So one bad message costs its batch a retry, never a loss.
    """

    def __init__(self):
        self._held: list[tuple[bytes, str, InboundMessage]] = []
        #: How many acknowledgements were queued (committed or held in the batch).
        self.queued_replies = 0
        self._parsing = configured_parsing()

    def __len__(self) -> int:
        return len(self._held)

    def expect(self, raws: list[bytes]) -> None:
        """Start parsing the raw emails take_in() is handed next, in the parser process (see email_parsing).

        `raws` are all the bodies the poller holds and has not handed over yet: what an earlier call expected
        is kept for those still among them, and forgotten for the others (the poller dropped them).
        """
        self._parsing.keep_only(raws)
        self._parsing.add(raws)

    def take_in(self, raw: bytes, source: str) -> None:
        """Add one raw email to the batch, or take it in on its own when it cannot join one."""
        try:
            inbound = self._parsing.result(raw)
        except Exception as error:  # never parsed again: a message too slow to parse would hold up the mailbox
            self.commit()
            quarantine(ChannelName.EMAIL, source, raw, error)
            return
        if inbound.bounce is not None or has_our_message_id_shape(inbound.external_id):
            self.commit()
            self.queued_replies += take_in_email(raw, source, deliver_now=False, inbound=inbound).queued_reply
            return
        self._held.append((raw, source, inbound))
        acknowledge = _Acknowledgement(inbound)
        try:
            begin_write()
            # The batch's events and outbox rows go in with one statement per table at its commit, and its
            # new tickets take their numbers a block at a time.
            defer_inserts()
            take_ticket_numbers_in_blocks()
            # The poller downloads no message whose Message-ID is stored: a duplicate is rare enough to fail
            # the batch (its unique key does), which then stores each message on its own.
            ingest_in_transaction(inbound, before_commit=acknowledge, check_stored=False)
        except Exception as error:
            log.warning("a batch of %d emails failed at %s (%s); storing each on its own",
                        len(self._held), source, error)
            self._one_by_one()
            return
        self.queued_replies += acknowledge.queued

    def commit(self) -> None:
        """Commit the batch; if that fails, take each of its emails in on its own."""
        if not self._held:
            return
        try:
            db.session.commit()
        except Exception as error:
            log.warning("committing %d emails failed (%s); storing each on its own", len(self._held), error)
            self._one_by_one()
            return
        self._held.clear()

    def _one_by_one(self) -> None:
        db.session.rollback()
        held, self._held = self._held, []
        for raw, source, inbound in held:
            self.queued_replies += take_in_email(raw, source, deliver_now=False, inbound=inbound).queued_reply


def _filed_with_bounced(inbound: InboundMessage, bounced: Message | None) -> InboundMessage:
    if bounced is None:
        return inbound
    # File the report with the conversation it is about, never as a new customer's ticket.
    return dataclasses.replace(
        inbound, is_automatic=True, thread=ThreadHints(reply_to_external_ids=(bounced.external_id,)))


def configured_parsing() -> ParsingAhead:
    """Parser processes as configured (HELPDESK_EMAIL_PARSER_PROCESSES), with their deadline for a message."""
    config = current_app.config
    return ParsingAhead(config.get("HELPDESK_EMAIL_PARSER_PROCESSES", 1), languages_to_detect(),
                        config.get("HELPDESK_EMAIL_PARSE_TIMEOUT_SECONDS", 60))


def languages_to_detect() -> tuple[str, ...]:
    """The configured languages; none when the setting is wrong (ingest logs that where it detects)."""
    try:
        return configured_languages()
    except UnknownLanguage:
        return ()


class _Acknowledgement:
    """The before-commit step that queues a new ticket's acknowledgement in the message's own transaction, so
    a crash can never store the ticket and lose its acknowledgement."""

    def __init__(self, inbound: InboundMessage):
        self.inbound = inbound
        self.queued = False

    def __call__(self, result: IngestResult) -> None:
        if result.is_new_ticket and not self.inbound.is_automatic:
            address = normalize_identity(self.inbound.sender).value  # as the message stored it
            self.queued = queue_acknowledgement(result.ticket, self.inbound.channel, address) is not None


def is_own_outgoing(inbound: InboundMessage) -> bool:
    """Tell whether `inbound` is a message we sent ourselves (a loop through an alias, list or Cc)."""
    if not has_our_message_id_shape(inbound.external_id):
        return False  # not an id we give out: no need to look
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Message)
        .where(Message.external_id == inbound.external_id, Message.direction == Direction.OUTBOUND)
    ) > 0


def find_bounced_message(inbound: InboundMessage) -> Message | None:
    """Return our outgoing message a delivery-status report is about, when it names one we know."""
    report = inbound.bounce
    if report is None or not report.original_message_id:
        return None
    return db.session.scalar(
        sa.select(Message).where(
            Message.external_id == report.original_message_id, Message.direction == Direction.OUTBOUND
        )
    )


def apply_bounce(inbound: InboundMessage, bounced_message_id: int | None) -> None:
    """Mark the bounced reply failed with the reason, and each failed address as bouncing; idempotent."""
    begin_write()
    report = inbound.bounce
    failed = [r for r in report.recipients if r.action == "failed" or (r.status or "").startswith("5")]
    if not failed and report.recipient and report.is_failure:
        failed = [report]
    reason = "; ".join(
        " ".join(part for part in (r.recipient, r.status, r.diagnostic_code) if part) for r in failed
    )[:500] or "delivery failed"
    now = utcnow()
    for recipient in failed:
        address = (recipient.recipient or "").strip().lower()
        identity = db.session.scalar(
            sa.select(CustomerIdentity).where(
                CustomerIdentity.kind == IdentityKind.EMAIL, CustomerIdentity.value == address
            )
        )
        if identity is not None and identity.bouncing_since is None:
            identity.bouncing_since = now
            identity.bounce_reason = reason
    if bounced_message_id is not None:
        message = db.session.get(Message, bounced_message_id)
        if message.delivery_status is not DeliveryStatus.FAILED:
            message.delivery_status = DeliveryStatus.FAILED
            message.delivery_error = f"bounced: {reason}"[:1000]
            record_event(message.ticket, "delivery.bounced", {"message_id": message.id}, reason=reason)
    db.session.commit()
