"""A ticket's SLA clock on the database: its pauses, its due times and when the sweep next looks at it.

The clock stands still while a ticket is pending or on hold. Each such stretch is an SlaPause row, so
a ticket that is reopened resumes where it stopped: its due times are recomputed from the clock's start
with every pause left out (helpdesk.triage.sla.due_at), and never move earlier than they were.

Targets, each with the moment its clock starts and the sign that it is met:

- first_response: from creation, met once first_responded_at is set;
- next_response: from the first customer message after the agents' last reply, met by a later reply;
- resolution: from creation, met when the ticket is solved or closed.

`sla_check_at` is the next moment the sweep has something to do for a ticket (a warning point, the
moment a breach is predicted, or a due time), so the sweep reads only the tickets whose moment came.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math

import sqlalchemy as sa
from flask import current_app

from helpdesk.extensions import db
from helpdesk.models import Direction, Message, SlaAlert, SlaPause, SlaPolicy, Ticket, TicketStatus
from helpdesk.models.base import utcnow
from helpdesk.triage.calendar import CalendarError
from helpdesk.triage.rules import PolicySpec, TriageConfigError, policy_from_dict
from helpdesk.triage.sla import Pause, due_at

log = logging.getLogger(__name__)

TARGETS = ("first_response", "next_response", "resolution")
DUE_COLUMNS = {
    "first_response": "first_response_due_at",
    "next_response": "next_response_due_at",
    "resolution": "resolution_due_at",
}
PAUSED_STATUSES = (TicketStatus.PENDING, TicketStatus.ON_HOLD)
#: Business minutes an agent typically needs to answer; less left than this on an unassigned ticket
#: predicts a breach (HELPDESK_SLA_TYPICAL_HANDLING_MINUTES overrides it).
DEFAULT_TYPICAL_HANDLING_MINUTES = 15


@dataclasses.dataclass(frozen=True)
class TargetClock:
    """One pending target of a ticket: its due time and the moments the sweep acts at."""

    target: str
    minutes: int
    started_at: dt.datetime
    due_at: dt.datetime
    warn_at: dt.datetime
    #: When an unassigned ticket is predicted to breach (less than the typical handling time left).
    predict_at: dt.datetime


def policy_of(ticket: Ticket) -> PolicySpec | None:
    """Return the ticket's SLA policy, or None if it has none (or it no longer reads)."""
    if not ticket.sla_policy_name:
        return None
    row = db.session.scalar(sa.select(SlaPolicy).where(SlaPolicy.name == ticket.sla_policy_name))
    if row is None:
        return None
    try:
        return policy_from_row(row)
    except TriageConfigError as error:
        log.error("SLA policy %r is skipped: %s", row.name, error)
        return None


def policy_from_row(row: SlaPolicy) -> PolicySpec:
    """Read a stored SLA policy back, every field (escalation too), validated as an imported one is."""
    data = {
        "name": row.name,
        "default": row.is_default,
        "calendar": row.calendar,
        "targets": row.targets or {},
        "warn_at_percent": row.warn_at_percent,
    }
    if row.escalation is not None:
        data["escalation"] = row.escalation
    return policy_from_dict(data, f"policy {row.name!r}")


def pauses_of(ticket: Ticket) -> list[Pause]:
    """Return the ticket's paused stretches, oldest first; the last has no end while still paused."""
    if ticket.id is None:
        return []
    rows = db.session.execute(
        sa.select(SlaPause.started_at, SlaPause.ended_at).where(SlaPause.ticket_id == ticket.id).order_by(SlaPause.id)
    )
    return [(started, ended) for started, ended in rows]


def is_met(ticket: Ticket, target: str) -> bool:
    """Tell whether the ticket has met `target` (or no longer needs to)."""
    if target == "first_response":
        return ticket.first_responded_at is not None
    if target == "next_response":
        replied, wrote = ticket.last_agent_reply_at, ticket.last_customer_message_at
        return replied is not None and (wrote is None or replied >= wrote)
    return not TicketStatus(ticket.status).is_active


def clock_start(ticket: Ticket, target: str) -> dt.datetime:
    """Return when the clock of `target` started for the ticket."""
    if target != "next_response" or ticket.last_agent_reply_at is None:
        return ticket.created_at or utcnow()
    first_unanswered = db.session.scalar(
        sa.select(sa.func.min(Message.created_at)).where(
            Message.ticket_id == ticket.id,
            Message.direction == Direction.INBOUND,
            Message.is_automatic.is_(False),
            Message.created_at > ticket.last_agent_reply_at,
        )
    )
    return first_unanswered or ticket.last_agent_reply_at


