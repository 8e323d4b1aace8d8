"""Texts admins edit for automatic messages (the acknowledgement of a new ticket), per language."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from helpdesk.models.base import Base, Timestamped


class MessageTemplate(Base, Timestamped):
    """One editable automatic message: its name, an optional language, a subject and a Jinja body."""

    __tablename__ = "message_template"
    __table_args__ = (sa.UniqueConstraint("name", "language"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    #: What it is used for, e.g. "acknowledgement".
    name: so.Mapped[str] = so.mapped_column(sa.String(100))
    #: ISO 639-1 code of the variant; None is the default used when no variant matches the ticket.
    language: so.Mapped[str | None] = so.mapped_column(sa.String(8))
    subject: so.Mapped[str | None] = so.mapped_column(sa.String(500))
    body: so.Mapped[str] = so.mapped_column(sa.Text)
