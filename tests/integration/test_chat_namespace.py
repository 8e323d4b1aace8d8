"""The visitors' `/chat` namespace: who may connect, what is stored, acknowledged, replayed and delivered."""

import pytest
import sqlalchemy as sa

from channels.chat.namespace import CHAT_NAMESPACE
from channels.chat.tokens import VisitorTokens, identity_hash
from channels.messages import ChannelName, IdentityKind, SenderIdentity
from helpdesk import group_ingest
from helpdesk.chat import chat_identity_secret
from helpdesk.customers import find_identity
from helpdesk.extensions import db, socketio
from helpdesk.ingest import IngestError, ingest
from helpdesk.models import Message, Ticket
from helpdesk.outbound import deliver_due, reply
from helpdesk.realtime import AGENT_NAMESPACE
from tests.conftest import clear_g
from tests.factories import make_agent, make_inbound
from tests.integration.chat_client import SHOP, configure_chat, received, say, session_of

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def chat_config(app, monkeypatch):
    """Let the shop embed the widget; start every test with fresh rate limits."""
    configure_chat(app, monkeypatch, f"{SHOP}, http://localhost")


def committed_message(message_id):
    """Read the message through a separate connection, which sees only committed rows."""
    with db.engine.connect() as connection:
        query = sa.select(Message.text, Message.channel).where(Message.id == message_id)
        return connection.execute(query).one_or_none()


def test_a_visitor_gets_a_token_and_an_id_on_first_connect(visit):
    visitor = visit()
    assert visitor.is_connected(CHAT_NAMESPACE)
    session = session_of(visitor)
    assert session["visitor_id"].startswith("v_")
    assert session["token"] and session["verified"] is False


def test_a_visitors_message_becomes_a_chat_ticket_acknowledged_once_committed(visit):
    visitor = visit()
    visitor_id = session_of(visitor)["visitor_id"]
    ack = say(visitor, "Hello, is my order shipped?")
    assert ack["ok"] and ack["client_id"] == "c-1"
    assert ack["seq"] == ack["id"]
    assert committed_message(ack["id"]) == ("Hello, is my order shipped?", ChannelName.CHAT)
    message = db.session.get(Message, ack["id"])
    assert message.ticket.channel == ChannelName.CHAT
    assert message.address == visitor_id
    assert message.dedupe_key == f"chat:{visitor_id}:c-1"
    assert message.author_customer.identity(IdentityKind.VISITOR).value == visitor_id


def test_a_message_that_could_not_be_stored_is_not_acknowledged(visit, monkeypatch):
    def refuse(inbound):
        raise IngestError("database unavailable")

    monkeypatch.setattr(group_ingest, "ingest", refuse)  # what the writer thread stores a first message with
    visitor = visit()
    received(visitor)
    ack = say(visitor, "Hello?")
    assert ack == {"ok": False, "error": "unavailable", "client_id": "c-1", "temporary": True}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


def test_a_resend_is_stored_once_and_acknowledged_with_the_same_id(visit):
    visitor = visit()
    first = say(visitor, "Hello", client_id="same")
    again = say(visitor, "Hello", client_id="same")
    assert first == again
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1


def test_the_next_message_continues_the_same_ticket(visit):
    visitor = visit()
    first = say(visitor, "Hello", client_id="a")
    second = say(visitor, "Anyone there?", client_id="b")
    assert second["seq"] > first["seq"]
    assert db.session.get(Message, first["id"]).ticket_id == db.session.get(Message, second["id"]).ticket_id


def test_a_returning_visitor_is_recognized_and_gets_their_history(visit):
    first_visit = visit()
    session = session_of(first_visit)
    say(first_visit, "My parcel is late", client_id="a")
    say(first_visit, "Order 1234", client_id="b")
    first_visit.disconnect(namespace=CHAT_NAMESPACE)

    returning = visit(token=session["token"])
    assert session_of(returning)["visitor_id"] == session["visitor_id"]
    answer = returning.emit("history", {"after": 0}, namespace=CHAT_NAMESPACE, callback=True)
    assert answer["ok"]
    assert [(m["direction"], m["text"], m["key"]) for m in answer["messages"]] == [
        ("visitor", "My parcel is late", "a"), ("visitor", "Order 1234", "b"),
    ]
    later = returning.emit("history", {"after": answer["messages"][0]["seq"]}, namespace=CHAT_NAMESPACE,
                           callback=True)
    assert [m["text"] for m in later["messages"]] == ["Order 1234"]


