"""The leads' SLA dashboard: compliance, tickets at risk, backlog, response times, agent load, escalations.

Every figure is a read-only query over stored facts, callable without HTTP and with a frozen `now`:

- a target (first response, resolution) is *met* at the moment it was done, if that was by its due
  time, and *breached* at its breach moment: the due time the SLA sweep recorded (SlaAlert), or the
  stored due time when it was done late or is still undone on a running clock. A window counts the
  targets whose outcome fell inside it; an undone target on a paused clock counts only once the sweep
  recorded its breach, since its due time moves when the clock resumes;
- a ticket is *at risk* while a target is undone and not yet due on a running clock, and it is due
  within the hour, the sweep warned about it (past the policy's warning share) or escalated it
  early, or the sweep's next check of it has come;
- response and resolution times are wall-clock durations from the ticket's creation, for the tickets
  first answered or solved inside the window.

Aggregates and orderings run in the database, on SQLite and PostgreSQL alike; only the listed rows
and the per-group counts reach Python.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import zoneinfo
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from helpdesk.extensions import db
from helpdesk.models import (
    ACTIVE_STATUSES,
    Agent,
    Group,
    SlaAlert,
    Ticket,
    TicketEvent,
    TicketStatus,
    Tier,
)
from helpdesk.models.base import UtcDateTime, utcnow
from helpdesk.models.people import agent_groups
from helpdesk.presence import is_online_clause
from helpdesk.tickets import ESCALATION_REASONS
from helpdesk.triage.clock import DUE_COLUMNS, PAUSED_STATUSES, is_met

#: The dashboard's windows: key -> label. "today" starts at midnight in the dashboard's time zone.
WINDOWS = {"today": "Today", "7d": "Last 7 days", "30d": "Last 30 days"}
WINDOW_DAYS = {"7d": 7, "30d": 30}
DEFAULT_WINDOW = "today"
#: A ticket whose next due time is closer than this counts as at risk.
AT_RISK_HORIZON = dt.timedelta(hours=1)
#: Most rows listed per table; the totals count them all.
LIST_LIMIT = 50
RUNNING_STATUSES = tuple(status for status in ACTIVE_STATUSES if status not in PAUSED_STATUSES)
BACKLOG_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING, TicketStatus.ON_HOLD)
TARGET_LABELS = {"first_response": "First response", "next_response": "Next response", "resolution": "Resolution"}


class DashboardError(ValueError):
    """A dashboard request that cannot be answered as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class Scope:
    """Which tickets and agents the figures cover: all, or one tier, one group, or both."""

    tier: Tier | None = None
    group_id: int | None = None


@dataclasses.dataclass(frozen=True)
class Window:
    key: str
    label: str
    start: dt.datetime
    end: dt.datetime
    timezone: str


@dataclasses.dataclass(frozen=True)
class Compliance:
    """How many targets were met and breached in a window; `rate` is the met share, None without any."""

    met: int
    breached: int

    @property
    def rate(self) -> float | None:
        decided = self.met + self.breached
        return self.met / decided if decided else None


@dataclasses.dataclass(frozen=True)
class Durations:
    """Count, median and 90th percentile (seconds, linear interpolation) of durations in a window."""

    count: int
    median_seconds: int | None
    p90_seconds: int | None


@dataclasses.dataclass(frozen=True)
class ListedTicket:
    """A ticket as the dashboard's lists show it."""

    number: int
    subject: str
    status: str
    priority: str
    tier: str
    assignee: str | None


@dataclasses.dataclass(frozen=True)
class TicketAtRisk(ListedTicket):
    #: The undone target due soonest, and its due time.
    target: str
    due_at: dt.datetime
    seconds_left: int


@dataclasses.dataclass(frozen=True)
class BreachedTicket(ListedTicket):
    #: The ticket's first breach moment.
    breached_at: dt.datetime
    #: The target that is overdue now, if one is (a target met late leaves the ticket breached but not overdue).
    overdue_target: str | None
    seconds_overdue: int | None


@dataclasses.dataclass(frozen=True)
class Listing:
    total: int
    tickets: list


@dataclasses.dataclass(frozen=True)
class TierBacklog:
    tier: str
    label: str
    new: int
    open: int
    pending: int
    on_hold: int
    unassigned: int

    @property
    def total(self) -> int:
        return self.new + self.open + self.pending + self.on_hold


@dataclasses.dataclass(frozen=True)
class AgentLoad:
    id: int
    name: str
    role: str
    tier: str
    is_online: bool
    open_tickets: int
    capacity: int


