"""No agent online: the visitor leaves a message with an email address and the conversation goes on by email;
a chat that ends (the visitor ends it, or the ticket is solved) can be mailed to the visitor as a transcript."""

import email
import email.policy
import pathlib

import pytest
import sqlalchemy as sa

from channels.base import ChannelRegistry
from channels.email.smtp import SmtpChannel, SmtpSettings
from channels.messages import ChannelName, IdentityKind, SenderIdentity
from helpdesk import presence
from helpdesk.customers import find_identity
from helpdesk.email_intake import ingest_raw_email
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Direction, Message, OutboxItem, OutboxState, Ticket, TicketEvent, TicketStatus
from helpdesk.outbound import deliver_due, reply
from helpdesk.tickets import change_field
from tests.factories import make_agent, make_inbound
from tests.fakes.smtp_server import running_smtp_server
from tests.integration.chat_client import ask, configure_chat, received, say, session_of

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def chat_config(app, monkeypatch):
    configure_chat(app, monkeypatch)


@pytest.fixture
def smtp_server():
    with running_smtp_server() as server:
        yield server


def smtp_registry(server) -> ChannelRegistry:
    registry = ChannelRegistry()
    registry.register(SmtpChannel(SmtpSettings.from_url(server.url), "support@example.com"))
    return registry


def leave(connection, text, email="maria@example.org", name="Maria Lopez", client_id="off-1"):
    return ask(connection, "leave_message", {"client_id": client_id, "text": text, "email": email, "name": name})


def eml_of(app, message: Message) -> email.message.EmailMessage:
    """The .eml the local mail channel wrote for `message` (the default when no SMTP server is configured)."""
    safe = "".join(c if c.isalnum() else "_" for c in message.external_id.strip("<>"))[:80]
    path = pathlib.Path(app.config["HELPDESK_OUTGOING_FOLDER"]) / f"{safe}.eml"
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def raw_reply(message_id, *, subject, body, in_reply_to=None) -> bytes:
    headers = ["From: Maria Lopez <maria@example.org>", "To: support@example.com", f"Subject: {subject}",
               f"Message-ID: {message_id}", "Date: Mon, 23 Nov 2026 11:00:00 +0000",
               "Content-Type: text/plain; charset=utf-8"]
    if in_reply_to:
        headers += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


# Who is online ------------------------------------------------------------------------------------------------


def test_with_no_agent_online_the_widget_is_told_so(visit):
    visitor = visit()
    assert session_of(visitor)["agents_online"] is False
    assert ask(visitor, "availability") == {"ok": True, "agents_online": False}


def test_an_agent_with_the_helpdesk_open_counts_as_online_but_not_an_inactive_one(visit):
    away = make_agent()
    away.is_active = False
    db.session.commit()
    presence.record_connect(away.id)
    db.session.commit()
    assert session_of(visit())["agents_online"] is False
    here = make_agent()
    db.session.commit()
    presence.record_connect(here.id)
    db.session.commit()
    visitor = visit()
    assert session_of(visitor)["agents_online"] is True
    presence.record_disconnect(here.id)
    db.session.commit()
    assert ask(visitor, "availability")["agents_online"] is False


# Leaving a message ------------------------------------------------------------------------------------------


def test_a_message_left_offline_goes_on_by_email_and_the_customers_mail_threads_back(app, visit, smtp_server):
    visitor = visit()
    visitor_id = session_of(visitor)["visitor_id"]
    ack = leave(visitor, "My parcel never came.\nOrder 1234.", email="Maria@Example.org")
    assert ack["ok"] is True and ack["email"] == "maria@example.org" and ack["client_id"] == "off-1"

    left = db.session.get(Message, ack["id"])
    ticket = left.ticket
    assert (ticket.channel, left.channel, left.address) == (ChannelName.EMAIL, ChannelName.EMAIL, "maria@example.org")
    assert left.text == "My parcel never came.\nOrder 1234."
    assert ticket.subject == "Left on the web chat: My parcel never came."
    assert ticket.customer.name == "Maria Lopez"
    assert ticket.customer.identity(IdentityKind.EMAIL).value == "maria@example.org"
    # The typed address is unproven: the visitor is not made that customer.
    assert find_identity(IdentityKind.VISITOR, visitor_id) is None

    # The acknowledgement went out by mail at once (the local channel writes .eml files).
    acknowledgement = db.session.scalars(
        sa.select(Message).where(Message.ticket_id == ticket.id, Message.is_automatic.is_(True))).one()
    mail = eml_of(app, acknowledgement)
    assert mail["To"] == "maria@example.org" and f"[#{ticket.number}]" in mail["Subject"]

    # The agent's reply goes out by email, through SMTP, threaded on the left message.
    agent = make_agent(name="Ada Agent")
    db.session.commit()
    answer = reply(ticket, agent, "Sorry! A new parcel leaves today.")
    assert answer.channel == ChannelName.EMAIL and answer.address == "maria@example.org"
    assert deliver_due(smtp_registry(smtp_server)) == 1
    [sent] = smtp_server.messages
    assert sent.rcpt_tos == ("maria@example.org",)
    assert sent.message["Message-ID"] == answer.external_id
    assert left.external_id in sent.message["References"]
    assert f"[#{ticket.number}]" in sent.message["Subject"]

    # Her mail answer threads back into the same ticket, on our Message-ID or on the subject's token alone.
    by_header = ingest_raw_email(raw_reply("<r1@example.org>", subject=sent.message["Subject"], body="Thanks!",
                                           in_reply_to=answer.external_id), "test")
    by_token = ingest_raw_email(raw_reply("<r2@example.org>", subject=f"Still waiting [#{ticket.number}]",
                                          body="Any news?"), "test")
    assert by_header.ticket.id == ticket.id and by_token.ticket.id == ticket.id
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Ticket)) == 1


