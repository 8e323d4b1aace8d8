"""Channel accounts, the outbox, webhooks waiting for ingest, and messages kept aside because they could not be ingested."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from channels.messages import ChannelName
from helpdesk.models.base import Base, Timestamped, enum_column, utcnow
from helpdesk.security import EncryptedJSON


class ChannelAccount(Base, Timestamped):
    """A configured connection to an outside system (a mailbox, a Twilio account)."""

    __tablename__ = "channel_account"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    channel: so.Mapped[ChannelName] = so.mapped_column(enum_column(ChannelName))
    name: so.Mapped[str] = so.mapped_column(sa.String(100), unique=True)
    is_enabled: so.Mapped[bool] = so.mapped_column(default=True)
    #: Non-secret settings (host, port, folder, sending number).
    settings: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    #: Passwords and tokens, encrypted at rest with the configured key.
    secrets: so.Mapped[dict[str, Any]] = so.mapped_column(EncryptedJSON, default=dict)
    #: Set when the account keeps failing (login refused); shown to admins, not retried in a loop.
    unhealthy_since: so.Mapped[dt.datetime | None]
    last_error: so.Mapped[str | None] = so.mapped_column(sa.String(1000))


class MailboxCursor(Base):
    """Where polling of one mailbox folder stands, and which worker holds it right now."""

    __tablename__ = "mailbox_cursor"
    __table_args__ = (sa.UniqueConstraint("account_id", "folder"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    account_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("channel_account.id", ondelete="CASCADE"))
    folder: so.Mapped[str] = so.mapped_column(sa.String(200), default="INBOX")
    #: The folder's UIDVALIDITY when last_uid was read; a change means every UID was renumbered.
    uid_validity: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    #: Highest UID whose message is committed (or deliberately skipped).
    last_uid: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    #: A lease instead of a long transaction, so two workers never poll one mailbox at once on any database.
    lease_owner: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    lease_until: so.Mapped[dt.datetime | None]
    consecutive_failures: so.Mapped[int] = so.mapped_column(default=0)
    #: Backoff after failures: no poll before this moment.
    next_attempt_at: so.Mapped[dt.datetime | None]
    last_polled_at: so.Mapped[dt.datetime | None]


class OutboxState(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class OutboxItem(Base):
    """A message waiting to be sent, written in the same transaction as the message itself."""

    __tablename__ = "outbox_item"
    __table_args__ = (sa.Index("ix_outbox_item_state_next_attempt_at", "state", "next_attempt_at"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    message_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("message.id", ondelete="CASCADE"), unique=True)
    state: so.Mapped[OutboxState] = so.mapped_column(enum_column(OutboxState), default=OutboxState.PENDING)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    next_attempt_at: so.Mapped[dt.datetime] = so.mapped_column(default=utcnow)
    #: A worker that claimed the item; a claim older than the lease is taken over.
    claimed_at: so.Mapped[dt.datetime | None]
    last_error: so.Mapped[str | None] = so.mapped_column(sa.String(1000))
    created_at: so.Mapped[dt.datetime] = so.mapped_column(default=utcnow)


class InboundQueueItem(Base):
    """A signed webhook stored as it came, committed before the sender gets its 200; ingested soon after.

    The webhook answers as soon as this row is committed, so a burst of texts or a slow media download never
    keeps the sender waiting (Twilio gives up after 15 seconds and delivers again). A job ingests the rows in
    the order they came and deletes each in the transaction that stores its message.
    """

    __tablename__ = "inbound_queue_item"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    #: The message's dedupe key: a redelivery while the first copy waits here adds no second row.
    dedupe_key: so.Mapped[str] = so.mapped_column(sa.String(300), unique=True)
    #: What reads `payload`: "twilio" (the url-encoded form, as Twilio posted it).
    source: so.Mapped[str] = so.mapped_column(sa.String(40))
    payload: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary)
    received_at: so.Mapped[dt.datetime] = so.mapped_column(default=utcnow)
    #: Taken by a worker until then; a worker that died lets it go when the lease ends.
    claimed_until: so.Mapped[dt.datetime | None] = so.mapped_column(index=True)
    attempts: so.Mapped[int] = so.mapped_column(default=0)


class QuarantinedMessage(Base):
    """Raw input that could not be ingested, kept with its error so nothing is lost."""

    __tablename__ = "quarantined_message"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    channel: so.Mapped[ChannelName] = so.mapped_column(enum_column(ChannelName))
    #: Where it came from: a mailbox name, "pipe", a webhook route.
    source: so.Mapped[str] = so.mapped_column(sa.String(200))
    raw: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary)
    error: so.Mapped[str] = so.mapped_column(sa.Text)
    attempts: so.Mapped[int] = so.mapped_column(default=1)
    created_at: so.Mapped[dt.datetime] = so.mapped_column(default=utcnow)
    resolved_at: so.Mapped[dt.datetime | None]
