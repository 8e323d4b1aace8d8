"""One person across email addresses, phone numbers and chat visitors."""

from __future__ import annotations

import functools

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from channels.identities import normalize_email, normalize_phone, normalize_visitor_id
from channels.messages import IdentityKind, SenderIdentity
from helpdesk.database import insert_loaded, loaded_object
from helpdesk.extensions import db
from helpdesk.models import Customer, CustomerIdentity, Ticket

_NORMALIZERS = {
    IdentityKind.EMAIL: normalize_email,
    IdentityKind.PHONE: normalize_phone,
    IdentityKind.VISITOR: normalize_visitor_id,
}


# Cached: ingest, the customer lookup and triage each ask about the same sender of every message.
@functools.lru_cache(maxsize=1024)
def normalize_identity(identity: SenderIdentity) -> SenderIdentity:
    """Return `identity` with its value in stored form; raise InvalidIdentity if it has none."""
    kind = IdentityKind(identity.kind)
    return SenderIdentity(kind, _NORMALIZERS[kind](identity.value), identity.display_name)


def clear_bouncing(identity: CustomerIdentity) -> bool:
    """Take the bouncing mark off `identity` (the customer fixed their mailbox); tell whether it had one."""
    if identity.bouncing_since is None:
        return False
    identity.bouncing_since = None
    identity.bounce_reason = None
    return True


def find_identity(kind: IdentityKind, value: str) -> CustomerIdentity | None:
    return db.session.scalar(
        sa.select(CustomerIdentity).where(CustomerIdentity.kind == kind, CustomerIdentity.value == value)
    )


def _surviving(customer: Customer) -> Customer:
    # Follow merges, so an identity left on a merged record still leads to the right person.
    seen = set()
    while customer.merged_into_id is not None and customer.id not in seen:
        seen.add(customer.id)
        customer = db.session.get(Customer, customer.merged_into_id)
    return customer


def _insert_customer(identity: SenderIdentity) -> Customer | None:
    """Insert a new customer with `identity` at once, outside the unit of work (a flush of its own cost more
    than the rest of a new customer's message); None when another writer stored `identity` first.

    No savepoint: the identity's INSERT does nothing on the unique (kind, value) if someone else's is there
    (committed, or committed while it waited for theirs), and then the customer inserted for it goes again.
    """
    customer = insert_loaded(Customer, {"name": identity.display_name or ""})
    connection = db.session.connection()
    claimed = connection.execute(_claim_identity(connection.dialect.name), [
        {"customer_id": customer.id, "kind": identity.kind, "value": identity.value}]).first()
    if claimed is not None:
        return customer
    connection.execute(sa.delete(Customer.__table__).where(Customer.__table__.c.id == customer.id))
    db.session.expunge(customer)
    return None


@functools.cache
def _claim_identity(dialect_name: str) -> sa.Insert:
    identity = CustomerIdentity.__table__
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect_name]
    return (insert(identity)
            .on_conflict_do_nothing(index_elements=[identity.c.kind, identity.c.value])
            .returning(identity.c.id))


def _add_identity(customer: Customer, identity: SenderIdentity) -> Customer:
    """Attach `identity` to `customer`; return whoever owns it afterwards.

    When another writer stored the same identity first, nothing of ours is kept and their customer is
    returned instead.
    """
    if db.session.get_bind().dialect.name == "sqlite" and db.session().in_transaction():
        # SQLite has one writer at a time: inside a write transaction (begin_write) nobody can store the
        # identity between our lookup and this insert, so no savepoint (and no flush) is needed for a race.
        # A read transaction that tries to write fails at the write, not here, which is just as safe.
        customer.identities.append(CustomerIdentity(kind=identity.kind, value=identity.value))
        return customer
    try:
        # A savepoint around the new identity, so losing the race on the unique (kind, value) undoes it and
        # keeps the rest of the transaction.
        with db.session.begin_nested():
            customer.identities.append(CustomerIdentity(kind=identity.kind, value=identity.value))
    except IntegrityError:
        return _owner_after_lost_race(identity)
    return customer


class IdentityRaceLost(Exception):
    """Another writer stored an identity we were adding, and it was gone again when we looked: start over."""


def _owner_after_lost_race(identity: SenderIdentity) -> Customer:
    existing = find_identity(identity.kind, identity.value)
    if existing is None:
        raise IdentityRaceLost(f"{identity.kind} identity {identity.value!r} was stored by another writer and "
                               "is gone")
    return _surviving(existing.customer)


