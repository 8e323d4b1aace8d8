"""The `/chat` namespace's events against a recording backend: no database, no helpdesk, only the adapter."""

from __future__ import annotations

import pytest
from flask import Flask
from flask_socketio import SocketIO

from channels.chat.contact import ContactDetails
from channels.chat.namespace import ChatNamespace, ChatReceipt, ChatRefused, ChatSettings
from channels.chat.tokens import VisitorTokens
from channels.messages import ChannelName, IdentityKind

NAMESPACE = "/chat-unit"
SITE = "https://shop.example.com"


class RecordingBackend:
    """Answers like the helpdesk would and records every call."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.online = False

    def receive(self, inbound, contact):
        self.calls.append(("receive", inbound, contact))
        return ChatReceipt(7, 7)

    def history(self, visitor_id, after):
        return []

    def visitor_typing(self, visitor_id, is_typing):
        self.calls.append(("typing", visitor_id, is_typing))

    def remember_contact(self, visitor_id, contact):
        self.calls.append(("contact", visitor_id, contact))

    def leave_message(self, visitor_id, client_id, contact, text):
        self.calls.append(("leave", visitor_id, client_id, contact, text))
        return ChatReceipt(9, 9)

    def mark_read(self, visitor_id, up_to):
        self.calls.append(("read", visitor_id, up_to))

    def agents_online(self):
        return self.online

    def end_chat(self, visitor_id):
        self.calls.append(("end", visitor_id))

    def send_transcript(self, visitor_id, contact):
        if contact is None or not contact.email:
            raise ChatRefused("no_email", "Enter your email address to get the transcript.")
        self.calls.append(("transcript", visitor_id, contact))
        return contact.email


@pytest.fixture
def backend():
    return RecordingBackend()


@pytest.fixture
def connect(backend):
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "unit"
    server = SocketIO(app, async_mode="threading")
    settings = ChatSettings(allowed_origins=(SITE,), identity_secret="s", widget={"primary_color": "#123456"},
                            transcripts_per_ten_minutes=2)
    server.on_namespace(ChatNamespace(lambda: VisitorTokens("unit"), lambda: settings, backend, namespace=NAMESPACE))

    def connect(**auth):
        return server.test_client(app, namespace=NAMESPACE, headers={"Origin": SITE}, auth=auth or None)

    return connect


def ask(connection, event, data=None):
    return connection.emit(event, data if data is not None else {}, namespace=NAMESPACE, callback=True)


def session_of(connection):
    [session] = [p["args"][0] for p in connection.get_received(NAMESPACE) if p["name"] == "session"]
    return session


def test_the_session_tells_the_widget_its_settings_whether_agents_are_online_and_its_contact(connect, backend):
    backend.online = True
    session = session_of(connect(name="  Ada  ", email="ADA@example.com"))
    assert session["settings"] == {"primary_color": "#123456"}
    assert session["agents_online"] is True
    assert session["contact"] == {"name": "Ada", "email": "ada@example.com"}
    assert session_of(connect(email="not an address"))["contact"] is None


def test_the_contact_given_travels_with_each_message_and_names_the_sender(connect, backend):
    visitor = connect(name="Ada", email="ada@example.com")
    assert ask(visitor, "message", {"client_id": "c-1", "text": " Hi "})["ok"] is True
    [(_, inbound, contact)] = backend.calls
    assert inbound.sender.display_name == "Ada" and inbound.text == "Hi"
    assert contact == ContactDetails("Ada", "ada@example.com")
    # Never an identity: only what the visitor typed.
    assert all(identity.kind != IdentityKind.EMAIL for identity in inbound.other_identities)


def test_a_left_message_needs_a_valid_email_and_reaches_the_backend_once_checked(connect, backend):
    visitor = connect()
    refused = ask(visitor, "leave_message", {"client_id": "o-1", "text": "Hello", "email": "nope"})
    assert refused["error"] == "invalid_email" and backend.calls == []
    ack = ask(visitor, "leave_message", {"client_id": "o-1", "text": " Hello ", "email": "Ada@Example.com",
                                         "name": "Ada"})
    assert ack == {"ok": True, "client_id": "o-1", "id": 9, "seq": 9, "email": "ada@example.com"}
    [(kind, _, client_id, contact, text)] = backend.calls
    assert (kind, client_id, contact, text) == ("leave", "o-1", ContactDetails("Ada", "ada@example.com"), "Hello")


def test_a_transcript_goes_to_the_address_given_and_is_limited_per_visitor(connect, backend):
    visitor = connect()
    assert ask(visitor, "transcript")["error"] == "no_email"
    assert ask(visitor, "transcript", {"email": "ada@example.com"}) == {"ok": True, "email": "ada@example.com"}
    assert ask(visitor, "transcript")["error"] == "rate_limited"


def test_read_end_and_availability_reach_the_backend(connect, backend):
    visitor = connect()
    visitor_id = session_of(visitor)["visitor_id"]
    assert ask(visitor, "read", {"up_to": 12}) == {"ok": True}
    assert ask(visitor, "read", {"up_to": "12"})["error"] == "invalid"
    assert ask(visitor, "end_chat") == {"ok": True, "email": None}
    assert ask(visitor, "availability") == {"ok": True, "agents_online": False}
    assert backend.calls == [("read", visitor_id, 12), ("end", visitor_id)]


def test_an_offline_inbound_is_never_built_here_only_chat_messages(connect, backend):
    ask(connect(), "message", {"client_id": "c-1", "text": "Hi"})
    [(_, inbound, _)] = backend.calls
    assert inbound.channel == ChannelName.CHAT and inbound.dedupe_key.endswith(":c-1")
