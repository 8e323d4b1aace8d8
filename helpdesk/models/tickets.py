"""Tickets, their messages and attachments, and the audit trail of every change."""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from channels.messages import ChannelName, DeliveryStatus
from helpdesk.models.base import Base, Timestamped, enum_column, utcnow
from helpdesk.models.people import Agent, Group, Tier

if TYPE_CHECKING:
    from helpdesk.models.customers import Customer


class TicketStatus(enum.StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    ON_HOLD = "on_hold"
    SOLVED = "solved"
    CLOSED = "closed"

    @property
    def label(self) -> str:
        return self.value.replace("_", "-").capitalize()

    @property
    def is_active(self) -> bool:
        return self not in (TicketStatus.SOLVED, TicketStatus.CLOSED)


ACTIVE_STATUSES = tuple(status for status in TicketStatus if status.is_active)


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class TicketCounter(Base):
    """The next human ticket number; one row, incremented under a row lock."""

    __tablename__ = "ticket_counter"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    next_number: so.Mapped[int]


class Ticket(Base, Timestamped):
    __tablename__ = "ticket"
    __table_args__ = (
        sa.Index("ix_ticket_status_tier", "status", "tier"),
        sa.Index("ix_ticket_customer_channel_status", "customer_id", "channel", "status"),
        # The dashboard's response times read tickets answered or solved within a window.
        sa.Index("ix_ticket_first_responded_at", "first_responded_at"),
        sa.Index("ix_ticket_solved_at", "solved_at"),
        sa.Index("ix_ticket_closed_at", "closed_at"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    #: What agents and customers call the ticket ("#1042").
    number: so.Mapped[int] = so.mapped_column(unique=True)
    subject: so.Mapped[str] = so.mapped_column(sa.String(500), default="")
    #: The channel the customer first wrote on; replies go back on the channel of the last message.
    channel: so.Mapped[ChannelName] = so.mapped_column(enum_column(ChannelName))
    status: so.Mapped[TicketStatus] = so.mapped_column(enum_column(TicketStatus), default=TicketStatus.NEW)
    priority: so.Mapped[Priority] = so.mapped_column(enum_column(Priority), default=Priority.NORMAL)
    tier: so.Mapped[Tier] = so.mapped_column(enum_column(Tier), default=Tier.FIRST_LINE)
    customer_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("customer.id"), index=True)
    group_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("group.id", ondelete="SET NULL"))
    assignee_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("agent.id", ondelete="SET NULL"), index=True)
    #: ISO 639-1 code of the customer's language, when detected.
    language: so.Mapped[str | None] = so.mapped_column(sa.String(8))
    #: Comma-separated tags.
    tags: so.Mapped[str] = so.mapped_column(sa.String(500), default="")
    #: A follow-up ticket links to the closed one it continues.
    follow_up_of_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("ticket.id"))
    last_customer_message_at: so.Mapped[dt.datetime | None]
    last_agent_reply_at: so.Mapped[dt.datetime | None]
    solved_at: so.Mapped[dt.datetime | None]
    closed_at: so.Mapped[dt.datetime | None]

    # SLA fields, filled by the triage engine; indexed so sweeps only read tickets near their due time.
    sla_policy_name: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    first_response_due_at: so.Mapped[dt.datetime | None] = so.mapped_column(index=True)
    first_responded_at: so.Mapped[dt.datetime | None]
    next_response_due_at: so.Mapped[dt.datetime | None] = so.mapped_column(index=True)
    resolution_due_at: so.Mapped[dt.datetime | None] = so.mapped_column(index=True)
    sla_breached_at: so.Mapped[dt.datetime | None]
    #: The next moment the SLA sweep has something to check (a warning point or a due time); None while
    #: the clock is paused or no target is pending.
    sla_check_at: so.Mapped[dt.datetime | None] = so.mapped_column(index=True)

    customer: so.Mapped[Customer] = so.relationship(back_populates="tickets")
    group: so.Mapped[Group | None] = so.relationship()
    assignee: so.Mapped[Agent | None] = so.relationship(back_populates="assigned_tickets")
    messages: so.WriteOnlyMapped[Message] = so.relationship(
        back_populates="ticket", order_by="Message.id", passive_deletes=True
    )
    events: so.WriteOnlyMapped[TicketEvent] = so.relationship(
        back_populates="ticket", order_by="TicketEvent.id", passive_deletes=True
    )


