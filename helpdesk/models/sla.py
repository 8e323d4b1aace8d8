"""SLA policies: business hours and response and resolution targets per priority."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from helpdesk.models.base import Base, Timestamped


class SlaPolicy(Base, Timestamped):
    """A named policy; tickets get the one a triage rule names, else the default one."""

    __tablename__ = "sla_policy"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(100), unique=True)
    #: Exactly one policy is the default when any exist (checked at import).
    is_default: so.Mapped[bool] = so.mapped_column(default=False)
    #: The business calendar in the JSON shape of helpdesk.triage.calendar.
    calendar: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON)
    #: Business minutes per priority, e.g. {"urgent": {"first_response": 30, "next_response": 60,
    #: "resolution": 240}}; a priority or target left out has no due time.
    targets: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    #: Share of a target after which a ticket counts as at risk.
    warn_at_percent: so.Mapped[int] = so.mapped_column(default=75)
    #: What the SLA sweep does when a target is breached or predicted to be, e.g.
    #: {"tier": "second_line", "raise_priority": true}; None means both of those.
    escalation: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
