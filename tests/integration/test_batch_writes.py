"""What a transaction that stores many emails does once for all of them: ticket numbers a block at a time, the
rows nothing reads back (events, outbox items) in one statement per table, no lookup for a stored copy; and
rows inserted outside the unit of work (insert_loaded) that leave the session with a rollback."""

import sqlalchemy as sa

from helpdesk.database import begin_write, defer_inserts, insert_loaded, loaded_object
from helpdesk.email_intake import EmailBatch, ingest_raw_email
from helpdesk.extensions import db
from helpdesk.models import (
    Customer,
    Message,
    OutboxItem,
    QuarantinedMessage,
    Ticket,
    TicketCounter,
    TicketEvent,
)
from helpdesk.tickets import (
    TICKET_NUMBER_BLOCK,
    next_ticket_number,
    record_event_row,
    take_ticket_numbers_in_blocks,
)
from tests.integration.engine_events import statements_sent
from tests.integration.test_imap_poller import raw_email


def counter() -> int:
    return db.session.scalar(sa.select(TicketCounter.next_number))


def take_in_one_batch(*raws: bytes) -> None:
    batch = EmailBatch()
    for raw in raws:
        batch.take_in(raw, "test")
    batch.commit()


def event_kinds_by_ticket() -> list[list[str]]:
    """Each ticket's events in id order (the timeline's), tickets in number order."""
    rows = db.session.execute(sa.select(Ticket.number, TicketEvent.kind).join(TicketEvent.ticket)
                              .order_by(Ticket.number, TicketEvent.id))
    timelines: dict[int, list[str]] = {}
    for number, kind in rows:
        timelines.setdefault(number, []).append(kind)
    return list(timelines.values())


def test_a_batch_takes_ticket_numbers_in_one_block_and_gives_back_the_rest_so_numbers_have_no_gap():
    first = counter()
    with statements_sent() as statements:
        take_in_one_batch(*(raw_email(f"<block{n}@example.org>", sender=f"block{n}@example.org")
                            for n in range(3)))

    counter_updates = [statement for statement in statements if statement.startswith("UPDATE ticket_counter")]
    assert len(counter_updates) == 2  # the block of TICKET_NUMBER_BLOCK taken, the unused part given back
    assert TICKET_NUMBER_BLOCK > 3
    assert sorted(db.session.scalars(sa.select(Ticket.number))) == [first, first + 1, first + 2]
    assert counter() == first + 3
    # The next ticket, on its own, gets the next number.
    ingest_raw_email(raw_email("<after-block@example.org>", sender="after@example.org"), "test")
    assert db.session.scalar(sa.select(sa.func.max(Ticket.number))) == first + 3


def test_a_transaction_that_rolls_back_keeps_none_of_its_block():
    first = counter()
    begin_write()
    take_ticket_numbers_in_blocks()
    assert [next_ticket_number() for _ in range(2)] == [first, first + 1]
    db.session.rollback()

    assert counter() == first
    begin_write()
    assert next_ticket_number() == first  # no block now: one number, taken at once
    db.session.commit()
    assert counter() == first + 1


def test_a_batch_writes_its_events_and_outbox_items_with_one_statement_each_and_keeps_every_timeline_in_order():
    one_by_one = [raw_email(f"<alone{n}@example.org>", sender=f"alone{n}@example.org") for n in range(3)]
    for raw in one_by_one:
        ingest_raw_email(raw, "test")
    alone = event_kinds_by_ticket()
    db.session.execute(sa.delete(TicketEvent))
    db.session.commit()

    with statements_sent() as statements:
        take_in_one_batch(*(raw_email(f"<together{n}@example.org>", sender=f"together{n}@example.org")
                            for n in range(3)))

    assert sum(statement.startswith("INSERT INTO ticket_event") for statement in statements) == 1
    assert sum(statement.startswith("INSERT INTO outbox_item") for statement in statements) == 1
    together = event_kinds_by_ticket()
    assert together == alone and together[0][0] == "ticket.created" and "acknowledgement.sent" in together[0]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 6


def test_held_rows_go_in_before_a_flush_that_inserts_into_their_table_and_a_rollback_drops_them():
    ingest_raw_email(raw_email("<held@example.org>", sender="held@example.org"), "test")
    ticket = db.session.scalars(sa.select(Ticket)).one()
    db.session.execute(sa.delete(TicketEvent))
    db.session.commit()

    begin_write()
    defer_inserts()
    record_event_row(ticket.id, "first.held")
    ticket.subject = "Changed while rows are held"
    db.session.flush()  # updates the ticket only: the held row stays held
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TicketEvent)) == 0
    db.session.add(TicketEvent(ticket_id=ticket.id, kind="second.flushed", data={}, actor_label="system"))
    db.session.flush()  # inserts an event: the held one goes in first
    record_event_row(ticket.id, "third.held")
    db.session.commit()
    assert [kind for [kind] in db.session.execute(sa.select(TicketEvent.kind).order_by(TicketEvent.id))] == [
        "first.held", "second.flushed", "third.held"]

    begin_write()
    defer_inserts()
    record_event_row(ticket.id, "never")
    db.session.rollback()
    begin_write()
    record_event_row(ticket.id, "fourth.at_once")  # a new transaction defers nothing unless asked
    db.session.commit()
    assert db.session.scalars(sa.select(TicketEvent.kind).order_by(TicketEvent.id)).all()[-1] == "fourth.at_once"
    assert db.session.scalar(sa.select(sa.func.count()).where(TicketEvent.kind == "never")) == 0


