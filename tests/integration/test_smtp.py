"""Replies out through a real SMTP server (aiosmtpd): threading headers, retries, refusals."""

import pytest
import sqlalchemy as sa
from flask import Flask

from channels.base import ChannelRegistry
from channels.email.smtp import SmtpChannel, SmtpSecurity, SmtpSettings
from channels.local import LocalLogChannel
from channels.messages import Attachment, ChannelName, DeliveryStatus, OutboundMessage
from helpdesk import init_channels
from helpdesk.email_intake import ingest_raw_email
from helpdesk.extensions import db
from helpdesk.mailboxes import poll_all_mailboxes
from helpdesk.models import Message, OutboxItem, OutboxState, TicketEvent
from helpdesk.models.base import utcnow
from helpdesk.outbound import deliver_due, reply
from tests.factories import make_agent
from tests.fakes.smtp_server import running_smtp_server

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp_server():
    with running_smtp_server() as server:
        yield server


@pytest.fixture
def agent():
    agent = make_agent()
    db.session.commit()
    return agent


def raw_email(message_id, *, subject="Invoice shows the wrong VAT",
              body="Hello, the VAT on invoice 42 is wrong.", in_reply_to=None) -> bytes:
    headers = ["From: Maria Lopez <maria@example.org>", "To: support@example.com", f"Subject: {subject}",
               f"Message-ID: {message_id}", "Date: Mon, 23 Nov 2026 09:00:00 +0100",
               "Content-Type: text/plain; charset=utf-8"]
    if in_reply_to:
        headers += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


def smtp_registry(server) -> ChannelRegistry:
    registry = ChannelRegistry()
    registry.register(SmtpChannel(SmtpSettings.from_url(server.url), "support@example.com"))
    return registry


def reply_to_maria(agent, text="The corrected invoice is on its way."):
    ticket = ingest_raw_email(raw_email("<q1@example.org>"), "test").ticket
    return ticket, reply(ticket, agent, text)


def outbox_item_of(message) -> OutboxItem:
    db.session.expire_all()
    return db.session.scalars(sa.select(OutboxItem).where(OutboxItem.message_id == message.id)).one()


def test_a_reply_reaches_the_smtp_server_threaded_into_the_conversation(smtp_server, agent):
    first = ingest_raw_email(raw_email("<q1@example.org>"), "test")
    ingest_raw_email(raw_email("<q2@example.org>", subject="Re: Invoice shows the wrong VAT",
                               body="Any news?", in_reply_to="<q1@example.org>"), "test")
    message = reply(first.ticket, agent, "The corrected invoice is on its way.")

    assert deliver_due(smtp_registry(smtp_server)) == 1

    [received] = smtp_server.messages
    mail = received.message
    assert (received.mail_from, received.rcpt_tos) == ("support@example.com", ("maria@example.org",))
    assert mail["Message-ID"] == message.external_id
    assert mail["In-Reply-To"] == "<q2@example.org>"
    # Our own acknowledgement of the first message is part of the conversation too.
    acknowledgement = db.session.scalar(sa.select(Message.external_id).where(Message.is_automatic.is_(True)))
    assert mail["References"].split() == ["<q1@example.org>", acknowledgement, "<q2@example.org>"]
    assert mail["Subject"] == f"Re: Invoice shows the wrong VAT [#{first.ticket.number}]"
    assert mail["To"] == "maria@example.org" and mail["From"] == "support@example.com"
    assert mail.get_content().strip() == "The corrected invoice is on its way."
    assert "Auto-Submitted" not in mail
    assert outbox_item_of(message).state is OutboxState.SENT
    assert db.session.get(Message, message.id).delivery_status is DeliveryStatus.SENT


def test_html_attachments_and_automatic_replies_are_built_into_the_mime_message(smtp_server):
    channel = SmtpChannel(SmtpSettings.from_url(smtp_server.url), "Helpdesk <support@example.com>")
    result = channel.send(OutboundMessage(
        channel=ChannelName.EMAIL,
        recipient="maria@example.org",
        text="We received your request.",
        html="<p>We received your <b>request</b>.</p>",
        subject="Your request [#1001]",
        external_id="helpdesk.abc@example.com",
        reply_to_external_ids=("<q2@example.org>", "<q1@example.org>"),
        attachments=(Attachment("invoice.pdf", "application/pdf", b"%PDF-1.4 not really"),),
        is_automatic=True,
    ))

    assert (result.status, result.provider_id, result.error) == (DeliveryStatus.SENT, "TEST1", None)
    [received] = smtp_server.messages
    mail = received.message
    assert received.mail_from == "support@example.com" and mail["From"] == "Helpdesk <support@example.com>"
    assert mail["Message-ID"] == "<helpdesk.abc@example.com>"
    assert mail["In-Reply-To"] == "<q2@example.org>"
    assert mail["References"] == "<q1@example.org> <q2@example.org>"
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail.get_content_type() == "multipart/mixed"
    assert mail.get_body(("plain",)).get_content().strip() == "We received your request."
    assert "<b>request</b>" in mail.get_body(("html",)).get_content()
    [attachment] = mail.iter_attachments()
    assert (attachment.get_filename(), attachment.get_content_type()) == ("invoice.pdf", "application/pdf")
    assert attachment.get_content() == b"%PDF-1.4 not really"