def test_a_forged_token_gets_a_new_identity_and_no_history(app, visit):
    victim = visit()
    victim_id = session_of(victim)["visitor_id"]
    say(victim, "Private details")
    forged = VisitorTokens("guessed-secret").issue(victim_id)

    attacker = visit(token=forged)
    assert session_of(attacker)["visitor_id"] != victim_id
    assert attacker.emit("history", {"after": 0}, namespace=CHAT_NAMESPACE, callback=True)["messages"] == []


def test_a_valid_identity_hmac_links_the_visitor_to_that_customer(app, visit):
    by_email = ingest(make_inbound(sender=SenderIdentity(IdentityKind.EMAIL, "alice@example.com")))
    secret = chat_identity_secret(app.config)
    visitor = visit(user_id="Alice@Example.com", user_hash=identity_hash(secret, "Alice@Example.com"))
    assert session_of(visitor)["verified"] is True
    ack = say(visitor, "Hi, it's Alice")
    assert db.session.get(Message, ack["id"]).author_customer_id == by_email.ticket.customer_id


def test_an_invalid_identity_hmac_is_ignored(app, visit):
    ingest(make_inbound(sender=SenderIdentity(IdentityKind.EMAIL, "alice@example.com")))
    alice = find_identity(IdentityKind.EMAIL, "alice@example.com").customer_id
    visitor = visit(user_id="alice@example.com", user_hash=identity_hash("not the secret", "alice@example.com"))
    assert visitor.is_connected(CHAT_NAMESPACE)
    assert session_of(visitor)["verified"] is False
    ack = say(visitor, "Hi, it's Alice (really?)")
    assert db.session.get(Message, ack["id"]).author_customer_id != alice


def test_an_agents_reply_reaches_the_visitors_socket(app, visit):
    visitor = visit()
    ack = say(visitor, "Where is my parcel?")
    received(visitor)
    agent = make_agent()
    db.session.commit()
    ticket = db.session.get(Message, ack["id"]).ticket
    sent = reply(ticket, agent, "It left the warehouse today.")
    assert deliver_due(app.extensions["helpdesk.channels"]) == 1
    [(_, delivered)] = received(visitor, "reply")
    assert delivered == {"key": sent.external_id, "direction": "agent", "text": "It left the warehouse today.",
                         "is_automatic": False}
    assert db.session.get(Message, sent.id).delivery_status == "sent"


def test_a_reply_to_one_visitor_never_reaches_another(app, visit):
    visitor, stranger = visit(), visit()
    ack = say(visitor, "Hello")
    received(stranger)
    agent = make_agent()
    db.session.commit()
    reply(db.session.get(Message, ack["id"]).ticket, agent, "Hi there")
    deliver_due(app.extensions["helpdesk.channels"])
    assert received(stranger) == []


def test_history_never_contains_internal_notes(visit):
    visitor = visit()
    ack = say(visitor, "Hello")
    agent = make_agent()
    db.session.commit()
    ticket = db.session.get(Message, ack["id"]).ticket
    reply(ticket, agent, "Internal: this customer is a VIP", is_public=False)
    reply(ticket, agent, "Hello! How can I help?")
    answer = visitor.emit("history", {"after": 0}, namespace=CHAT_NAMESPACE, callback=True)
    assert [(m["direction"], m["text"]) for m in answer["messages"]] == [
        ("visitor", "Hello"), ("agent", "Hello! How can I help?"),
    ]
    assert all("VIP" not in str(m) for m in answer["messages"])


def test_markup_is_stored_and_returned_as_plain_text(visit):
    visitor = visit()
    text = "<script>alert('x')</script> <b>bold</b>"
    ack = say(visitor, text)
    stored = db.session.get(Message, ack["id"])
    assert stored.text == text and stored.html is None
    [entry] = visitor.emit("history", {"after": 0}, namespace=CHAT_NAMESPACE, callback=True)["messages"]
    assert entry["text"] == text
    assert "html" not in entry