def test_a_duplicate_in_a_batch_fails_it_on_the_unique_key_and_each_message_is_then_stored_once(caplog):
    raw = raw_email("<twice-in-batch@example.org>", sender="twice@example.org")
    other = raw_email("<other-in-batch@example.org>", sender="other@example.org")
    with statements_sent() as statements:
        take_in_one_batch(raw, other, raw)

    # No lookup for a stored copy ran in the batch: the second copy failed on the unique key, and the batch
    # was stored again message by message, which does look.
    [failure] = [record.getMessage() for record in caplog.records if "storing each on its own" in record.getMessage()]
    assert "UNIQUE" in failure.upper()
    assert sorted(db.session.scalars(sa.select(Message.external_id).where(Message.direction == "inbound"))) == [
        "<other-in-batch@example.org>", "<twice-in-batch@example.org>"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Ticket)) == 2
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 2
    assert db.session.scalar(sa.select(sa.func.count()).select_from(QuarantinedMessage)) == 0
    lookups = [statement for statement in statements if "WHERE message.dedupe_key = " in statement]
    assert len(lookups) == 3  # one per message, all from the one-by-one pass


def test_a_savepoint_rolled_back_takes_back_its_held_rows_and_numbers_and_keeps_the_rest():
    ingest_raw_email(raw_email("<savepoint@example.org>", sender="savepoint@example.org"), "test")
    ticket = db.session.scalars(sa.select(Ticket)).one()
    first = counter()

    begin_write()
    defer_inserts()
    take_ticket_numbers_in_blocks()
    record_event_row(ticket.id, "before.savepoint")
    assert next_ticket_number() == first
    savepoint = db.session.begin_nested()
    record_event_row(ticket.id, "inside.savepoint")
    assert next_ticket_number() == first + 1
    db.session.flush()  # a flush inside the savepoint writes nothing held: it could be rolled back
    savepoint.rollback()
    assert next_ticket_number() == first + 1  # handed out again: the savepoint never happened
    with db.session.begin_nested():
        record_event_row(ticket.id, "released.savepoint")
    db.session.commit()

    kinds = db.session.scalars(sa.select(TicketEvent.kind).where(TicketEvent.ticket_id == ticket.id)
                               .order_by(TicketEvent.id)).all()
    assert kinds[-2:] == ["before.savepoint", "released.savepoint"] and "inside.savepoint" not in kinds
    assert counter() == first + 2  # the two numbers used; the rest of the block given back


def test_an_object_inserted_outside_the_unit_of_work_leaves_the_session_when_its_transaction_rolls_back():
    begin_write()
    kept = insert_loaded(Customer, {"name": "Kept"})
    savepoint = db.session.begin_nested()
    undone = insert_loaded(Customer, {"name": "Undone"})
    assert undone in db.session and undone.name == "Undone" and undone.id is not None
    savepoint.rollback()
    assert undone not in db.session and kept in db.session
    db.session.commit()
    assert db.session.scalars(sa.select(Customer.name)).all() == ["Kept"]

    begin_write()
    gone = insert_loaded(Customer, {"name": "Gone"})
    db.session.rollback()
    assert gone not in db.session
    # Its id is free again: the next customer may get it, and the session has room for it.
    again = insert_loaded(Customer, {"name": "Again"})
    db.session.commit()
    assert db.session.get(Customer, again.id).name == "Again"


def test_a_row_read_with_core_becomes_the_sessions_object_for_it():
    begin_write()
    inserted = insert_loaded(Customer, {"name": "Ana", "tags": "vip"})
    columns = Customer.__table__.columns
    row = db.session.connection().execute(sa.select(*columns).where(columns.id == inserted.id)).one()
    assert loaded_object(Customer, row) is inserted  # the one the session holds
    customer_id, created_at = inserted.id, inserted.created_at
    db.session.commit()
    db.session.expunge_all()

    found = loaded_object(Customer, db.session.connection().execute(
        sa.select(*columns).where(columns.id == customer_id)).one())
    assert found in db.session and not db.session.dirty
    assert (found.name, found.tags, found.created_at) == ("Ana", "vip", created_at)
    with statements_sent() as statements:
        assert db.session.get(Customer, customer_id) is found
    assert statements == []  # loaded already: no query