@dataclasses.dataclass(frozen=True)
class Escalations:
    #: Agents' escalations to the second line per reason code, every code listed (zero included).
    by_agents: dict[str, int]
    #: The SLA sweep's escalations per reason ("the first response target was breached", ...).
    by_sla_sweep: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_agents.values()) + sum(self.by_sla_sweep.values())


def make_window(key: str = DEFAULT_WINDOW, *, now: dt.datetime | None = None, timezone: str = "UTC") -> Window:
    """Return the window `key` ending at `now`; "today" starts at midnight in `timezone`."""
    now = now or utcnow()
    if key not in WINDOWS:
        raise DashboardError(f"unknown window {key!r}; use one of {', '.join(WINDOWS)}")
    if timezone not in _known_timezones():
        raise DashboardError(f"unknown time zone {timezone!r}; use an IANA name such as Europe/Stockholm")
    zone = zoneinfo.ZoneInfo(timezone)
    if key == "today":
        local = now.astimezone(zone)
        start = dt.datetime.combine(local.date(), dt.time(), tzinfo=zone).astimezone(dt.UTC)
    else:
        start = now - dt.timedelta(days=WINDOW_DAYS[key])
    return Window(key, WINDOWS[key], start, now, timezone)


@functools.cache
def _known_timezones() -> frozenset[str]:
    # Read from the time zone database once; checking names against it keeps odd keys away from ZoneInfo.
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


# --- SLA compliance ---------------------------------------------------------------------------------


def sla_compliance(window: Window, scope: Scope = Scope()) -> dict[str, Compliance]:
    """Count the first-response and resolution targets met and breached inside `window`."""
    return {
        "first_response": _target_compliance(
            "first_response", Ticket.first_response_due_at, Ticket.first_responded_at, window, scope
        ),
        "resolution": _target_compliance("resolution", Ticket.resolution_due_at, _resolved_at(), window, scope),
    }


def _resolved_at() -> sa.ColumnElement:
    # solved_at and closed_at are cleared when a ticket is reopened, so either one set means it is resolved.
    return sa.func.coalesce(Ticket.solved_at, Ticket.closed_at)


