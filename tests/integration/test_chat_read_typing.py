"""Typing indicators both ways and read state both ways, kept in the database so a reload shows them."""

import pytest
import sqlalchemy as sa

from channels.chat.namespace import CHAT_NAMESPACE
from helpdesk.extensions import db, socketio
from helpdesk.ingest import ingest
from helpdesk.models import Message
from helpdesk.outbound import deliver_due, reply
from helpdesk.realtime import AGENT_NAMESPACE
from tests.conftest import clear_g
from tests.factories import make_agent, make_inbound
from tests.integration.chat_client import ask, configure_chat, received, say, session_of

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def chat_config(app, monkeypatch):
    configure_chat(app, monkeypatch)


@pytest.fixture
def visit(visit):
    """Visitors' connections, each with its session (its token is what the widget stores) kept off the queue."""

    def visit_keeping_session(**auth):
        connection = visit(**auth)
        connection.session = session_of(connection)
        return connection

    return visit_keeping_session


@pytest.fixture
def agent(app, client, login_as):
    """A signed-in agent's socket on the agents' namespace, with an empty queue."""
    login_as(name="Ada Agent")
    clear_g()
    connection = socketio.test_client(app, namespace=AGENT_NAMESPACE, flask_test_client=client)
    assert connection.is_connected(AGENT_NAMESPACE)
    connection.get_received(AGENT_NAMESPACE)
    yield connection
    if connection.is_connected(AGENT_NAMESPACE):
        connection.disconnect(namespace=AGENT_NAMESPACE)


def on_agents(connection, name=None) -> list:
    return received(connection, name, namespace=AGENT_NAMESPACE)


def agent_asks(connection, event, data):
    clear_g()
    return connection.emit(event, data, namespace=AGENT_NAMESPACE, callback=True)


def agent_sends(connection, event, data):
    clear_g()
    connection.emit(event, data, namespace=AGENT_NAMESPACE)


def committed_read_at(message_id):
    with db.engine.connect() as connection:
        return connection.execute(sa.select(Message.read_at).where(Message.id == message_id)).scalar_one()


def ticket_of(message_id) -> int:
    return db.session.get(Message, message_id).ticket.number


# Typing ------------------------------------------------------------------------------------------------------


def test_an_agent_typing_on_a_chat_ticket_shows_in_that_visitors_widget_only(visit, agent):
    visitor, stranger = visit(), visit()
    number = ticket_of(say(visitor, "Hello", "c-1")["id"])
    say(stranger, "Me too", "s-1")
    received(visitor)
    received(stranger)
    agent_sends(agent, "chat_typing", {"number": number, "typing": True})
    assert received(visitor) == [("typing", {"typing": True, "name": "Ada Agent"})]
    agent_sends(agent, "chat_typing", {"number": number, "typing": False})
    assert received(visitor) == [("typing", {"typing": False, "name": "Ada Agent"})]
    assert received(stranger) == []


def test_agent_typing_is_sent_at_most_once_a_second_but_stopping_always(visit, agent):
    visitor = visit()
    number = ticket_of(say(visitor, "Hello", "c-1")["id"])
    received(visitor)
    for _ in range(3):
        agent_sends(agent, "chat_typing", {"number": number, "typing": True})
    agent_sends(agent, "chat_typing", {"number": number, "typing": False})
    assert [payload["typing"] for _, payload in received(visitor, "typing")] == [True, False]


@pytest.mark.parametrize("data", [None, "1001", {"number": "x", "typing": True}, {"number": -4, "typing": True}])
def test_malformed_typing_is_ignored(visit, agent, data):
    visitor = visit()
    say(visitor, "Hello", "c-1")
    received(visitor)
    agent_sends(agent, "chat_typing", data)
    assert agent.is_connected(AGENT_NAMESPACE)
    assert received(visitor) == []


def test_typing_on_an_email_ticket_reaches_no_visitor(visit, agent):
    visitor = visit()
    say(visitor, "Hello", "c-1")
    received(visitor)
    email_ticket = ingest(make_inbound()).ticket
    agent_sends(agent, "chat_typing", {"number": email_ticket.number, "typing": True})
    assert received(visitor) == []


