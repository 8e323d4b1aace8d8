"""When queued agent events are emitted: once the outermost transaction has committed and let go of its connection."""

import pytest
import sqlalchemy as sa

from helpdesk.database import begin_write
from helpdesk.extensions import db, socketio
from helpdesk.realtime import AGENT_NAMESPACE, publish_after_commit

pytestmark = pytest.mark.integration


@pytest.fixture
def emitted(monkeypatch):
    """Record what is emitted, and how many pooled connections were checked out at that moment."""
    calls = []

    def record(event, payload, namespace=None, to=None):
        calls.append((event, payload, namespace, to, db.engine.pool.checkedout()))

    monkeypatch.setattr(socketio, "emit", record)
    return calls


def test_a_committed_event_is_emitted_once_after_the_connection_went_back_to_the_pool(emitted):
    idle = db.engine.pool.checkedout()
    begin_write()
    db.session.execute(sa.select(1))
    assert db.engine.pool.checkedout() == idle + 1
    publish_after_commit(db.session(), "ticket.created", {"ticket": 1001})
    db.session.commit()
    assert emitted == [("ticket.created", {"ticket": 1001}, AGENT_NAMESPACE, "agents", idle)]

    begin_write()
    db.session.commit()
    assert len(emitted) == 1  # a later commit does not send it again


def test_an_event_queued_in_a_released_savepoint_waits_for_the_outer_commit(emitted):
    begin_write()
    with db.session.begin_nested():
        publish_after_commit(db.session(), "ticket.updated", {"ticket": 7})
    assert emitted == []  # the savepoint's release is not the commit
    db.session.commit()
    assert [event for event, *_ in emitted] == ["ticket.updated"]


def test_an_event_queued_in_a_released_savepoint_is_dropped_when_the_outer_transaction_rolls_back(emitted):
    begin_write()
    with db.session.begin_nested():
        publish_after_commit(db.session(), "ticket.updated", {"ticket": 7})
    db.session.rollback()
    begin_write()
    db.session.commit()
    assert emitted == []