def resolve_customer(sender: SenderIdentity, other_identities: tuple[SenderIdentity, ...] = (), *,
                     lock: bool = False) -> Customer:
    """Return the customer behind `sender`, creating them (and any new identities) as needed.

    An identity already known for someone else is never moved: joining two people is an explicit merge.
    With `lock`, the customer's row is locked until the transaction ends (PostgreSQL; SQLite's writer holds the
    whole database), so one customer's messages are stored one at a time.
    """
    sender = normalize_identity(sender)
    identities = [sender, *(normalize_identity(identity) for identity in other_identities)]

    # Whether each identity is stored already, as far as this call has looked; an identity found or added
    # here is not looked up again.
    is_stored: dict[tuple[IdentityKind, str], bool] = {}
    customer = None
    locked = None  # whom the lookup locked: the record holding the identity, perhaps merged into another
    for identity in identities:
        owner = _customer_with_identity(identity.kind, identity.value, lock=lock)
        is_stored[(identity.kind, identity.value)] = owner is not None
        if owner is not None:
            locked = owner
            customer = _surviving(owner)
            break

    if customer is None:
        customer = locked = _insert_customer(sender)  # nobody else sees a new one before the commit
        if customer is None:
            customer = _owner_after_lost_race(sender)
        is_stored[(sender.kind, sender.value)] = True
    elif not customer.name and sender.display_name:
        customer.name = sender.display_name

    for identity in identities:
        key = (identity.kind, identity.value)
        stored = is_stored.get(key)
        if stored is None:
            stored = find_identity(identity.kind, identity.value) is not None
        if not stored:
            _add_identity(customer, identity)
        is_stored[key] = True
    if lock and customer is not locked and db.session.get_bind().dialect.name != "sqlite":
        db.session.connection().execute(_lock_customer_query(), {"id": customer.id})
    return customer


def _customer_with_identity(kind: IdentityKind, value: str, *, lock: bool = False) -> Customer | None:
    """Return the customer record that holds this identity (perhaps merged into another), in one query; with
    `lock`, its row locked."""
    session = db.session()
    if _holds_more_than_touched_tickets(session):
        session.flush()  # as a query's autoflush would: an identity added a moment ago is found
    # A Core query (every inbound message runs it): an ORM query costs several times as much.
    query = _customer_with_identity_query(lock=lock)
    row = session.connection().execute(query, {"kind": kind, "value": value}).first()
    return None if row is None else loaded_object(Customer, row)


# What every reply sets on its ticket. A session holding nothing else has nothing the reads of a message's
# path depend on: those changes go in with the commit's flush, all tickets of a batch in one go.
_TOUCHED_TICKET_COLUMNS = frozenset({"updated_at", "last_customer_message_at"})


def _holds_more_than_touched_tickets(session: orm.Session) -> bool:
    if session.new or session.deleted:
        return True
    return any(not isinstance(instance, Ticket)
               or not orm.attributes.instance_state(instance).committed_state.keys() <= _TOUCHED_TICKET_COLUMNS
               for instance in session.dirty)


@functools.cache
def _customer_with_identity_query(*, lock: bool) -> sa.Select:
    # Built once, with bound parameters: every inbound message runs it, and building it costs more than running it.
    customer = Customer.__table__
    identity = CustomerIdentity.__table__
    query = (
        sa.select(*customer.columns)
        .join(identity, identity.c.customer_id == customer.c.id)
        .where(identity.c.kind == sa.bindparam("kind"), identity.c.value == sa.bindparam("value"))
    )
    return query.with_for_update(of=customer) if lock else query


@functools.cache
def _lock_customer_query() -> sa.Select:
    customer = Customer.__table__
    return sa.select(customer.c.id).where(customer.c.id == sa.bindparam("id")).with_for_update()


def merge_customers(survivor: Customer, duplicate: Customer) -> Customer:
    """Move `duplicate`'s identities and tickets to `survivor` and mark it merged; the caller commits."""
    if survivor.id == duplicate.id:
        raise ValueError("a customer cannot be merged into itself")
    for identity in list(duplicate.identities):
        identity.customer = survivor
    db.session.execute(sa.update(Ticket).where(Ticket.customer_id == duplicate.id).values(customer_id=survivor.id))
    duplicate.merged_into_id = survivor.id
    return survivor


def customer_history(customer: Customer) -> list[Ticket]:
    """Return every ticket of the customer across channels, newest first."""
    return list(
        db.session.scalars(
            sa.select(Ticket).where(Ticket.customer_id == customer.id).order_by(Ticket.created_at.desc())
        )
    )