def test_a_resent_message_is_stored_once_and_a_second_one_joins_the_same_ticket(visit):
    visitor = visit()
    first = leave(visitor, "Hello?")
    again = leave(visitor, "Hello?")
    assert first == again
    second = leave(visitor, "Also: the invoice is wrong.", client_id="off-2")
    assert second["ok"] and second["id"] != first["id"]
    assert db.session.get(Message, second["id"]).ticket_id == db.session.get(Message, first["id"]).ticket_id
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message).where(
        Message.direction == Direction.INBOUND)) == 2


@pytest.mark.parametrize("email, code", [("", "invalid_email"), ("not an address", "invalid_email"),
                                         ("Bob <bob@example.com>", "invalid_email")])
def test_a_message_left_without_a_valid_email_is_refused_visibly_and_not_stored(visit, email, code):
    visitor = visit()
    received(visitor)
    ack = leave(visitor, "Call me back", email=email)
    assert ack["ok"] is False and ack["error"] == code and ack["temporary"] is False
    [(_, error)] = received(visitor, "chat_error")
    assert "email address" in error["message"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


def test_leaving_a_message_as_someone_else_never_shows_their_conversations(app, visit):
    alice = ingest(make_inbound(sender=SenderIdentity(IdentityKind.EMAIL, "alice@example.com")))
    ingest(make_inbound(channel=ChannelName.CHAT, text="Alice's private chat",
                        sender=SenderIdentity(IdentityKind.VISITOR, "v_alice"),
                        other_identities=(SenderIdentity(IdentityKind.EMAIL, "alice@example.com"),)))
    mallory = visit()
    mallory_id = session_of(mallory)["visitor_id"]
    assert leave(mallory, "I am Alice, honest", email="alice@example.com")["ok"]
    assert ask(mallory, "history", {"after": 0}) == {"ok": True, "messages": []}
    assert find_identity(IdentityKind.VISITOR, mallory_id) is None
    assert alice.ticket.customer.identity(IdentityKind.VISITOR).value == "v_alice"


# Pre-chat details ------------------------------------------------------------------------------------------


def test_the_name_and_email_from_the_pre_chat_form_are_noted_on_the_ticket_but_never_as_identities(visit):
    visitor = visit()
    assert ask(visitor, "contact", {"name": "Ada", "email": "Ada@Example.com"}) == {
        "ok": True, "contact": {"name": "Ada", "email": "ada@example.com"}}
    ack = say(visitor, "Hello")
    ticket = db.session.get(Message, ack["id"]).ticket
    assert ticket.customer.name == "Ada"
    assert ticket.customer.identity(IdentityKind.EMAIL) is None
    [noted] = db.session.scalars(sa.select(TicketEvent).where(TicketEvent.kind == "chat.contact")).all()
    assert noted.data == {"name": "Ada", "email": "ada@example.com"} and "not verified" in noted.reason
    say(visitor, "Still me", client_id="c-2")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TicketEvent).where(
        TicketEvent.kind == "chat.contact")) == 1


def test_an_invalid_pre_chat_email_is_refused_with_a_message(visit):
    answer = ask(visit(), "contact", {"name": "Ada", "email": "ada at example"})
    assert answer["ok"] is False and answer["field"] == "email" and "valid email" in answer["message"]


# The end of a chat and its transcript -------------------------------------------------------------------------


def chat_with_a_reply(app, visitor):
    ack = say(visitor, "Hello, <b>is</b> my order shipped?")
    ticket = db.session.get(Message, ack["id"]).ticket
    agent = make_agent(name="Ada Agent")
    db.session.commit()
    reply(ticket, agent, "Yes, it left today.")
    deliver_due(app.extensions["helpdesk.channels"])
    return ticket