def _target_compliance(target: str, due, done_at, window: Window, scope: Scope) -> Compliance:
    breach = so.aliased(SlaAlert)
    breach_moment = sa.func.coalesce(breach.due_at, due)
    is_breached = sa.or_(
        breach.id.is_not(None),
        done_at > due,
        sa.and_(done_at.is_(None), Ticket.status.in_(RUNNING_STATUSES), due <= window.end),
        # Closed without ever being done (a first response never sent), after the due time had passed.
        sa.and_(done_at.is_(None), _resolved_at() >= due),
    )
    is_met_in_window = sa.and_(sa.not_(is_breached), done_at <= due, done_at >= window.start, done_at <= window.end)
    is_breached_in_window = sa.and_(is_breached, breach_moment >= window.start, breach_moment <= window.end)
    query = (
        sa.select(
            sa.func.coalesce(sa.func.sum(sa.case((is_met_in_window, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((is_breached_in_window, 1), else_=0)), 0),
        )
        .select_from(Ticket)
        .outerjoin(breach, sa.and_(breach.ticket_id == Ticket.id, breach.target == target, breach.kind == "breach"))
        # Every outcome in the window lies at or before the due time, and due times never move earlier,
        # so the indexed due time bounds the rows read.
        .where(due >= window.start)
    )
    met, breached = db.session.execute(_scoped(query, scope)).one()
    return Compliance(met=int(met), breached=int(breached))


# --- Tickets at risk and breached -------------------------------------------------------------------


def _undone_due_times() -> dict[str, sa.ColumnElement]:
    """Per target, its due time while it is still undone, else NULL (see helpdesk.triage.clock.is_met)."""
    return {
        "first_response": sa.case(
            (Ticket.first_responded_at.is_(None), Ticket.first_response_due_at), else_=sa.null()
        ),
        "next_response": sa.case(
            (
                sa.or_(
                    Ticket.last_agent_reply_at.is_(None),
                    Ticket.last_agent_reply_at < Ticket.last_customer_message_at,
                ),
                Ticket.next_response_due_at,
            ),
            else_=sa.null(),
        ),
        "resolution": Ticket.resolution_due_at,
    }


def _earliest(values: list[sa.ColumnElement]) -> sa.ColumnElement:
    """The smallest non-NULL value (PostgreSQL's LEAST skips NULLs, SQLite's MIN does not: CASE does both)."""
    result = values[0]
    for value in values[1:]:
        result = sa.case(
            (result.is_(None), value), (value.is_(None), result), (value < result, value), else_=result
        )
    return sa.type_coerce(result, UtcDateTime())


def _with_next_due(statuses, scope: Scope) -> tuple[type[Ticket], sa.ColumnElement]:
    """Return the scope's tickets in `statuses` as an entity, and the soonest due time of their undone targets."""
    next_due = _earliest(list(_undone_due_times().values()))
    # One pass over the tickets (found by status, an indexed column); the outer query filters and sorts it.
    rows = _scoped(sa.select(Ticket, next_due.label("next_due")).where(Ticket.status.in_(statuses)), scope)
    subquery = rows.subquery("with_next_due")
    return so.aliased(Ticket, subquery), subquery.c.next_due


def _is_warned(ticket: type[Ticket]) -> sa.ColumnElement[bool]:
    """Whether the sweep warned about (or escalated early) a target of the ticket that is still undone."""
    return sa.exists().where(
        SlaAlert.ticket_id == ticket.id,
        SlaAlert.kind.in_(("warning", "escalation")),
        sa.or_(
            sa.and_(SlaAlert.target == "first_response", ticket.first_responded_at.is_(None)),
            SlaAlert.target == "resolution",
            # A next-response target is new after each reply: only an alert about the current due time counts.
            sa.and_(
                SlaAlert.target == "next_response",
                SlaAlert.due_at == ticket.next_response_due_at,
                ticket.last_agent_reply_at < ticket.last_customer_message_at,
            ),
        ),
    )


def tickets_at_risk(scope: Scope = Scope(), *, now: dt.datetime | None = None, limit: int = LIST_LIMIT) -> Listing:
    """List running tickets at risk of a breach, the soonest due first, with the time left."""
    now = now or utcnow()
    ticket, next_due = _with_next_due(RUNNING_STATUSES, scope)
    condition = sa.and_(
        next_due > now,
        sa.or_(next_due <= now + AT_RISK_HORIZON, ticket.sla_check_at <= now, _is_warned(ticket)),
    )
    total = db.session.scalar(sa.select(sa.func.count()).select_from(ticket).where(condition))
    rows = db.session.execute(
        sa.select(ticket, next_due)
        .where(condition)
        .options(so.joinedload(ticket.assignee))
        .order_by(next_due, ticket.number)
        .limit(limit)
    ).all()
    tickets = [
        TicketAtRisk(
            **_ticket_fields(row),
            target=_target_due_at(row, due),
            due_at=due,
            seconds_left=int((due - now).total_seconds()),
        )
        for row, due in rows
    ]
    return Listing(total=total, tickets=tickets)


def breached_tickets(scope: Scope = Scope(), *, now: dt.datetime | None = None, limit: int = LIST_LIMIT) -> Listing:
    """List active tickets that breached a target: those overdue now first (longest overdue first), then the rest."""
    now = now or utcnow()
    ticket, next_due = _with_next_due(ACTIVE_STATUSES, scope)
    # A paused clock's due time is stale until it resumes; the sweep's recorded breach speaks for it.
    is_overdue = sa.and_(next_due <= now, ticket.status.in_(RUNNING_STATUSES))
    condition = sa.or_(is_overdue, ticket.sla_breached_at.is_not(None))
    total = db.session.scalar(sa.select(sa.func.count()).select_from(ticket).where(condition))
    rows = db.session.execute(
        sa.select(ticket, next_due, is_overdue.label("is_overdue"))
        .where(condition)
        .options(so.joinedload(ticket.assignee))
        .order_by(
            sa.case((is_overdue, 0), else_=1),
            sa.case((is_overdue, next_due), else_=sa.null()),
            ticket.sla_breached_at,
            ticket.number,
        )
        .limit(limit)
    ).all()
    tickets = []
    for row, due, overdue in rows:
        moments = [moment for moment in (row.sla_breached_at, due if overdue else None) if moment]
        tickets.append(BreachedTicket(
            **_ticket_fields(row),
            breached_at=min(moments),
            overdue_target=_target_due_at(row, due) if overdue else None,
            seconds_overdue=int((now - due).total_seconds()) if overdue else None,
        ))
    return Listing(total=total, tickets=tickets)


def _ticket_fields(ticket: Ticket) -> dict[str, Any]:
    return {
        "number": ticket.number,
        "subject": ticket.subject,
        "status": str(ticket.status),
        "priority": str(ticket.priority),
        "tier": str(ticket.tier),
        "assignee": ticket.assignee.name if ticket.assignee else None,
    }


def _target_due_at(ticket: Ticket, due: dt.datetime) -> str:
    """Name the undone target of `ticket` that is due at `due`."""
    for target, column in DUE_COLUMNS.items():
        if getattr(ticket, column) == due and not is_met(ticket, target):
            return target
    return "resolution"


# --- Backlog and agent load -------------------------------------------------------------------------


def backlog_per_tier(scope: Scope = Scope()) -> list[TierBacklog]:
    """Count the tickets per tier that are new, open, pending and on hold, and those nobody is assigned to."""
    query = (
        sa.select(
            Ticket.tier,
            Ticket.status,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((Ticket.assignee_id.is_(None), 1), else_=0)), 0),
        )
        .where(Ticket.status.in_(BACKLOG_STATUSES))
        .group_by(Ticket.tier, Ticket.status)
    )
    counts: dict[tuple[str, str], int] = {}
    unassigned: dict[str, int] = {}
    for tier, status, count, nobody in db.session.execute(_scoped(query, scope)):
        counts[(str(tier), str(status))] = count
        unassigned[str(tier)] = unassigned.get(str(tier), 0) + int(nobody)
    tiers = [scope.tier] if scope.tier is not None else list(Tier)
    return [
        TierBacklog(
            tier=str(tier),
            label=tier.label,
            **{status.value: counts.get((str(tier), status.value), 0) for status in BACKLOG_STATUSES},
            unassigned=unassigned.get(str(tier), 0),
        )
        for tier in tiers
    ]


