"""Raw email in: parse, drop our own mail, apply bounces, ingest, acknowledge; or quarantine.

Shared by pipe mode and the mailbox poller.
"""

from __future__ import annotations

import dataclasses
import logging

import sqlalchemy as sa

from channels.email.parse import parse_email
from channels.messages import ChannelName, DeliveryStatus, IdentityKind, InboundMessage, ThreadHints
from helpdesk.database import begin_write
from helpdesk.extensions import db
from helpdesk.ingest import IngestResult, ingest_with
from helpdesk.models import CustomerIdentity, Direction, Message
from helpdesk.models.base import utcnow
from helpdesk.outbound import has_our_message_id_shape, queue_acknowledgement
from helpdesk.quarantine import quarantine
from helpdesk.tasks import enqueue
from helpdesk.tickets import record_event

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


def take_in_email(raw: bytes, source: str, *, deliver_now: bool = True) -> EmailIntake:
    """Take in one raw email; any failure keeps the bytes in quarantine and the caller moves on.

    A new ticket's acknowledgement is committed with the message; with `deliver_now` its delivery job is
    started at once, otherwise the caller starts it (once for many messages) when `queued_reply` says so.
    """
    try:
        inbound = parse_email(raw)
        if is_own_outgoing(inbound):
            log.info("dropped our own outgoing mail %s that came back through %s", inbound.external_id, source)
            return EmailIntake(dropped_reason="our own outgoing mail came back")
        bounced = find_bounced_message(inbound)
        if bounced is not None:
            # File the report with the conversation it is about, never as a new customer's ticket.
            inbound = dataclasses.replace(
                inbound, is_automatic=True, thread=ThreadHints(reply_to_external_ids=(bounced.external_id,))
            )
        acknowledgements: list[Message | None] = []

        def acknowledge_new_ticket(result: IngestResult) -> None:
            # In the message's own transaction: a crash can never store the ticket and lose its acknowledgement.
            if result.is_new_ticket and not inbound.is_automatic:
                acknowledgements.append(queue_acknowledgement(result.ticket, result.message))

        result = ingest_with(inbound, before_commit=acknowledge_new_ticket)
        if inbound.is_bounce:
            # Also after a duplicate delivery: a crash between the two transactions must not lose the bounce.
            apply_bounce(inbound, bounced.id if bounced is not None else None)
        queued = any(message is not None for message in acknowledgements)
        if queued and deliver_now:
            enqueue("deliver_outbox")
        return EmailIntake(result=result, queued_reply=queued)
    except Exception as error:  # any failure, parser bug or database error alike, must keep the bytes
        row = quarantine(ChannelName.EMAIL, source, raw, error)
        return EmailIntake(quarantined_id=row.id)


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
