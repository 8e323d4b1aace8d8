"""Realtime events on the agents' Socket.IO namespace: who may connect, and what is sent when."""

import pytest
import sqlalchemy as sa

from helpdesk.extensions import db, socketio
from helpdesk.ingest import IngestError, ingest
from helpdesk.realtime import AGENT_NAMESPACE, publish_after_commit
from tests.conftest import TEST_PASSWORD, AuthActions, clear_g
from tests.factories import make_agent, make_inbound

pytestmark = pytest.mark.integration

# Refuse the audit entry ingest writes last (after queuing its event) for messages marked "refuse-me".
_REFUSE_SQLITE = [
    (
        "CREATE TRIGGER refuse_marked_message BEFORE INSERT ON ticket_event "
        "WHEN NEW.kind = 'message.received' AND NEW.data LIKE '%refuse-me%' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ),
]
_REFUSE_POSTGRES = [
    (
        "CREATE FUNCTION refuse_marked_message() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.kind = 'message.received' AND NEW.data::text LIKE '%refuse-me%' THEN "
        "RAISE EXCEPTION 'refused by the test' USING ERRCODE = '23514'; END IF; RETURN NEW; END $$"
    ),
    (
        "CREATE TRIGGER refuse_marked_message BEFORE INSERT ON ticket_event "
        "FOR EACH ROW EXECUTE FUNCTION refuse_marked_message()"
    ),
]




@pytest.fixture
def connect(app):
    """Open Socket.IO test connections that carry a Flask test client's cookies; close them afterwards."""
    opened = []

    def connect(client, **kwargs):
        # The socket's request context shares the test's `g` too, and fires no request_started.
        clear_g()
        connection = socketio.test_client(app, namespace=AGENT_NAMESPACE, flask_test_client=client, **kwargs)
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        if connection.is_connected(AGENT_NAMESPACE):
            connection.disconnect(namespace=AGENT_NAMESPACE)


@pytest.fixture
def agent_socket(client, login_as, connect):
    login_as()
    connection = connect(client)
    assert connection.is_connected(AGENT_NAMESPACE)
    connection.get_received(AGENT_NAMESPACE)  # start from an empty queue
    return connection


def received(connection) -> list[tuple[str, dict]]:
    return [(packet["name"], packet["args"][0]) for packet in connection.get_received(AGENT_NAMESPACE)]


@pytest.fixture
def refuse_marked_messages():
    """Make the database refuse ingest's final write for marked messages, after their event was queued."""
    postgres = db.engine.dialect.name == "postgresql"
    for statement in _REFUSE_POSTGRES if postgres else _REFUSE_SQLITE:
        db.session.execute(sa.text(statement))
    db.session.commit()
    yield
    db.session.rollback()
    db.session.execute(
        sa.text("DROP TRIGGER refuse_marked_message" + (" ON ticket_event" if postgres else ""))
    )
    if postgres:
        db.session.execute(sa.text("DROP FUNCTION refuse_marked_message()"))
    db.session.commit()


def test_an_anonymous_connection_is_refused(client, connect):
    assert not connect(client).is_connected(AGENT_NAMESPACE)


def test_a_signed_out_agents_old_cookie_is_refused(client, auth, login_as, connect):
    login_as()
    auth.logout()
    assert not connect(client).is_connected(AGENT_NAMESPACE)


def test_a_session_cookie_replayed_from_another_browser_is_refused(client, login_as, connect):
    login_as()
    assert not connect(client, headers={"User-Agent": "SomeOtherBrowser/1.0"}).is_connected(AGENT_NAMESPACE)


def test_a_signed_in_agent_hears_about_a_new_ticket_after_ingest_commits(agent_socket):
    result = ingest(make_inbound(subject="Where is my parcel?"))
    [(name, payload)] = received(agent_socket)
    assert name == "ticket.created"
    assert payload["ticket"] == result.ticket.number == 1001
    assert payload["message_id"] == result.message.id
    assert payload["subject"] == "Where is my parcel?"
    assert payload["channel"] == "email"


def test_every_signed_in_agent_hears_it(app, agent_socket, connect):
    colleague = make_agent(password=TEST_PASSWORD)
    db.session.commit()
    other_browser = app.test_client()
    assert AuthActions(other_browser).login(colleague.email).status_code == 302
    second = connect(other_browser)
    assert second.is_connected(AGENT_NAMESPACE)
    ingest(make_inbound())
    assert [name for name, _ in received(agent_socket)] == ["ticket.created"]
    assert [name for name, _ in received(second)] == ["ticket.created"]


def test_a_message_on_an_existing_ticket_is_a_message_created_event(agent_socket):
    first = ingest(make_inbound(channel="sms", text="My parcel is late."))
    second = ingest(make_inbound(channel="sms", text="Any news?"))
    assert second.ticket.id == first.ticket.id
    assert received(agent_socket) == [
        (
            "ticket.created",
            {
                "ticket": 1001,
                "message_id": first.message.id,
                "subject": "My parcel is late.",
                "customer": "+46701234567",
                "channel": "sms",
            },
        ),
        (
            "message.created",
            {
                "ticket": 1001,
                "message_id": second.message.id,
                "subject": "My parcel is late.",
                "customer": "+46701234567",
                "channel": "sms",
            },
        ),
    ]


def test_a_duplicate_delivery_sends_nothing(agent_socket):
    inbound = make_inbound()
    ingest(inbound)
    received(agent_socket)
    again = ingest(inbound)
    assert again.is_duplicate
    assert received(agent_socket) == []


def test_an_ingest_that_rolled_back_sends_nothing_now_or_with_a_later_commit(
    agent_socket, refuse_marked_messages
):
    with pytest.raises(IngestError):
        ingest(make_inbound(external_id="<refuse-me@example.org>"))
    assert received(agent_socket) == []
    kept = ingest(make_inbound(subject="Kept"))
    assert received(agent_socket) == [
        (
            "ticket.created",
            {
                "ticket": kept.ticket.number,
                "message_id": kept.message.id,
                "subject": "Kept",
                "customer": "Cus Tomer",
                "channel": "email",
            },
        )
    ]


def test_an_event_queued_then_rolled_back_is_dropped(agent_socket):
    publish_after_commit(db.session(), "ticket.created", {"ticket": 4242})
    db.session.rollback()
    ingest(make_inbound())
    assert [payload["ticket"] for _, payload in received(agent_socket)] == [1001]


def test_an_event_queued_before_a_savepoint_rolled_back_survives_it(agent_socket):
    publish_after_commit(db.session(), "ticket.updated", {"ticket": 7})
    with pytest.raises(RuntimeError), db.session.begin_nested():
        raise RuntimeError("undo only the savepoint")
    assert received(agent_socket) == []  # nothing before the commit
    db.session.commit()
    assert received(agent_socket) == [("ticket.updated", {"ticket": 7})]


@pytest.mark.parametrize("data", [None, "1001", {"number": "abc"}, {"number": None}, [1001]])
def test_a_malformed_watch_request_is_ignored(agent_socket, data):
    agent_socket.emit("watch_ticket", data, namespace=AGENT_NAMESPACE)
    assert agent_socket.is_connected(AGENT_NAMESPACE)
    ingest(make_inbound())
    assert [name for name, _ in received(agent_socket)] == ["ticket.created"]
