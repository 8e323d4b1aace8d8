"""Concurrent writers; on SQLite (the embedded default) those of one process queue on a lock, not busy sleeps."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from flask import current_app

from channels.messages import ChannelName, IdentityKind, SenderIdentity
from helpdesk.database import begin_write
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Customer, Message, Ticket
from tests.factories import make_inbound

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_app(app_config, tmp_path):
    """An app on its own SQLite file, whatever database the rest of the run uses: the lock is SQLite's."""
    from flask_migrate import upgrade

    from helpdesk import create_app

    application = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'writers.sqlite3'}"})
    with application.app_context():
        upgrade()
        yield application
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def writer_lock(sqlite_app):
    return current_app.extensions["helpdesk.sqlite_writer_lock"]


def test_the_lock_is_held_for_a_write_transaction_and_let_go_however_it_ends(writer_lock):
    begin_write()
    assert writer_lock.locked()
    begin_write()  # already writing: nothing more to take
    db.session.add(Customer(name="Ada"))
    db.session.commit()
    assert not writer_lock.locked()

    begin_write()
    db.session.add(Customer(name="Bob"))
    db.session.rollback()
    assert not writer_lock.locked()

    begin_write()
    db.session.close()
    assert not writer_lock.locked()

    begin_write()
    with pytest.raises(sa.exc.IntegrityError):
        db.session.execute(sa.text("INSERT INTO customer_identity (customer_id, kind, value, created_at) "
                                   "VALUES (999999, 'email', 'x@example.org', '2026-01-01')"))
    db.session.rollback()
    assert not writer_lock.locked()
    # Reads take nothing.
    db.session.scalar(sa.select(sa.func.count()).select_from(Customer))
    assert not writer_lock.locked()
    db.session.rollback()


def test_a_second_writer_waits_for_the_first_to_commit(sqlite_app, writer_lock):
    first_committed = threading.Event()
    timeline = []

    def second_writer():
        with sqlite_app.app_context():
            begin_write()
            timeline.append(("second began", first_committed.is_set()))
            db.session.rollback()

    begin_write()
    other = threading.Thread(target=second_writer)
    other.start()
    time.sleep(0.3)
    assert timeline == []  # still waiting
    db.session.add(Customer(name="First"))
    first_committed.set()
    db.session.commit()
    other.join(10)
    assert timeline == [("second began", True)]


def test_many_threads_ingesting_at_once_store_every_message_once_on_the_right_ticket(app):
    """On either database: SQLite's writers queue on the lock, PostgreSQL's on the customer's row."""
    senders = [SenderIdentity(IdentityKind.PHONE, f"+4670555{n:04d}") for n in range(8)]
    errors = []

    def texts(worker: int):
        try:
            with app.app_context():
                for n in range(15):
                    sender = senders[(worker + n) % len(senders)]
                    ingest(make_inbound(channel=ChannelName.SMS, sender=sender, external_id=f"SM{worker}x{n}",
                                        text=f"text {n} from worker {worker}"))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=texts, args=(worker,)) for worker in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    if (lock := current_app.extensions.get("helpdesk.sqlite_writer_lock")) is not None:
        assert not lock.locked()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 12 * 15
    # One open ticket per number: texts from one number join its open ticket, however they interleave.
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Ticket)) == len(senders)
