"""Automatic assignment: give a ticket to a qualified agent of its group, least loaded or in turn.

An agent qualifies when they are active and online (helpdesk.presence), in the ticket's tier and
group, and under their capacity (their active tickets). The ticket's language is required only when
the ticket carries the tag `language_required` (a triage rule can add it, e.g. for German mail to a
German-speaking group); otherwise the language does not narrow the choice. When nobody qualifies the
ticket stays unassigned, and `unassigned_count` counts it.

Each group picks its way (Group.assignment_strategy): least loaded gives the ticket to the agent with
the fewest active tickets (the lowest id among equals); round robin gives it to the next qualified
agent after the one who got the group's last ticket, in id order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from helpdesk.extensions import db
from helpdesk.models import ACTIVE_STATUSES, Agent, AgentLanguage, AssignmentStrategy, Group, Ticket
from helpdesk.models.base import utcnow
from helpdesk.models.people import agent_groups
from helpdesk.presence import is_online_clause
from helpdesk.tickets import change_field

LANGUAGE_REQUIRED_TAG = "language_required"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An agent as assignment sees them."""

    id: int
    tier: str
    group_ids: frozenset[int]
    #: Their active tickets now.
    load: int
    capacity: int
    languages: frozenset[str] = frozenset()
    is_online: bool = True


@dataclasses.dataclass(frozen=True)
class Need:
    """What a ticket asks of its assignee."""

    tier: str
    group_id: int
    language: str | None = None
    is_language_required: bool = False


def qualifies(candidate: Candidate, need: Need) -> bool:
    """Tell whether `candidate` may be given a ticket with `need`."""
    if not candidate.is_online or candidate.tier != need.tier or need.group_id not in candidate.group_ids:
        return False
    if candidate.load >= candidate.capacity:
        return False
    return not (need.is_language_required and need.language and need.language not in candidate.languages)


def choose_agent(
    candidates: Sequence[Candidate], need: Need, strategy: str, last_assigned_id: int | None = None
) -> int | None:
    """Return the id of the agent to give the ticket to, or None when nobody qualifies."""
    qualified = sorted((c for c in candidates if qualifies(c, need)), key=lambda c: c.id)
    if not qualified:
        return None
    if strategy == AssignmentStrategy.ROUND_ROBIN:
        after = [c for c in qualified if last_assigned_id is not None and c.id > last_assigned_id]
        return (after or qualified)[0].id
    return min(qualified, key=lambda c: (c.load, c.id)).id


def auto_assign(ticket: Ticket, *, reason: str = "automatic assignment", now: dt.datetime | None = None) -> Agent | None:
    """Assign the ticket to a qualified agent of its group, audited; return them, or None. The caller commits."""
    if ticket.group_id is None and ticket.group is None:
        return None
    group_id = ticket.group_id if ticket.group_id is not None else ticket.group.id
    # Lock the group row so concurrent assignments in one group take turns (no-op on SQLite).
    db.session.execute(sa.select(Group.id).where(Group.id == group_id).with_for_update())
    group = db.session.get(Group, group_id)
    need = Need(
        tier=str(ticket.tier),
        group_id=group.id,
        language=ticket.language,
        is_language_required=LANGUAGE_REQUIRED_TAG in _tags(ticket),
    )
    chosen_id = choose_agent(
        candidates_in(group.id, now), need, str(group.assignment_strategy), group.last_assigned_agent_id
    )
    if chosen_id is None:
        return None
    agent = db.session.get(Agent, chosen_id)
    change_field(ticket, "assignee", agent, reason=f"{reason} ({group.assignment_strategy})")
    group.last_assigned_agent_id = agent.id
    return agent


def candidates_in(group_id: int, now: dt.datetime | None = None) -> list[Candidate]:
    """Return the active agents of a group with their load, languages and presence at `now`."""
    now = now or utcnow()
    load = (
        sa.select(sa.func.count(Ticket.id))
        .where(Ticket.assignee_id == Agent.id, Ticket.status.in_(ACTIVE_STATUSES))
        .scalar_subquery()
    )
    rows = db.session.execute(
        sa.select(Agent.id, Agent.tier, Agent.capacity, load, is_online_clause(now))
        .join(agent_groups, agent_groups.c.agent_id == Agent.id)
        .where(agent_groups.c.group_id == group_id, Agent.is_active)
    ).all()
    ids = [row[0] for row in rows]
    languages: dict[int, set[str]] = {}
    for agent_id, language in db.session.execute(
        sa.select(AgentLanguage.agent_id, AgentLanguage.language).where(AgentLanguage.agent_id.in_(ids))
    ):
        languages.setdefault(agent_id, set()).add(language)
    return [
        Candidate(
            id=agent_id,
            tier=str(tier),
            group_ids=frozenset({group_id}),
            load=active,
            capacity=capacity,
            languages=frozenset(languages.get(agent_id, ())),
            is_online=bool(online),
        )
        for agent_id, tier, capacity, active, online in rows
    ]


def unassigned_count() -> int:
    """Count the active tickets nobody is assigned to."""
    return db.session.scalar(
        sa.select(sa.func.count(Ticket.id)).where(Ticket.assignee_id.is_(None), Ticket.status.in_(ACTIVE_STATUSES))
    )


def _tags(ticket: Ticket) -> set[str]:
    return {tag.strip().casefold() for tag in (ticket.tags or "").split(",") if tag.strip()}