def test_an_oversized_message_is_refused_with_an_error_the_visitor_sees(visit):
    visitor = visit()
    received(visitor)
    ack = say(visitor, "x" * 5001)
    assert ack["ok"] is False and ack["error"] == "too_long" and ack["temporary"] is False
    [(_, error)] = received(visitor, "chat_error")
    assert error["code"] == "too_long" and error["client_id"] == "c-1"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
    assert say(visitor, "x" * 5000, client_id="c-2")["ok"]


@pytest.mark.parametrize("data", [None, "hello", {"text": "no id"}, {"client_id": "c", "text": "   "},
                                  {"client_id": "c", "text": 42}, {"client_id": "x" * 101, "text": "hi"}])
def test_a_malformed_message_is_refused(visit, data):
    visitor = visit()
    ack = visitor.emit("message", data, namespace=CHAT_NAMESPACE, callback=True)
    assert ack["ok"] is False
    assert visitor.is_connected(CHAT_NAMESPACE)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


@pytest.mark.parametrize("origin", ["https://evil.example.net", "http://shop.example.com", "null"])
def test_a_disallowed_origin_is_refused(visit, origin):
    assert not visit(origin=origin).is_connected(CHAT_NAMESPACE)


def test_without_a_list_only_the_helpdesks_own_origin_may_chat(app, visit, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_CHAT_ALLOWED_ORIGINS", "")
    assert not visit(origin=SHOP).is_connected(CHAT_NAMESPACE)
    assert visit(origin=app.config["HELPDESK_PUBLIC_URL"]).is_connected(CHAT_NAMESPACE)


def test_a_chat_origin_may_not_open_the_agents_namespace(app):
    clear_g()
    connection = socketio.test_client(app, namespace=AGENT_NAMESPACE, headers={"Origin": SHOP})
    assert not connection.is_connected(AGENT_NAMESPACE)


def test_a_visitor_sending_too_fast_is_held_back(app, visit, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_CHAT_MESSAGE_BURST", 3)
    visitor = visit()
    acks = [say(visitor, f"spam {n}", client_id=f"c-{n}") for n in range(5)]
    assert [ack["ok"] for ack in acks] == [True, True, True, False, False]
    assert acks[-1]["error"] == "rate_limited" and acks[-1]["temporary"] is True
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 3


def test_the_visitor_typing_is_forwarded_to_agents_watching_the_ticket(client, login_as, visit):
    visitor = visit()
    ack = say(visitor, "Hello")
    number = db.session.get(Message, ack["id"]).ticket.number
    login_as()
    clear_g()
    agent = socketio.test_client(client.application, namespace=AGENT_NAMESPACE, flask_test_client=client)
    agent.emit("watch_ticket", {"number": number}, namespace=AGENT_NAMESPACE)
    agent.get_received(AGENT_NAMESPACE)
    visitor.emit("typing", {"typing": True}, namespace=CHAT_NAMESPACE)
    received = [(p["name"], p["args"][0]) for p in agent.get_received(AGENT_NAMESPACE)]
    assert received == [("visitor.typing", {"ticket": number, "typing": True})]
    agent.disconnect(namespace=AGENT_NAMESPACE)


def test_the_widget_script_is_served_versioned_and_cacheable(client):
    from helpdesk.web.widget import widget_url

    plain = client.get("/widget.js")
    assert plain.status_code == 200
    assert plain.mimetype == "text/javascript"
    assert "textContent" in plain.get_data(as_text=True) and "innerHTML" not in plain.get_data(as_text=True)
    etag = plain.headers["ETag"]
    assert "max-age=300" in plain.headers["Cache-Control"]
    assert client.get("/widget.js", headers={"If-None-Match": etag}).status_code == 304
    with client.application.test_request_context():
        versioned_url = widget_url()
    versioned = client.get(versioned_url)
    assert "immutable" in versioned.headers["Cache-Control"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Ticket)) == 0
