"""Agents, their roles, tiers, groups and skills, and their personal API tokens."""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING

import sqlalchemy as sa
import sqlalchemy.orm as so

from helpdesk.models.base import Base, Timestamped, enum_column, utcnow

if TYPE_CHECKING:
    from helpdesk.models.tickets import Ticket


class Role(enum.StrEnum):
    AGENT = "agent"
    LEAD = "lead"
    ADMIN = "admin"


class Tier(enum.StrEnum):
    FIRST_LINE = "first_line"
    SECOND_LINE = "second_line"

    @property
    def label(self) -> str:
        return {"first_line": "First line", "second_line": "Second line"}[self.value]


agent_groups = sa.Table(
    "agent_group",
    Base.metadata,
    sa.Column("agent_id", sa.ForeignKey("agent.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("group_id", sa.ForeignKey("group.id", ondelete="CASCADE"), primary_key=True),
)


class AssignmentStrategy(enum.StrEnum):
    LEAST_LOADED = "least_loaded"
    ROUND_ROBIN = "round_robin"


class Group(Base, Timestamped):
    """A team that owns a set of tickets (Billing, Technical, ...)."""

    __tablename__ = "group"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(100), unique=True)
    description: so.Mapped[str] = so.mapped_column(sa.String(500), default="")
    #: How automatic assignment picks among the qualified agents of this group.
    assignment_strategy: so.Mapped[AssignmentStrategy] = so.mapped_column(
        enum_column(AssignmentStrategy), default=AssignmentStrategy.LEAST_LOADED,
        server_default=AssignmentStrategy.LEAST_LOADED.value,
    )
    #: The agent round robin gave the last ticket to; the next one goes to the agent after them.
    last_assigned_agent_id: so.Mapped[int | None] = so.mapped_column(
        sa.ForeignKey("agent.id", ondelete="SET NULL")
    )

    agents: so.Mapped[list[Agent]] = so.relationship(secondary=agent_groups, back_populates="groups")


class AgentLanguage(Base):
    """A language an agent can answer in, for routing tickets by detected language."""

    __tablename__ = "agent_language"

    agent_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("agent.id", ondelete="CASCADE"), primary_key=True)
    #: ISO 639-1 code, lower case ("de", "sv").
    language: so.Mapped[str] = so.mapped_column(sa.String(8), primary_key=True)


class Agent(Base, Timestamped):
    __tablename__ = "agent"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    email: so.Mapped[str] = so.mapped_column(sa.String(254), unique=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200))
    #: Argon2id hash; None for an agent who has not set a password yet.
    password_hash: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    role: so.Mapped[Role] = so.mapped_column(enum_column(Role), default=Role.AGENT)
    tier: so.Mapped[Tier] = so.mapped_column(enum_column(Tier), default=Tier.FIRST_LINE)
    is_active: so.Mapped[bool] = so.mapped_column(default=True)
    #: Most open tickets automatic assignment gives this agent.
    capacity: so.Mapped[int] = so.mapped_column(default=10)
    last_login_at: so.Mapped[dt.datetime | None]
    #: Last sign of life from a realtime connection (connect or heartbeat), from any web process.
    last_seen_at: so.Mapped[dt.datetime | None]
    #: Open realtime connections; with a recent last_seen_at the agent counts as online.
    online_connections: so.Mapped[int] = so.mapped_column(default=0, server_default="0")

    groups: so.Mapped[list[Group]] = so.relationship(secondary=agent_groups, back_populates="agents")
    language_rows: so.Mapped[list[AgentLanguage]] = so.relationship(cascade="all, delete-orphan")
    api_tokens: so.WriteOnlyMapped[ApiToken] = so.relationship(back_populates="agent", passive_deletes=True)
    assigned_tickets: so.WriteOnlyMapped[Ticket] = so.relationship(back_populates="assignee")

    @property
    def languages(self) -> list[str]:
        return sorted(row.language for row in self.language_rows)

    def set_languages(self, languages: list[str]) -> None:
        wanted = {code.strip().lower() for code in languages if code.strip()}
        self.language_rows = [row for row in self.language_rows if row.language in wanted]
        have = {row.language for row in self.language_rows}
        self.language_rows.extend(AgentLanguage(language=code) for code in sorted(wanted - have))

    def has_role(self, role: Role) -> bool:
        """Tell whether this agent has at least `role` (admin > lead > agent)."""
        order = [Role.AGENT, Role.LEAD, Role.ADMIN]
        return order.index(self.role) >= order.index(role)

    # Flask-Login's user interface.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)


class ApiToken(Base):
    """A personal API token; only its SHA-256 is stored, the token itself is shown once."""

    __tablename__ = "api_token"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    agent_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("agent.id", ondelete="CASCADE"), index=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(100))
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    #: The first characters of the token, so an agent can tell tokens apart.
    prefix: so.Mapped[str] = so.mapped_column(sa.String(16))
    created_at: so.Mapped[dt.datetime] = so.mapped_column(default=utcnow)
    last_used_at: so.Mapped[dt.datetime | None]
    revoked_at: so.Mapped[dt.datetime | None]

    agent: so.Mapped[Agent] = so.relationship(back_populates="api_tokens")
