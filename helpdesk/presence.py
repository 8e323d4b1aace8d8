"""Which agents are online, recorded in the database so every web process and worker sees the same.

An agent is online while they hold at least one realtime connection and the last sign of life from
one (connecting, or the client's periodic heartbeat) is recent. A web process that dies without
closing its connections leaves the count too high, but its agents fall silent and go offline after
`ONLINE_WINDOW`.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from helpdesk.extensions import db
from helpdesk.models import Agent
from helpdesk.models.base import utcnow

#: How long after the last connect or heartbeat an agent still counts as online.
ONLINE_WINDOW = dt.timedelta(seconds=90)


def record_connect(agent_id: int, now: dt.datetime | None = None) -> None:
    """Count one more open connection for the agent and mark them seen; the caller commits."""
    db.session.execute(
        sa.update(Agent)
        .where(Agent.id == agent_id)
        .values(online_connections=Agent.online_connections + 1, last_seen_at=now or utcnow())
    )


def record_disconnect(agent_id: int) -> None:
    """Count one connection fewer for the agent (never below zero); the caller commits."""
    db.session.execute(
        sa.update(Agent)
        .where(Agent.id == agent_id, Agent.online_connections > 0)
        .values(online_connections=Agent.online_connections - 1)
    )


def record_heartbeat(agent_id: int, now: dt.datetime | None = None) -> None:
    """Mark the agent seen now; the caller commits."""
    db.session.execute(sa.update(Agent).where(Agent.id == agent_id).values(last_seen_at=now or utcnow()))


def is_online_clause(now: dt.datetime | None = None) -> sa.ColumnElement[bool]:
    """Return an SQL condition true for agents online at `now`."""
    return sa.and_(Agent.online_connections > 0, Agent.last_seen_at >= (now or utcnow()) - ONLINE_WINDOW)


def is_online(agent: Agent, now: dt.datetime | None = None) -> bool:
    """Tell whether `agent` is online at `now`."""
    return (
        agent.online_connections > 0
        and agent.last_seen_at is not None
        and agent.last_seen_at >= (now or utcnow()) - ONLINE_WINDOW
    )
