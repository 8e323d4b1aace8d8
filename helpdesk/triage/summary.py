"""What triage did to one ticket, for its page: the rules that matched each time, the SLA policy and due times.

    summary = ticket_triage_summary(ticket)
    summary.runs[0].matched      # newest first: [{"rule": "VIP customers", "changes": {"tier": "second_line"}}]
    summary.targets[0].state     # "running", "paused", "overdue", "met", "met late" or "none"

Read from the "triage.applied" events the engine writes and from the ticket's SLA columns; writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa

from helpdesk.extensions import db
from helpdesk.models import Ticket, TicketEvent, TicketStatus
from helpdesk.models.base import utcnow
from helpdesk.triage.calendar import CalendarError
from helpdesk.triage.clock import DUE_COLUMNS, PAUSED_STATUSES, TARGETS, is_met, pauses_of, policy_of
from helpdesk.triage.rules import PolicySpec
from helpdesk.triage.sla import business_minutes_between

#: At most this many triage runs are listed on a ticket page, newest first.
MAX_RUNS = 20
TARGET_LABELS = {
    "first_response": "First response",
    "next_response": "Next response",
    "resolution": "Resolution",
}
RUN_LABELS = {"create": "on creation", "customer_message": "on a later customer message"}


@dataclasses.dataclass(frozen=True)
class TriageRun:
    """One pass of the rules over the ticket: when, on what, and which rules matched with their changes."""

    at: dt.datetime
    on: str
    matched: list[dict[str, Any]]
    stopped_by: str | None = None
    #: What a rule asked for that could not be done (a group that does not exist, nobody to assign).
    skipped: list[str] = dataclasses.field(default_factory=list)
    sla_policy: str | None = None
    language: str | None = None

    @property
    def label(self) -> str:
        return RUN_LABELS.get(self.on, self.on)


@dataclasses.dataclass(frozen=True)
class TargetState:
    """One SLA target of the ticket as it stands now."""

    target: str
    due_at: dt.datetime | None
    #: running, paused, overdue, met, met late, or none (no due time).
    state: str
    #: Business minutes left until the due time, while the clock runs.
    minutes_left: int | None = None
    met_at: dt.datetime | None = None

    @property
    def label(self) -> str:
        return TARGET_LABELS[self.target]


@dataclasses.dataclass(frozen=True)
class TicketTriageSummary:
    sla_policy: str | None
    #: The ticket names a policy that no longer exists (or no longer reads): nothing watches its clock.
    is_policy_missing: bool
    language: str | None
    runs: list[TriageRun]
    targets: list[TargetState]
    breached_at: dt.datetime | None
    #: When the clock stopped, while the ticket is pending or on hold.
    paused_since: dt.datetime | None


def ticket_triage_summary(ticket: Ticket, now: dt.datetime | None = None) -> TicketTriageSummary:
    """Return which rules matched the ticket and what they changed (newest first), its SLA policy and due times."""
    now = now or utcnow()
    policy = policy_of(ticket)
    status = TicketStatus(ticket.status)
    paused_since = None
    if status in PAUSED_STATUSES:
        open_pauses = [started for started, ended in pauses_of(ticket) if ended is None]
        paused_since = open_pauses[-1] if open_pauses else None
    targets = [_target_state(ticket, target, policy, now, is_paused=status in PAUSED_STATUSES) for target in TARGETS]
    return TicketTriageSummary(
        sla_policy=ticket.sla_policy_name,
        is_policy_missing=bool(ticket.sla_policy_name) and policy is None,
        language=ticket.language,
        runs=triage_runs(ticket),
        targets=targets,
        breached_at=ticket.sla_breached_at,
        paused_since=paused_since,
    )


def triage_runs(ticket: Ticket, limit: int = MAX_RUNS) -> list[TriageRun]:
    """Return the ticket's "triage.applied" events as runs, newest first."""
    if ticket.id is None:
        return []
    events = db.session.scalars(
        sa.select(TicketEvent)
        .where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "triage.applied")
        .order_by(TicketEvent.created_at.desc(), TicketEvent.id.desc())
        .limit(limit)
    )
    runs = []
    for event in events:
        data = event.data or {}
        matched = [
            {"rule": str(match.get("rule", "")), "changes": dict(match.get("changes") or {})}
            for match in data.get("matched") or []
            if isinstance(match, dict)
        ]
        runs.append(
            TriageRun(
                at=event.created_at,
                on=str(data.get("on", "create")),
                matched=matched,
                stopped_by=data.get("stopped_by"),
                skipped=[str(note) for note in data.get("skipped") or []],
                sla_policy=data.get("sla_policy"),
                language=data.get("language"),
            )
        )
    return runs


def _target_state(
    ticket: Ticket, target: str, policy: PolicySpec | None, now: dt.datetime, *, is_paused: bool
) -> TargetState:
    due = getattr(ticket, DUE_COLUMNS[target])
    if due is None:
        return TargetState(target, None, "none")
    if is_met(ticket, target):
        met_at = _met_at(ticket, target)
        late = met_at is not None and met_at > due
        return TargetState(target, due, "met late" if late else "met", met_at=met_at)
    if due <= now:
        return TargetState(target, due, "overdue")
    if is_paused:
        return TargetState(target, due, "paused")
    minutes_left = None
    if policy is not None:
        try:
            minutes_left = business_minutes_between(now, due, policy.calendar)
        except CalendarError:
            minutes_left = None
    return TargetState(target, due, "running", minutes_left)


def _met_at(ticket: Ticket, target: str) -> dt.datetime | None:
    if target == "first_response":
        return ticket.first_responded_at
    if target == "next_response":
        return ticket.last_agent_reply_at
    return ticket.solved_at or ticket.closed_at

