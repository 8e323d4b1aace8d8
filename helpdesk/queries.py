"""Read-side queries for pages and the API; no writes here."""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa
from flask import abort
from flask_login import current_user

from helpdesk.extensions import db
from helpdesk.models import Message, Ticket, TicketEvent, TicketStatus, Tier


@dataclasses.dataclass(frozen=True)
class TicketFilter:
    statuses: tuple[TicketStatus, ...] = ()
    tier: Tier | None = None
    customer_id: int | None = None
    assignee_id: int | None = None
    updated_since: dt.datetime | None = None


def ticket_query(filters: TicketFilter) -> sa.Select:
    """Return a SELECT of tickets matching `filters`, most recently updated first."""
    query = sa.select(Ticket)
    if filters.statuses:
        query = query.where(Ticket.status.in_(filters.statuses))
    if filters.tier is not None:
        query = query.where(Ticket.tier == filters.tier)
    if filters.customer_id is not None:
        query = query.where(Ticket.customer_id == filters.customer_id)
    if filters.assignee_id is not None:
        query = query.where(Ticket.assignee_id == filters.assignee_id)
    if filters.updated_since is not None:
        query = query.where(Ticket.updated_at >= filters.updated_since)
    return query.order_by(Ticket.updated_at.desc(), Ticket.id.desc())


def get_ticket_or_404(number: int) -> Ticket:
    """Load a ticket by its human number for the current agent, or answer 404."""
    ticket = db.session.scalar(sa.select(Ticket).where(Ticket.number == number))
    if ticket is None:
        abort(404, f"There is no ticket #{number}.")
    return ticket


def ticket_messages(ticket: Ticket, *, include_internal: bool = True) -> list[Message]:
    query = sa.select(Message).where(Message.ticket_id == ticket.id)
    if not include_internal:
        query = query.where(Message.is_public.is_(True))
    return list(db.session.scalars(query.order_by(Message.created_at, Message.id)))


def ticket_events(ticket: Ticket) -> list[TicketEvent]:
    return list(
        db.session.scalars(sa.select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id))
    )


def inbox_counts() -> dict[str, int]:
    """Return the number of tickets per status, for the inbox's filter bar."""
    rows = db.session.execute(sa.select(Ticket.status, sa.func.count()).group_by(Ticket.status))
    counts = {status.value: 0 for status in TicketStatus}
    counts.update({status.value: count for status, count in rows})
    return counts


def current_agent_id() -> int | None:
    return current_user.id if current_user.is_authenticated else None