@pytest.mark.parametrize("outage", ["server down", "451 greylisting"])
def test_a_reply_waits_while_the_smtp_server_cannot_take_it_and_is_delivered_once_later(
        smtp_server, agent, outage):
    registry = smtp_registry(smtp_server)
    _, message = reply_to_maria(agent)
    if outage == "server down":
        smtp_server.stop()
    else:
        smtp_server.refuse_with = "451 4.7.1 Greylisted, please try again later"

    assert deliver_due(registry) == 1

    item = outbox_item_of(message)
    assert item.state is OutboxState.PENDING and item.attempts == 1 and item.next_attempt_at > utcnow()
    assert ("Connection refused" if outage == "server down" else "451 4.7.1 Greylisted") in item.last_error
    assert db.session.get(Message, message.id).delivery_status is DeliveryStatus.PENDING
    assert deliver_due(registry) == 0  # not due again yet

    if outage == "server down":
        smtp_server.start()
    else:
        smtp_server.refuse_with = None
    item.next_attempt_at = utcnow()  # the retry's time has come
    db.session.commit()
    assert deliver_due(registry) == 1
    assert deliver_due(registry) == 0

    [received] = smtp_server.messages
    assert received.message["Message-ID"] == message.external_id
    item = outbox_item_of(message)
    assert (item.state, item.attempts) == (OutboxState.SENT, 2)
    assert db.session.get(Message, message.id).delivery_status is DeliveryStatus.SENT


def test_an_agents_files_reach_the_smtp_server_with_the_reply_and_a_lost_file_holds_it_back(smtp_server, agent):
    from helpdesk.attachments import attachment_path

    ticket = ingest_raw_email(raw_email("<q1@example.org>"), "test").ticket
    invoice = Attachment("Rechnung März.pdf", "application/pdf", b"%PDF-1.4 corrected")
    log = Attachment("server.log", "text/plain", "zeile 1: übertragen\n".encode())
    message = reply(ticket, agent, "The corrected invoice and the log.", files=[invoice, log])

    assert deliver_due(smtp_registry(smtp_server)) == 1

    [received] = smtp_server.messages
    parts = list(received.message.iter_attachments())
    assert [(part.get_filename(), part.get_content_type(), part.get_payload(decode=True)) for part in parts] == [
        ("Rechnung März.pdf", "application/pdf", b"%PDF-1.4 corrected"),
        ("server.log", "text/plain", "zeile 1: übertragen\n".encode())]
    assert received.message.get_body(("plain",)).get_content().strip() == "The corrected invoice and the log."
    assert outbox_item_of(message).state is OutboxState.SENT

    # A file gone from storage holds the reply back with the reason, rather than sending it without the file.
    lost = reply(ticket, agent, "And the credit note.", files=[Attachment("credit.pdf", "application/pdf", b"%PDF")])
    attachment_path(lost.attachments[0]).unlink()
    assert deliver_due(smtp_registry(smtp_server)) == 1
    item = outbox_item_of(lost)
    assert item.state is OutboxState.PENDING and "credit.pdf" in item.last_error
    assert len(smtp_server.messages) == 1


def test_a_recipient_refused_with_550_fails_the_reply_with_the_servers_reason(smtp_server, agent):
    smtp_server.refuse_with = "550 5.1.1 <maria@example.org>: Recipient address rejected: User unknown"
    ticket, message = reply_to_maria(agent)

    assert deliver_due(smtp_registry(smtp_server)) == 1

    assert smtp_server.messages == []
    assert outbox_item_of(message).state is OutboxState.FAILED
    stored = db.session.get(Message, message.id)
    assert stored.delivery_status is DeliveryStatus.FAILED
    assert stored.delivery_error == "550 5.1.1 <maria@example.org>: Recipient address rejected: User unknown"
    event = db.session.scalars(sa.select(TicketEvent).where(TicketEvent.ticket_id == ticket.id,
                                                           TicketEvent.kind == "delivery.failed")).one()
    assert "User unknown" in event.reason


def test_the_factory_sends_email_by_smtp_only_when_helpdesk_smtp_url_is_set(tmp_path):
    def channels_for(smtp_url):
        app = Flask("channels-test")
        app.config.update(HELPDESK_OUTGOING_FOLDER=str(tmp_path),
                          HELPDESK_SUPPORT_ADDRESS="support@example.com", HELPDESK_SMTP_URL=smtp_url)
        init_channels(app)
        return app.extensions["helpdesk.channels"], app.extensions["helpdesk.mail_pollers"]

    registry, pollers = channels_for("smtp+starttls://desk%40example.com:p%40ss%2Fword@mail.example.com")
    email = registry.get(ChannelName.EMAIL)
    assert isinstance(email, SmtpChannel) and email.from_address == "support@example.com"
    assert email.settings == SmtpSettings("mail.example.com", None, SmtpSecurity.STARTTLS, "desk@example.com",
                                          "p@ss/word")
    assert email.settings.effective_port == 587
    assert isinstance(registry.get(ChannelName.SMS).fallback, LocalLogChannel)
    assert pollers == [poll_all_mailboxes]

    registry, _ = channels_for(None)
    assert isinstance(registry.get(ChannelName.EMAIL), LocalLogChannel)  # the embedded default: .eml files


@pytest.mark.parametrize(("url", "security", "port"), [
    ("smtp://relay.internal", SmtpSecurity.NONE, 25),
    ("smtps://user:pw@mail.example.com", SmtpSecurity.TLS, 465),
    ("smtp+starttls://mail.example.com:2525", SmtpSecurity.STARTTLS, 2525),
])
def test_smtp_urls_choose_the_connection_security_and_its_usual_port(url, security, port):
    settings = SmtpSettings.from_url(url)
    assert (settings.security, settings.effective_port) == (security, port)