def pending_clocks(ticket: Ticket, policy: PolicySpec, pauses: list[Pause] | None = None) -> list[TargetClock]:
    """Return the clocks of the ticket's targets that have a due time and are not met yet."""
    if pauses is None:
        pauses = pauses_of(ticket)
    targets = policy.targets_for(str(ticket.priority))
    handling = typical_handling_minutes()
    clocks = []
    for target in TARGETS:
        due = getattr(ticket, DUE_COLUMNS[target])
        minutes = getattr(targets, target)
        if due is None or minutes is None or is_met(ticket, target):
            continue
        start = clock_start(ticket, target)
        warn_minutes = math.ceil(minutes * policy.warn_at_percent / 100)
        try:
            warn = _utc(due_at(start, warn_minutes, policy.calendar, pauses))
            predict = _utc(due_at(start, max(minutes - handling, 0), policy.calendar, pauses))
        except CalendarError:
            continue
        clocks.append(TargetClock(target, minutes, start, due, min(warn or due, due), min(predict or due, due)))
    return clocks


def schedule_check(ticket: Ticket, policy: PolicySpec | None = None, *, now: dt.datetime | None = None) -> None:
    """Set when the sweep should next look at the ticket: its earliest moment not yet acted on."""
    if policy is None:
        policy = policy_of(ticket)
    if policy is None or TicketStatus(ticket.status) in PAUSED_STATUSES or not TicketStatus(ticket.status).is_active:
        ticket.sla_check_at = None
        return
    done = alerts_of(ticket)
    moments = []
    for clock in pending_clocks(ticket, policy):
        acted = done.get(clock.target, set())
        if "warning" not in acted and "escalation" not in acted:
            moments.append(clock.warn_at)
        if "escalation" not in acted and ticket.assignee_id is None:
            moments.append(clock.predict_at)
        if "breach" not in acted:
            moments.append(clock.due_at)
    ticket.sla_check_at = min(moments) if moments else None


def alerts_of(ticket: Ticket) -> dict[str, set[str]]:
    """Return, per target, the alert kinds already acted on for the target's current due time."""
    if ticket.id is None:
        return {}
    done: dict[str, set[str]] = {}
    rows = db.session.execute(
        sa.select(SlaAlert.target, SlaAlert.kind, SlaAlert.due_at).where(SlaAlert.ticket_id == ticket.id)
    )
    for target, kind, alert_due in rows:
        if target == "next_response" and alert_due != ticket.next_response_due_at:
            continue  # an earlier wait, answered since; this one is a new target
        done.setdefault(target, set()).add(kind)
    return done


def pause(ticket: Ticket, now: dt.datetime) -> bool:
    """Stop the ticket's SLA clock at `now`; return False if it was already stopped."""
    if any(ended is None for _, ended in pauses_of(ticket)):
        return False
    if ticket.id is None:
        db.session.flush()
    db.session.add(SlaPause(ticket_id=ticket.id, started_at=now))
    ticket.sla_check_at = None
    return True


def resume(ticket: Ticket, now: dt.datetime) -> dict[str, tuple[dt.datetime | None, dt.datetime | None]]:
    """Restart the clock at `now` and move the due times later by the paused time; return what moved."""
    open_pause = db.session.scalar(
        sa.select(SlaPause).where(SlaPause.ticket_id == ticket.id, SlaPause.ended_at.is_(None))
    )
    if open_pause is None:
        return {}
    open_pause.ended_at = max(now, open_pause.started_at)
    db.session.flush()
    policy = policy_of(ticket)
    if policy is None:
        return {}
    moved = recompute_due_times(ticket, policy)
    schedule_check(ticket, policy, now=now)
    return moved


def recompute_due_times(
    ticket: Ticket, policy: PolicySpec
) -> dict[str, tuple[dt.datetime | None, dt.datetime | None]]:
    """Recompute the due times of unmet targets with the pauses left out; return {target: (old, new)}."""
    pauses = pauses_of(ticket)
    targets = policy.targets_for(str(ticket.priority))
    moved = {}
    for target in TARGETS:
        column = DUE_COLUMNS[target]
        old = getattr(ticket, column)
        minutes = getattr(targets, target)
        if old is None or minutes is None or is_met(ticket, target):
            continue
        try:
            new = _utc(due_at(clock_start(ticket, target), minutes, policy.calendar, pauses))
        except CalendarError as error:
            log.error("SLA policy %r gives no due time: %s", policy.name, error)
            continue
        # Adding a pause can only delay a due time; never let a recomputation pull one earlier.
        new = old if new is None else max(old, new)
        if new != old:
            setattr(ticket, column, new)
            moved[target] = (old, new)
    return moved


def typical_handling_minutes() -> int:
    """Return the business minutes an agent typically needs, from the config or the default."""
    return int(current_app.config.get("HELPDESK_SLA_TYPICAL_HANDLING_MINUTES") or DEFAULT_TYPICAL_HANDLING_MINUTES)


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.astimezone(dt.UTC)
