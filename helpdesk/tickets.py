"""Ticket operations shared by ingest, agents and jobs: numbering, the audit trail, status changes."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from helpdesk.database import TransactionState, insert_loaded, insert_row
from helpdesk.extensions import db
from helpdesk.models import (
    Agent,
    Customer,
    Direction,
    Message,
    Priority,
    Ticket,
    TicketCounter,
    TicketEvent,
    TicketStatus,
    Tier,
)
from helpdesk.models.base import utcnow
from helpdesk.realtime import publish_after_commit
from helpdesk.triage import clock

#: Why a first-line agent hands a ticket to the second line; counted on the dashboard.
ESCALATION_REASONS = ("technical", "billing_dispute", "bug", "customer_request", "other")

FIRST_TICKET_NUMBER = 1001


#: How many ticket numbers a transaction that opens many tickets takes at once (take_ticket_numbers_in_blocks).
TICKET_NUMBER_BLOCK = 50


def next_ticket_number() -> int:
    """Take the next human ticket number inside the current transaction."""
    block = _NumberBlock.of(db.session())
    if block is None:
        return _take_ticket_numbers(1) - 1
    if block.next == block.end:
        block.end = _take_ticket_numbers(TICKET_NUMBER_BLOCK)
        block.next = block.end - TICKET_NUMBER_BLOCK
    block.next += 1
    return block.next - 1


def take_ticket_numbers_in_blocks() -> None:
    """Let the session's open transaction take ticket numbers TICKET_NUMBER_BLOCK at a time.

    One UPDATE of the counter per block instead of one per ticket. The numbers the transaction has not used
    are given back when it commits (no other writer can have taken any meanwhile: the counter's row, or on
    SQLite the database, is locked until then), so numbers stay without gaps.
    """
    _NumberBlock.of(db.session(), start=True)


class _NumberBlock(TransactionState):
    key = "helpdesk.ticket_number_block"

    def __init__(self, transaction: orm.SessionTransaction):
        super().__init__(transaction)
        #: The next number to hand out, and one past the last number taken.
        self.next = self.end = 0

    def snapshot(self) -> tuple[int, int]:
        return self.next, self.end

    def restore(self, snapshot: tuple[int, int]) -> None:
        self.next, self.end = snapshot

    def before_commit(self, session: orm.Session) -> None:
        if self.next == self.end:
            return
        counter = TicketCounter.__table__
        session.connection().execute(
            sa.update(counter)
            .where(counter.c.id == 1, counter.c.next_number == self.end)
            .values(next_number=counter.c.next_number - (self.end - self.next))
        )
        self.next = self.end


def _take_ticket_numbers(count: int) -> int:
    """Take `count` numbers from the counter; return one past the last of them."""
    end = db.session.scalar(_take_ticket_numbers_statement(), {"count": count})
    if end is None:
        raise RuntimeError("the ticket counter row is missing: run `flask --app wsgi db upgrade`")
    return end


@functools.cache
def _take_ticket_numbers_statement() -> sa.Update:
    # UPDATE ... RETURNING locks the counter row, so concurrent creators get distinct numbers. Built once:
    # every new ticket runs it, and building it cost more than running it.
    return (
        sa.update(TicketCounter)
        .where(TicketCounter.id == 1)
        .values(next_number=TicketCounter.next_number + sa.bindparam("count"))
        .returning(TicketCounter.next_number)
        # No counter object is ever loaded: nothing in the session to bring up to date.
        .execution_options(synchronize_session=False)
    )


def record_event(
    ticket: Ticket,
    kind: str,
    data: dict[str, Any] | None = None,
    *,
    reason: str | None = None,
    agent: Agent | None = None,
    customer: Customer | None = None,
    actor_label: str | None = None,
) -> None:
    """Add one audit-trail entry to `ticket`; the caller commits."""
    if actor_label is None:
        actor_label = agent.name if agent else (customer.display_name if customer else "system")
    agent_id = agent.id if agent else None
    customer_id = customer.id if customer else None
    session = db.session()
    if ticket.id is not None and not session.new:
        # Nothing is waiting to be inserted before it, so its id keeps the timeline's order: written at once,
        # the unit of work's cost saved.
        record_event_row(ticket.id, kind, data, reason=reason, agent_id=agent_id, customer_id=customer_id,
                         actor_label=actor_label)
        return
    # A new ticket is referred to through the relationship, so the flush inserts it first.
    session.add(TicketEvent(ticket=ticket, kind=kind, data=data or {}, reason=reason, actor_agent_id=agent_id,
                            actor_customer_id=customer_id, actor_label=actor_label[:100]))


def record_event_row(ticket_id: int, kind: str, data: dict[str, Any] | None = None, *, reason: str | None = None,
                     agent_id: int | None = None, customer_id: int | None = None, actor_label: str = "system") -> None:
    """Insert one audit-trail entry as a plain INSERT on the transaction's connection (which flushes nothing),
    at once or with the transaction's deferred inserts; the caller commits. record_event() is the usual way:
    this is for writers that hold no objects."""
    insert_row(TicketEvent.__table__, {
        "ticket_id": ticket_id, "kind": kind, "data": data or {}, "reason": reason, "actor_agent_id": agent_id,
        "actor_customer_id": customer_id, "actor_label": actor_label[:100],
    })


def open_ticket(customer: Customer, channel, subject: str, *, reason: str, actor_label: str | None = None,
                **columns) -> Ticket:
    """Create a new ticket with defaults (first line, normal priority) and its creation event.

    `columns` are further values to insert it with (a caller that would set them right after saves an UPDATE).
    """
    if customer.id is None:
        db.session.flush()  # the new customer gets its id
    # Inserted at once, outside the unit of work: a flush for it cost more than the rest of opening it.
    ticket = insert_loaded(Ticket, {
        "number": next_ticket_number(),
        "subject": subject[:500],
        "channel": channel,
        "status": TicketStatus.NEW,
        "priority": Priority.NORMAL,
        "tier": Tier.FIRST_LINE,
        "customer_id": customer.id,
        **columns,
    })
    record_event(ticket, "ticket.created", {"channel": str(channel)}, reason=reason, customer=customer,
                 actor_label=actor_label)
    return ticket


def change_field(ticket: Ticket, field: str, value, *, agent: Agent | None = None, reason: str | None = None,
                 actor_label: str | None = None, now: dt.datetime | None = None) -> bool:
    """Set one of the ticket's triage fields and record the change; return False if it was unchanged."""
    old = getattr(ticket, field)
    if old == value:
        return False
    setattr(ticket, field, value)
    now = now or utcnow()
    if field == "status":
        if value == TicketStatus.SOLVED:
            ticket.solved_at = now
        elif value == TicketStatus.CLOSED:
            ticket.closed_at = ticket.closed_at or now
        else:
            ticket.solved_at = None
            ticket.closed_at = None
    record_event(
        ticket,
        f"{field}.changed",
        {"field": field, "old": _plain(old), "new": _plain(value)},
        reason=reason,
        agent=agent,
        actor_label=actor_label,
    )
    publish_after_commit(db.session(), "ticket.updated",
                         {"ticket": ticket.number, "field": field, "new": _plain(value)})
    if field == "status":
        _follow_status_with_sla_clock(ticket, old, value, now=now, agent=agent)
    return True