def test_the_visitor_typing_reaches_the_agent_on_the_ticket(visit, agent):
    visitor = visit()
    number = ticket_of(say(visitor, "Hello", "c-1")["id"])
    agent_sends(agent, "watch_ticket", {"number": number})
    on_agents(agent)
    ask(visitor, "typing", {"typing": True})
    assert on_agents(agent) == [("visitor.typing", {"ticket": number, "typing": True})]


# Read state --------------------------------------------------------------------------------------------------


def test_an_agent_opening_the_chat_marks_the_visitors_messages_seen_and_the_widget_is_told(visit, agent):
    visitor = visit()
    first = say(visitor, "Hello", "c-1")
    second = say(visitor, "Anyone?", "c-2")
    number = ticket_of(first["id"])
    received(visitor)
    assert all(not m["read"] for m in ask(visitor, "history", {"after": 0})["messages"])

    state = agent_asks(agent, "chat_read", {"number": number})
    assert state["ok"] is True and state["agent_read_up_to"] == second["id"]
    assert received(visitor, "read") == [("read", {"up_to": second["id"]})]
    assert committed_read_at(first["id"]) is not None and committed_read_at(second["id"]) is not None

    # Nothing new to mark: the visitor is not told again.
    agent_asks(agent, "chat_read", {"number": number})
    assert received(visitor, "read") == []

    # A reload of the widget shows the messages seen.
    returning = visit(token=visitor.session["token"])
    assert [m["read"] for m in ask(returning, "history", {"after": 0})["messages"]] == [True, True]


def test_the_visitor_reading_a_reply_is_stored_and_shown_to_the_agents_on_the_ticket(app, visit, agent):
    visitor = visit()
    ack = say(visitor, "Hello", "c-1")
    ticket = db.session.get(Message, ack["id"]).ticket
    number = ticket.number
    author = make_agent(name="Bo Agent")
    db.session.commit()
    answer = reply(ticket, author, "Hi! How can I help?")
    deliver_due(app.extensions["helpdesk.channels"])
    agent_sends(agent, "watch_ticket", {"number": number})
    on_agents(agent)

    history = ask(visitor, "history", {"after": 0})["messages"]
    [agent_entry] = [m for m in history if m["direction"] == "agent"]
    assert agent_entry["author"] == "Bo Agent"
    assert ask(visitor, "read", {"up_to": agent_entry["seq"]}) == {"ok": True}
    assert committed_read_at(answer.id) is not None
    assert on_agents(agent, "chat.read") == [("chat.read", {"ticket": number, "up_to": answer.id, "by": "visitor"})]

    # Read again: nothing changes, nobody is told.
    ask(visitor, "read", {"up_to": agent_entry["seq"]})
    assert on_agents(agent, "chat.read") == []

    # The agent's page, reloaded, reads the state back from the database.
    state = agent_asks(agent, "chat_state", {"number": number})
    assert state["visitor_read_up_to"] == answer.id


def test_a_visitor_can_mark_only_replies_in_their_own_conversations(app, visit, agent):
    owner, stranger = visit(), visit()
    ticket = db.session.get(Message, say(owner, "Hello", "c-1")["id"]).ticket
    say(stranger, "Hi", "s-1")
    author = make_agent()
    db.session.commit()
    answer = reply(ticket, author, "Private answer")
    assert ask(stranger, "read", {"up_to": answer.id + 1000}) == {"ok": True}
    assert committed_read_at(answer.id) is None


@pytest.mark.parametrize("data", [None, {}, {"up_to": "7"}, {"up_to": True}, {"up_to": -1}])
def test_a_malformed_read_is_refused(visit, data):
    visitor = visit()
    answer = visitor.emit("read", data, namespace=CHAT_NAMESPACE, callback=True)
    assert answer["ok"] is False and answer["error"] == "invalid"


def test_the_chat_state_is_only_for_chat_tickets(agent):
    email_ticket = ingest(make_inbound()).ticket
    assert agent_asks(agent, "chat_state", {"number": email_ticket.number}) == {"ok": False, "error": "not_a_chat"}
    assert agent_asks(agent, "chat_read", {"number": email_ticket.number})["ok"] is False
    assert agent_asks(agent, "chat_read", {"number": "nope"})["ok"] is False