def test_a_visitor_who_gave_an_email_gets_the_transcript_by_email_through_the_outbox(app, visit):
    visitor = visit(name="Vera", email="vera@example.com")
    assert session_of(visitor)["contact"] == {"name": "Vera", "email": "vera@example.com"}
    ticket = chat_with_a_reply(app, visitor)
    assert ask(visitor, "end_chat") == {"ok": True, "email": "vera@example.com"}
    assert db.session.scalar(sa.select(TicketEvent.reason).where(TicketEvent.kind == "chat.ended")) == \
        "the visitor ended the chat"

    assert ask(visitor, "transcript") == {"ok": True, "email": "vera@example.com"}
    transcript = db.session.scalars(sa.select(Message).where(Message.subject == "Transcript of your chat")).one()
    assert (transcript.ticket_id, transcript.channel, transcript.address) == (ticket.id, ChannelName.EMAIL,
                                                                              "vera@example.com")
    outbox = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.message_id == transcript.id)).one()
    assert outbox.state == OutboxState.SENT
    mail = eml_of(app, transcript)
    assert mail["To"] == "vera@example.com"
    assert mail["Subject"] == f"Transcript of your chat [#{ticket.number}]"
    body = mail.get_content()
    assert "You:\n  Hello, <b>is</b> my order shipped?" in body
    assert "Ada Agent:\n  Yes, it left today." in body
    # It went by mail, so the widget's history does not show it.
    history = ask(visitor, "history", {"after": 0})["messages"]
    assert [m["text"] for m in history] == ["Hello, <b>is</b> my order shipped?", "Yes, it left today."]


def test_the_transcript_goes_to_an_address_given_at_the_end(app, visit):
    visitor = visit()
    chat_with_a_reply(app, visitor)
    assert ask(visitor, "transcript", {"email": "Late@Example.com"}) == {"ok": True, "email": "late@example.com"}
    bad = ask(visitor, "transcript", {"email": "not-an-address"})
    assert bad["ok"] is False and bad["error"] == "invalid_email"


def test_without_an_email_or_a_conversation_there_is_no_transcript(app, visit):
    visitor = visit()
    assert ask(visitor, "transcript")["error"] == "no_conversation"
    say(visitor, "Hi")
    answer = ask(visitor, "transcript")
    assert answer == {"ok": False, "error": "no_email", "message": "Enter your email address to get the transcript."}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 0


def test_a_conversation_has_only_so_many_transcripts(app, visit, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_CHAT_TRANSCRIPTS_PER_TICKET", 2)
    visitor = visit(email="vera@example.com")
    say(visitor, "Hi")
    assert [ask(visitor, "transcript")["ok"] for _ in range(3)] == [True, True, False]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message).where(
        Message.subject == "Transcript of your chat")) == 2


def test_a_visitor_asking_for_transcripts_too_often_is_held_back(app, visit, monkeypatch):
    monkeypatch.setitem(app.config, "HELPDESK_CHAT_TRANSCRIPTS_PER_TEN_MINUTES", 1)
    monkeypatch.setitem(app.config, "HELPDESK_CHAT_TRANSCRIPTS_PER_TICKET", 10)
    visitor = visit(email="vera@example.com")
    say(visitor, "Hi")
    assert ask(visitor, "transcript")["ok"] is True
    assert ask(visitor, "transcript")["error"] == "rate_limited"


def test_solving_the_ticket_ends_the_chat_in_the_widget_once_committed(app, visit):
    visitor = visit()
    ack = say(visitor, "Thanks, all good")
    other_tab = visit(token=session_of(visitor)["token"])
    received(visitor)
    received(other_tab)
    agent = make_agent()
    db.session.commit()
    ticket = db.session.get(Message, ack["id"]).ticket
    change_field(ticket, "status", TicketStatus.SOLVED, agent=agent)
    db.session.rollback()  # not committed: nothing to tell
    assert received(visitor, "chat_ended") == []
    ticket = db.session.get(Ticket, ticket.id)
    change_field(ticket, "status", TicketStatus.SOLVED, agent=agent)
    db.session.commit()
    assert received(visitor, "chat_ended") == [("chat_ended", {"reason": "solved"})]
    assert received(other_tab, "chat_ended") == [("chat_ended", {"reason": "solved"})]


def test_solving_an_email_ticket_tells_no_visitor(visit):
    visitor = visit()
    say(visitor, "Hello")
    received(visitor)
    email_ticket = ingest(make_inbound()).ticket
    change_field(email_ticket, "status", TicketStatus.SOLVED)
    db.session.commit()
    assert received(visitor, "chat_ended") == []


def test_a_savepoint_released_after_solving_does_not_end_the_chat_before_the_commit(visit):
    visitor = visit()
    ack = say(visitor, "Hello")
    received(visitor)
    ticket = db.session.get(Message, ack["id"]).ticket
    change_field(ticket, "status", TicketStatus.SOLVED)
    with db.session.begin_nested():
        ticket.tags = "chat"
    assert received(visitor, "chat_ended") == []
    db.session.commit()
    assert received(visitor, "chat_ended") == [("chat_ended", {"reason": "solved"})]
