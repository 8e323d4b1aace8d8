"""Customers and the identities (email, phone, chat visitor) that lead to them."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import sqlalchemy as sa
import sqlalchemy.orm as so

from channels.messages import IdentityKind
from helpdesk.models.base import Base, Timestamped, enum_column, utcnow

if TYPE_CHECKING:
    from helpdesk.models.tickets import Ticket


class Customer(Base, Timestamped):
    __tablename__ = "customer"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200), default="")
    is_vip: so.Mapped[bool] = so.mapped_column(default=False)
    #: Comma-separated tags set by agents or rules ("enterprise,beta").
    tags: so.Mapped[str] = so.mapped_column(sa.String(500), default="")
    #: Set when this customer was merged into another; the survivor keeps the identities.
    merged_into_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("customer.id"))

    identities: so.Mapped[list[CustomerIdentity]] = so.relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="CustomerIdentity.id"
    )
    tickets: so.WriteOnlyMapped[Ticket] = so.relationship(back_populates="customer")

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        return self.identities[0].value if self.identities else f"Customer {self.id}"

    def identity(self, kind: IdentityKind) -> CustomerIdentity | None:
        return next((identity for identity in self.identities if identity.kind == kind), None)


class CustomerIdentity(Base):
    """One way to reach a customer; (kind, value) is unique, so one address is one person."""

    __tablename__ = "customer_identity"
    __table_args__ = (sa.UniqueConstraint("kind", "value"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    customer_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    kind: so.Mapped[IdentityKind] = so.mapped_column(enum_column(IdentityKind))
    #: Normalized: lower-case email, E.164 phone number, or chat visitor id.
    value: so.Mapped[str] = so.mapped_column(sa.String(254))
    created_at: so.Mapped[dt.datetime] = so.mapped_column(default=utcnow)
    #: The customer texted STOP; replies on this identity are refused until START.
    opted_out_at: so.Mapped[dt.datetime | None]
    #: Mail to this address bounced; shown to agents before they reply.
    bouncing_since: so.Mapped[dt.datetime | None]
    bounce_reason: so.Mapped[str | None] = so.mapped_column(sa.String(500))

    customer: so.Mapped[Customer] = so.relationship(back_populates="identities")