def agent_load(scope: Scope = Scope(), *, now: dt.datetime | None = None) -> list[AgentLoad]:
    """List the active agents with their presence, their active tickets and their capacity, by tier and name."""
    now = now or utcnow()
    load = (
        sa.select(Ticket.assignee_id.label("agent_id"), sa.func.count().label("open_tickets"))
        .where(Ticket.assignee_id.is_not(None), Ticket.status.in_(ACTIVE_STATUSES))
        .group_by(Ticket.assignee_id)
        .subquery()
    )
    query = (
        sa.select(
            Agent.id, Agent.name, Agent.role, Agent.tier, Agent.capacity,
            sa.func.coalesce(load.c.open_tickets, 0), is_online_clause(now),
        )
        .outerjoin(load, load.c.agent_id == Agent.id)
        .where(Agent.is_active.is_(True))
        .order_by(Agent.tier, Agent.name, Agent.id)
    )
    if scope.tier is not None:
        query = query.where(Agent.tier == scope.tier)
    if scope.group_id is not None:
        query = query.where(
            sa.exists().where(agent_groups.c.agent_id == Agent.id, agent_groups.c.group_id == scope.group_id)
        )
    return [
        AgentLoad(id=agent_id, name=name, role=str(role), tier=str(tier), is_online=bool(online),
                  open_tickets=int(open_tickets), capacity=capacity)
        for agent_id, name, role, tier, capacity, open_tickets, online in db.session.execute(query)
    ]


# --- Response times ---------------------------------------------------------------------------------


class _seconds_between(FunctionElement):
    """Seconds from the second timestamp to the first, as a number (the databases spell it differently)."""

    type = sa.Float()
    name = "seconds_between"
    inherit_cache = True


@compiles(_seconds_between)
def _seconds_between_postgresql(element, compiler, **kw):
    later, earlier = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


@compiles(_seconds_between, "sqlite")
def _seconds_between_sqlite(element, compiler, **kw):
    later, earlier = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def response_times(window: Window, scope: Scope = Scope()) -> dict[str, Durations]:
    """Return the median and 90th percentile of first-response and resolution times inside `window`."""
    responded = Ticket.first_responded_at
    in_window_resolved = sa.or_(
        Ticket.solved_at.between(window.start, window.end),
        sa.and_(Ticket.solved_at.is_(None), Ticket.closed_at.between(window.start, window.end)),
    )
    return {
        "first_response": _durations(
            _seconds_between(responded, Ticket.created_at), [responded.between(window.start, window.end)], scope
        ),
        "resolution": _durations(_seconds_between(_resolved_at(), Ticket.created_at), [in_window_resolved], scope),
    }


def _durations(seconds: sa.ColumnElement, conditions: list, scope: Scope) -> Durations:
    count = db.session.scalar(_scoped(sa.select(sa.func.count()).select_from(Ticket).where(*conditions), scope))
    if not count:
        return Durations(count=0, median_seconds=None, p90_seconds=None)
    ordered = _scoped(sa.select(seconds).select_from(Ticket).where(*conditions), scope).order_by(seconds, Ticket.id)

    def percentile(fraction: float) -> int:
        # Linear interpolation between the two nearest ranks, as PostgreSQL's percentile_cont does.
        position = (count - 1) * fraction
        lower = math.floor(position)
        values = [float(value) for value in db.session.scalars(ordered.offset(lower).limit(2))]
        if len(values) == 1:
            return round(values[0])
        return round(values[0] + (position - lower) * (values[1] - values[0]))

    return Durations(count=count, median_seconds=percentile(0.5), p90_seconds=percentile(0.9))


