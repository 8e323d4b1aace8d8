"""Input that could not be ingested is kept, with its error, for admins to see and re-run."""

from __future__ import annotations

import logging
import traceback

import sqlalchemy as sa

from channels.messages import ChannelName
from helpdesk.extensions import db
from helpdesk.models import QuarantinedMessage
from helpdesk.models.base import utcnow

log = logging.getLogger(__name__)


def quarantine(channel: ChannelName, source: str, raw: bytes, error: BaseException | str) -> QuarantinedMessage:
    """Store `raw` with the reason it failed, in a transaction of its own."""
    db.session.rollback()  # whatever the failed attempt half-wrote must not be committed with this
    if isinstance(error, BaseException):
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    else:
        detail = error
    row = QuarantinedMessage(channel=channel, source=source[:200], raw=raw, error=detail)
    db.session.add(row)
    db.session.commit()
    log.warning("quarantined a %s message from %s: %s", channel, source, detail)
    return row


def unresolved_quarantine() -> list[QuarantinedMessage]:
    return list(
        db.session.scalars(
            sa.select(QuarantinedMessage)
            .where(QuarantinedMessage.resolved_at.is_(None))
            .order_by(QuarantinedMessage.id)
        )
    )


def mark_resolved(row: QuarantinedMessage) -> None:
    row.resolved_at = utcnow()
    db.session.commit()


def record_failed_retry(row: QuarantinedMessage, error: BaseException) -> None:
    db.session.rollback()
    row.attempts += 1
    row.error = "".join(traceback.format_exception_only(type(error), error)).strip()
    db.session.commit()