def _follow_status_with_sla_clock(ticket: Ticket, old, new, *, now: dt.datetime, agent: Agent | None) -> None:
    """Pause the SLA clock while pending or on hold; resume it, due times moved later, when the ticket leaves."""
    was_paused = old is not None and TicketStatus(old) in clock.PAUSED_STATUSES
    is_paused = TicketStatus(new) in clock.PAUSED_STATUSES
    if is_paused and not was_paused:
        if clock.pause(ticket, now):
            record_event(ticket, "sla.paused", {"status": str(new)}, reason=f"ticket is {new}", agent=agent)
    elif was_paused and not is_paused:
        moved = clock.resume(ticket, now)
        if moved:
            data = {target: {"old": old_due.isoformat(), "new": new_due.isoformat()}
                    for target, (old_due, new_due) in moved.items()}
            record_event(ticket, "sla.resumed", {"moved": data},
                         reason="due times moved later by the time the clock stood still", agent=agent)
        else:
            record_event(ticket, "sla.resumed", {}, reason=f"ticket left {old}", agent=agent)
        if TicketStatus(new).is_active:
            return
    if not TicketStatus(new).is_active:
        ticket.sla_check_at = None
    elif old is not None and not TicketStatus(old).is_active and not is_paused:
        clock.schedule_check(ticket, now=now)