# --- Escalations ------------------------------------------------------------------------------------


def escalations_per_reason(window: Window, scope: Scope = Scope()) -> Escalations:
    """Count the agents' escalations per reason code and the SLA sweep's per reason inside `window`.

    Only the group of `scope` applies: every escalation moves a ticket to the second line, so the
    ticket's tier today says nothing about it.
    """
    in_window = sa.and_(TicketEvent.created_at >= window.start, TicketEvent.created_at <= window.end)
    reason_code = TicketEvent.data["reason_code"].as_string()
    by_agents = sa.select(reason_code, sa.func.count()).where(TicketEvent.kind == "ticket.escalated", in_window)
    by_sweep = sa.select(TicketEvent.reason, sa.func.count()).where(TicketEvent.kind == "sla.escalated", in_window)
    if scope.group_id is not None:
        by_agents = by_agents.join(Ticket, Ticket.id == TicketEvent.ticket_id).where(Ticket.group_id == scope.group_id)
        by_sweep = by_sweep.join(Ticket, Ticket.id == TicketEvent.ticket_id).where(Ticket.group_id == scope.group_id)
    agents = dict.fromkeys(ESCALATION_REASONS, 0)
    for code, count in db.session.execute(by_agents.group_by(reason_code)):
        agents[code or "other"] = agents.get(code or "other", 0) + count
    sweep = {
        reason or "no reason recorded": count
        for reason, count in db.session.execute(
            by_sweep.group_by(TicketEvent.reason).order_by(sa.func.count().desc(), TicketEvent.reason)
        )
    }
    return Escalations(by_agents=agents, by_sla_sweep=sweep)


# --- Everything together ----------------------------------------------------------------------------


def dashboard(window: Window, scope: Scope = Scope()) -> dict[str, Any]:
    """Return every dashboard figure for `window` and `scope` as JSON-ready data (times as ISO 8601)."""
    now = window.end
    group_name = db.session.scalar(sa.select(Group.name).where(Group.id == scope.group_id)) if scope.group_id else None
    compliance = sla_compliance(window, scope)
    escalations = escalations_per_reason(window, scope)
    return _plain({
        "generated_at": now,
        "window": dataclasses.asdict(window),
        "scope": {"tier": str(scope.tier) if scope.tier else None, "group_id": scope.group_id, "group": group_name},
        "compliance": {
            target: {"label": TARGET_LABELS[target], "met": figures.met, "breached": figures.breached,
                     "rate": figures.rate}
            for target, figures in compliance.items()
        },
        "at_risk": _listing_json(tickets_at_risk(scope, now=now)),
        "breached": _listing_json(breached_tickets(scope, now=now)),
        "backlog": [{**dataclasses.asdict(row), "total": row.total} for row in backlog_per_tier(scope)],
        "response_times": {
            target: {"label": TARGET_LABELS[target], **dataclasses.asdict(figures)}
            for target, figures in response_times(window, scope).items()
        },
        "agents": [dataclasses.asdict(row) for row in agent_load(scope, now=now)],
        "escalations": {
            "by_agents": [{"reason": code, "count": count} for code, count in escalations.by_agents.items()],
            "by_sla_sweep": [{"reason": reason, "count": count} for reason, count in escalations.by_sla_sweep.items()],
            "total": escalations.total,
        },
        "labels": {
            "tiers": {tier.value: tier.label for tier in Tier},
            "statuses": {status.value: status.label for status in TicketStatus},
            "targets": TARGET_LABELS,
            "reasons": {code: code.replace("_", " ").capitalize() for code in escalations.by_agents},
        },
    })


def _listing_json(listing: Listing) -> dict[str, Any]:
    return {"total": listing.total, "tickets": [dataclasses.asdict(row) for row in listing.tickets]}


def _plain(value):
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _scoped(query: sa.Select, scope: Scope) -> sa.Select:
    """Narrow a query over tickets to the scope's tier and group."""
    if scope.tier is not None:
        query = query.where(Ticket.tier == scope.tier)
    if scope.group_id is not None:
        query = query.where(Ticket.group_id == scope.group_id)
    return query
