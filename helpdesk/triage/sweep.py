"""The SLA sweep: warn before a target runs out, escalate when it is breached or predicted to be.

For each pending target of a ticket (see helpdesk.triage.clock), once each:

- warning: at the policy's warn_at_percent of the target, a "sla.warning" event;
- escalation: at the due time, or earlier when the breach is predicted (nobody is assigned and less
  business time is left than an agent typically needs, HELPDESK_SLA_TYPICAL_HANDLING_MINUTES, 15 by
  default), the policy's escalation is applied (SlaPolicy.escalation; by default the ticket moves to
  the second line and its priority goes up one step), an "sla.escalated" event records why, and (unless
  the policy says not to notify) the leads of the ticket's tier and its assignee hear "sla.escalated"
  in their own rooms;
- breach: at the due time, sla_breached_at is set to the due time (the first breach only) and a
  "sla.breached" event is written.

What was done is kept in SlaAlert rows, so running the sweep again does nothing new. The sweep reads
only tickets whose `sla_check_at` has come (an indexed column), so its cost follows the tickets near
their due time, not all tickets.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from helpdesk.extensions import db
from helpdesk.models import Agent, Priority, Role, SlaAlert, Ticket, TicketStatus, Tier
from helpdesk.models.base import utcnow
from helpdesk.realtime import publish_after_commit
from helpdesk.tickets import change_field, record_event
from helpdesk.triage.clock import (
    PAUSED_STATUSES,
    TargetClock,
    alerts_of,
    pending_clocks,
    policy_of,
    schedule_check,
)
from helpdesk.triage.rules import PolicySpec

ACTOR = "SLA sweep"
#: Most tickets one run handles; the rest wait for the next run.
BATCH_SIZE = 500
RUNNING_STATUSES = tuple(status for status in TicketStatus if status.is_active and status not in PAUSED_STATUSES)
PRIORITY_ORDER = list(Priority)


def sweep_sla(now: dt.datetime | None = None, *, limit: int = BATCH_SIZE) -> int:
    """Warn, escalate and record breaches for tickets whose SLA check is due; return how many were touched."""
    now = now or utcnow()
    tickets = db.session.scalars(
        sa.select(Ticket)
        .where(Ticket.sla_check_at <= now, Ticket.status.in_(RUNNING_STATUSES))
        .order_by(Ticket.sla_check_at)
        .limit(limit)
        # Concurrent sweeps skip each other's tickets instead of acting twice (PostgreSQL).
        .with_for_update(skip_locked=True)
    ).all()
    touched = sum(1 for ticket in tickets if _sweep_ticket(ticket, now))
    db.session.commit()
    return touched


def _sweep_ticket(ticket: Ticket, now: dt.datetime) -> bool:
    policy = policy_of(ticket)
    if policy is None:
        ticket.sla_check_at = None
        return False
    done = alerts_of(ticket)
    acted = False
    for clock in pending_clocks(ticket, policy):
        kinds = done.get(clock.target, set())
        if now >= clock.due_at:
            if "breach" not in kinds:
                _record_breach(ticket, clock, now)
                acted = True
            if "escalation" not in kinds:
                _escalate(ticket, policy, clock, "was breached", now)
                acted = True
        elif "escalation" not in kinds and ticket.assignee_id is None and now >= clock.predict_at:
            _escalate(
                ticket, policy, clock, "is predicted to be breached: nobody is assigned and little time is left", now
            )
            acted = True
        elif "warning" not in kinds and "escalation" not in kinds and now >= clock.warn_at:
            _add_alert(ticket, clock, "warning")
            record_event(
                ticket,
                "sla.warning",
                {"target": clock.target, "due_at": clock.due_at.isoformat(), "at": now.isoformat()},
                reason=f"{policy.warn_at_percent}% of the {clock.target.replace('_', ' ')} target has passed",
                actor_label=ACTOR,
            )
            acted = True
    db.session.flush()
    schedule_check(ticket, policy, now=now)
    return acted


def _record_breach(ticket: Ticket, clock: TargetClock, now: dt.datetime) -> None:
    _add_alert(ticket, clock, "breach")
    if ticket.sla_breached_at is None:
        ticket.sla_breached_at = clock.due_at
    record_event(
        ticket,
        "sla.breached",
        {"target": clock.target, "due_at": clock.due_at.isoformat(), "at": now.isoformat()},
        reason=f"the {clock.target.replace('_', ' ')} target ran out",
        actor_label=ACTOR,
    )


def _escalate(ticket: Ticket, policy: PolicySpec, clock: TargetClock, why: str, now: dt.datetime) -> None:
    _add_alert(ticket, clock, "escalation")
    escalation = policy.escalation
    reason = f"the {clock.target.replace('_', ' ')} target {why}"
    if escalation.tier and ticket.tier != Tier(escalation.tier):
        change_field(ticket, "tier", Tier(escalation.tier), reason=reason, actor_label=ACTOR, now=now)
    if escalation.raise_priority:
        position = PRIORITY_ORDER.index(Priority(ticket.priority))
        if position + 1 < len(PRIORITY_ORDER):
            change_field(ticket, "priority", PRIORITY_ORDER[position + 1], reason=reason, actor_label=ACTOR, now=now)
    recipients = _recipients(ticket) if escalation.notify else []
    record_event(
        ticket,
        "sla.escalated",
        {
            "target": clock.target,
            "due_at": clock.due_at.isoformat(),
            "at": now.isoformat(),
            "tier": str(ticket.tier),
            "priority": str(ticket.priority),
            "notified": recipients,
        },
        reason=reason,
        actor_label=ACTOR,
    )
    payload = {
        "ticket": ticket.number,
        "subject": ticket.subject,
        "target": clock.target,
        "due_at": clock.due_at.isoformat(),
        "reason": reason,
        "tier": str(ticket.tier),
        "priority": str(ticket.priority),
    }
    for agent_id in recipients:
        publish_after_commit(db.session(), "sla.escalated", payload, room=f"agent:{agent_id}")


def _recipients(ticket: Ticket) -> list[int]:
    """Return the ids of the active leads of the ticket's tier and of its assignee."""
    leads = db.session.scalars(
        sa.select(Agent.id).where(Agent.role == Role.LEAD, Agent.tier == ticket.tier, Agent.is_active).order_by(Agent.id)
    ).all()
    recipients = list(leads)
    if ticket.assignee_id is not None and ticket.assignee_id not in recipients:
        recipients.append(ticket.assignee_id)
    return recipients


def _add_alert(ticket: Ticket, clock: TargetClock, kind: str) -> None:
    db.session.add(SlaAlert(ticket_id=ticket.id, target=clock.target, kind=kind, due_at=clock.due_at))