class Message(Base):
    __tablename__ = "message"
    # The acknowledgement rate limit counts what one address sent lately.
    __table_args__ = (sa.Index("ix_message_address_created_at", "address", "created_at"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    ticket_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("ticket.id", ondelete="CASCADE"), index=True)
    direction: so.Mapped[Direction] = so.mapped_column(enum_column(Direction))
    channel: so.Mapped[ChannelName] = so.mapped_column(enum_column(ChannelName))
    #: Unique per source, so a message delivered twice is stored once.
    dedupe_key: so.Mapped[str] = so.mapped_column(sa.String(300), unique=True)
    #: The provider's id: Message-ID, MessageSid, chat client id.
    external_id: so.Mapped[str | None] = so.mapped_column(sa.String(300), index=True)
    author_customer_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("customer.id"))
    author_agent_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("agent.id", ondelete="SET NULL"))
    #: False for internal notes, which customers never see.
    is_public: so.Mapped[bool] = so.mapped_column(default=True)
    is_automatic: so.Mapped[bool] = so.mapped_column(default=False)
    subject: so.Mapped[str | None] = so.mapped_column(sa.String(500))
    text: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    #: Only the new part of the text, without quoted history and signature.
    reply_text: so.Mapped[str | None] = so.mapped_column(sa.Text)
    #: Sanitized with nh3 before it is stored; safe to render as HTML.
    html: so.Mapped[str | None] = so.mapped_column(sa.Text)
    #: The address it was sent to or from on its channel.
    address: so.Mapped[str | None] = so.mapped_column(sa.String(254))
    delivery_status: so.Mapped[DeliveryStatus | None] = so.mapped_column(enum_column(DeliveryStatus))
    delivery_error: so.Mapped[str | None] = so.mapped_column(sa.String(1000))
    created_at: so.Mapped[dt.datetime] = so.mapped_column(default=utcnow)
    #: Web chat: when the other side saw it (an agent, a visitor's message; the visitor, an agent's reply).
    read_at: so.Mapped[dt.datetime | None]

    ticket: so.Mapped[Ticket] = so.relationship(back_populates="messages")
    author_customer: so.Mapped[Customer | None] = so.relationship()
    author_agent: so.Mapped[Agent | None] = so.relationship()
    attachments: so.Mapped[list[Attachment]] = so.relationship(
        back_populates="message", cascade="all, delete-orphan", order_by="Attachment.id"
    )

    @property
    def author_name(self) -> str:
        if self.author_agent is not None:
            return self.author_agent.name
        if self.author_customer is not None:
            return self.author_customer.display_name
        return "System"


class Attachment(Base):
    __tablename__ = "attachment"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    message_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("message.id", ondelete="CASCADE"), index=True)
    filename: so.Mapped[str] = so.mapped_column(sa.String(255))
    content_type: so.Mapped[str] = so.mapped_column(sa.String(255))
    size: so.Mapped[int]
    #: Where the bytes live: a path under the attachment folder, or an object-storage key.
    storage_path: so.Mapped[str | None] = so.mapped_column(sa.String(500))
    sha256: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    content_id: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    is_inline: so.Mapped[bool] = so.mapped_column(default=False)
    #: Why the bytes were not kept (too large, forbidden type); the row still records that it existed.
    refused_reason: so.Mapped[str | None] = so.mapped_column(sa.String(500))
    #: Where the bytes can be fetched again when a download failed (a provider's media URL).
    source_url: so.Mapped[str | None] = so.mapped_column(sa.String(1000))
    fetch_attempts: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    #: When to try the download again; None once it succeeded or was given up.
    next_fetch_at: so.Mapped[dt.datetime | None] = so.mapped_column(index=True)

    message: so.Mapped[Message] = so.relationship(back_populates="attachments")


class SlaPause(Base):
    """A stretch during which a ticket's SLA clock stood still (pending or on hold)."""

    __tablename__ = "sla_pause"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    ticket_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("ticket.id", ondelete="CASCADE"), index=True)
    started_at: so.Mapped[dt.datetime]
    #: None while the ticket is still paused.
    ended_at: so.Mapped[dt.datetime | None]


class SlaAlert(Base):
    """A warning, escalation or breach the SLA sweep acted on; unique so each happens once per target."""

    __tablename__ = "sla_alert"
    __table_args__ = (sa.UniqueConstraint("ticket_id", "target", "kind"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    ticket_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("ticket.id", ondelete="CASCADE"))
    #: first_response, next_response or resolution.
    target: so.Mapped[str] = so.mapped_column(sa.String(32))
    #: warning, escalation or breach.
    kind: so.Mapped[str] = so.mapped_column(sa.String(32))
    #: The due time the alert was about; a new next-response due time is a new target.
    due_at: so.Mapped[dt.datetime]
    created_at: so.Mapped[dt.datetime] = so.mapped_column(default=utcnow)


class TicketEvent(Base):
    """One change to a ticket: who did what, when and why."""

    __tablename__ = "ticket_event"
    # Escalations per reason over a window, on the dashboard.
    __table_args__ = (sa.Index("ix_ticket_event_kind_created_at", "kind", "created_at"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    ticket_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("ticket.id", ondelete="CASCADE"), index=True)
    #: Past tense, dotted: "ticket.created", "message.received", "status.changed".
    kind: so.Mapped[str] = so.mapped_column(sa.String(64))
    actor_agent_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("agent.id", ondelete="SET NULL"))
    actor_customer_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("customer.id"))
    #: "system" when neither an agent nor a customer acted (a rule, the SLA sweep).
    actor_label: so.Mapped[str] = so.mapped_column(sa.String(100), default="system")
    #: What changed, e.g. {"field": "status", "old": "new", "new": "open"}.
    data: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    reason: so.Mapped[str | None] = so.mapped_column(sa.String(500))
    created_at: so.Mapped[dt.datetime] = so.mapped_column(default=utcnow)

    ticket: so.Mapped[Ticket] = so.relationship(back_populates="events")
    actor_agent: so.Mapped[Agent | None] = so.relationship()