def escalate_to_second_line(ticket: Ticket, agent: Agent, reason_code: str, note: str = "") -> None:
    """Hand the ticket to the second line for `reason_code` (one of ESCALATION_REASONS); the caller commits."""
    if reason_code not in ESCALATION_REASONS:
        raise ValueError(f"unknown escalation reason {reason_code!r}; use one of {', '.join(ESCALATION_REASONS)}")
    if ticket.tier == Tier.SECOND_LINE:
        raise ValueError(f"#{ticket.number} is already with the second line")
    reason = f"{reason_code}: {note}" if note else reason_code
    change_field(ticket, "tier", Tier.SECOND_LINE, agent=agent, reason=reason[:500])
    record_event(ticket, "ticket.escalated", {"reason_code": reason_code, "note": note, "by": "agent"},
                 reason=reason[:500], agent=agent)


def hand_back_to_first_line(ticket: Ticket, agent: Agent, note: str = "") -> None:
    """Return the ticket from the second line to the first line; the caller commits."""
    if ticket.tier == Tier.FIRST_LINE:
        raise ValueError(f"#{ticket.number} is already with the first line")
    reason = note[:500] or "handed back to the first line"
    change_field(ticket, "tier", Tier.FIRST_LINE, agent=agent, reason=reason)
    record_event(ticket, "ticket.handed_back", {"note": note}, reason=reason, agent=agent)


def escalations_by_reason(since: dt.datetime) -> dict[str, int]:
    """Count the agents' escalations to the second line since `since`, per reason code."""
    reason_code = TicketEvent.data["reason_code"].as_string()
    rows = db.session.execute(
        sa.select(reason_code, sa.func.count())
        .where(TicketEvent.kind == "ticket.escalated", TicketEvent.created_at >= since)
        .group_by(reason_code)
    )
    return {code: count for code, count in rows}


def _plain(value):
    if hasattr(value, "id") and hasattr(value, "__tablename__"):
        return value.id
    return None if value is None else str(value)


class MoveRefused(ValueError):
    """A message cannot be moved as asked; the message says why."""


def move_message(message: Message, target: Ticket, agent: Agent, *, reason: str | None = None) -> None:
    """Move a misfiled message to `target`, recording the move on both tickets; the caller commits."""
    source = message.ticket
    if target.id == source.id:
        raise MoveRefused(f"the message is already on #{source.number}")
    message.ticket = target
    data = {"message_id": message.id, "from": source.number, "to": target.number}
    record_event(source, "message.moved_out", data, reason=reason, agent=agent)
    record_event(target, "message.moved_in", data, reason=reason, agent=agent)
    now = utcnow()
    source.updated_at = target.updated_at = now
    if message.direction == Direction.INBOUND and not message.is_automatic:
        target.last_customer_message_at = max(filter(None, [target.last_customer_message_at, message.created_at]))
    for ticket in (source, target):
        publish_after_commit(db.session(), "ticket.updated", {"ticket": ticket.number, "field": "messages"})


def split_message(message: Message, agent: Agent, *, reason: str | None = None) -> Ticket:
    """Open a new ticket for the message's customer and move the message there; the caller commits."""
    source = message.ticket
    customer = message.author_customer or source.customer
    subject = message.subject or source.subject
    ticket = open_ticket(customer, message.channel, subject,
                         reason=f"split from #{source.number}" + (f": {reason}" if reason else ""))
    ticket.priority = source.priority
    ticket.tier = source.tier
    ticket.group_id = source.group_id
    db.session.flush()
    move_message(message, ticket, agent, reason=reason or "split into a new ticket")
    return ticket
