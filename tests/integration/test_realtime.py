"""Realtime events on the agents' Socket.IO namespace: who may connect, and what is sent when."""

import pytest
import sqlalchemy as sa

from helpdesk.database import begin_write
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
    begin_write()  # writers queue their events inside their transaction; its rollback drops them
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


# --- who is on a ticket: viewing and replying -----------------------------------------------------------


@pytest.fixture
def two_agents(app, client, login_as, connect):
    """Two signed-in agents' sockets, Alex's and Sam's, both watching ticket 1001, with empty queues."""
    login_as(name="Alex Agent")
    alex = connect(client)
    sam_agent = make_agent(name="Sam Second", password=TEST_PASSWORD)
    db.session.commit()
    other_browser = app.test_client()
    assert AuthActions(other_browser).login(sam_agent.email).status_code == 302
    sam = connect(other_browser)
    for connection in (alex, sam):
        connection.emit("watch_ticket", {"number": 1001}, namespace=AGENT_NAMESPACE)
        connection.get_received(AGENT_NAMESPACE)
    return alex, sam, sam_agent


def presence_events(connection) -> list[dict]:
    return [payload for name, payload in received(connection) if name == "ticket.presence"]


def test_an_agent_on_a_ticket_is_announced_to_the_others_watching_it_but_not_to_themselves(two_agents):
    alex, sam, sam_agent = two_agents
    clear_g()
    sam.emit("ticket_presence", {"number": 1001}, namespace=AGENT_NAMESPACE)
    [seen] = presence_events(alex)
    assert seen["ticket"] == 1001
    assert seen["agent"] == {"id": sam_agent.id, "name": "Sam Second"}
    assert seen["state"] == "viewing"
    assert presence_events(sam) == []
    # Other agents get a key for the tab, never its socket id.
    sam_sid = socketio.server.manager.sid_from_eio_sid(sam.eio_sid, AGENT_NAMESPACE)
    assert sam_sid and seen["viewer"] not in {sam.eio_sid, sam_sid}


def test_typing_in_the_composer_is_announced_as_replying(two_agents):
    alex, sam, _ = two_agents
    clear_g()
    sam.emit("ticket_presence", {"number": 1001, "replying": True}, namespace=AGENT_NAMESPACE)
    clear_g()
    sam.emit("ticket_presence", {"number": 1001, "replying": "yes"}, namespace=AGENT_NAMESPACE)
    assert [event["state"] for event in presence_events(alex)] == ["replying", "viewing"]


def test_presence_on_a_ticket_not_watched_is_ignored(two_agents):
    alex, sam, _ = two_agents
    clear_g()
    sam.emit("ticket_presence", {"number": 2002}, namespace=AGENT_NAMESPACE)
    assert presence_events(alex) == []


@pytest.mark.parametrize("data", [None, "1001", {"number": "abc"}, {"number": -1}, [1001]])
def test_malformed_presence_is_ignored(two_agents, data):
    alex, sam, _ = two_agents
    clear_g()
    sam.emit("ticket_presence", data, namespace=AGENT_NAMESPACE)
    clear_g()
    sam.emit("leave_ticket", data, namespace=AGENT_NAMESPACE)
    assert sam.is_connected(AGENT_NAMESPACE)
    assert presence_events(alex) == []


def test_leaving_a_ticket_is_announced_and_ends_its_events(two_agents):
    alex, sam, _ = two_agents
    clear_g()
    sam.emit("leave_ticket", {"number": 1001}, namespace=AGENT_NAMESPACE)
    [left] = presence_events(alex)
    assert left["state"] == "left"
    clear_g()
    alex.emit("ticket_presence", {"number": 1001}, namespace=AGENT_NAMESPACE)
    assert presence_events(sam) == []


def test_a_disconnect_is_announced_as_leaving_each_watched_ticket(two_agents):
    alex, sam, _ = two_agents
    clear_g()
    sam.emit("ticket_presence", {"number": 1001}, namespace=AGENT_NAMESPACE)
    [arrived] = presence_events(alex)
    clear_g()
    sam.disconnect(namespace=AGENT_NAMESPACE)
    [left] = presence_events(alex)
    assert (left["state"], left["viewer"], left["ticket"]) == ("left", arrived["viewer"], 1001)
