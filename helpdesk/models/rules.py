"""Triage rules as admins configured them, in the order they are tried."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from helpdesk.models.base import Base, Timestamped, enum_column
from helpdesk.triage.rules import RunOn


class TriageRule(Base, Timestamped):
    """One rule: when its conditions hold for a new ticket (or a customer message), apply its actions."""

    __tablename__ = "triage_rule"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    #: Rules are tried by ascending position; an import renumbers them from 0.
    position: so.Mapped[int] = so.mapped_column(unique=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(100), unique=True)
    is_enabled: so.Mapped[bool] = so.mapped_column(default=True)
    run_on: so.Mapped[RunOn] = so.mapped_column(enum_column(RunOn), default=RunOn.CREATE)
    #: The `conditions` object of the rules file format (helpdesk.triage.rules), as validated at import.
    conditions: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    #: The `actions` object of the rules file format.
    actions: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    #: Later rules are not tried once this one matched.
    stops_processing: so.Mapped[bool] = so.mapped_column(default=False)
