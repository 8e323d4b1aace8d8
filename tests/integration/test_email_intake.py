"""Raw email intake: acknowledgements, auto-replies, our own mail coming back, and bounces."""

import email
import email.policy
import pathlib
import re

import pytest
import sqlalchemy as sa
from flask import current_app

from channels.messages import ChannelName, DeliveryStatus
from helpdesk.email_intake import take_in_email
from helpdesk.extensions import db
from helpdesk.models import CustomerIdentity, Message, Ticket, TicketEvent, TicketStatus
from helpdesk.outbound import deliver_due, reply, reply_route
from helpdesk.tickets import change_field
from tests.factories import make_agent

pytestmark = pytest.mark.integration


def raw_email(message_id: str, *, sender="Maria Lopez <maria@example.org>", subject="Invoice shows the wrong VAT",
              body="The VAT on invoice 42 is wrong.", headers: dict | None = None) -> bytes:
    lines = [f"From: {sender}", "To: support@example.com", f"Subject: {subject}", f"Message-ID: {message_id}",
             "Date: Mon, 23 Nov 2026 09:00:00 +0100"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def delivery_status_report(original_message_id: str, recipient="maria@example.org") -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        "To: support@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn-1@mx.example.org>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@example.com\r\nTo: {recipient}\r\nMessage-ID: {original_message_id}\r\n"
        "Subject: Re: Invoice [#1001]\r\n"
        "\r\n--B--\r\n"
    ).encode()


def outgoing_files() -> list[pathlib.Path]:
    return sorted(pathlib.Path(current_app.config["HELPDESK_OUTGOING_FOLDER"]).glob("*.eml"))


def events(kind: str) -> list[TicketEvent]:
    return list(db.session.scalars(sa.select(TicketEvent).where(TicketEvent.kind == kind)))


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_a_new_ticket_is_acknowledged_with_its_number_by_mail():
    before = set(outgoing_files())
    intake = take_in_email(raw_email("<new-1@example.org>"), "test")
    ticket = intake.result.ticket
    [ack_file] = set(outgoing_files()) - before
    ack = email.message_from_bytes(ack_file.read_bytes(), policy=email.policy.default)
    assert ack["To"] == "maria@example.org"
    assert f"[#{ticket.number}]" in ack["Subject"]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["In-Reply-To"] == "<new-1@example.org>"
    assert f"#{ticket.number}" in ack.get_content()
    assert [e.data["address"] for e in events("acknowledgement.sent")] == ["maria@example.org"]


def test_a_customer_reply_to_the_acknowledgement_joins_the_ticket_without_a_second_acknowledgement():
    first = take_in_email(raw_email("<new-1@example.org>"), "test").result
    ack = db.session.scalar(sa.select(Message).where(Message.is_automatic.is_(True)))
    answer = take_in_email(raw_email("<new-2@example.org>", headers={"In-Reply-To": ack.external_id}), "test")
    assert answer.result.ticket.id == first.ticket.id
    assert len(events("acknowledgement.sent")) == 1


def test_auto_replies_are_stored_but_never_acknowledged_and_never_reopen_a_solved_ticket():
    first = take_in_email(raw_email("<new-1@example.org>"), "test").result
    change_field(first.ticket, "status", TicketStatus.SOLVED)
    db.session.commit()
    ooo = take_in_email(raw_email("<ooo-1@example.org>", subject=f"Out of office Re: VAT [#{first.ticket.number}]",
                                  headers={"Auto-Submitted": "auto-replied"}), "test").result
    assert ooo.ticket.id == first.ticket.id and ooo.message.is_automatic
    assert db.session.get(Ticket, first.ticket.id).status is TicketStatus.SOLVED
    stranger_ooo = take_in_email(raw_email("<ooo-2@example.org>", sender="bot@example.net",
                                           headers={"X-Autoreply": "yes"}), "test").result
    assert stranger_ooo.is_new_ticket
    assert len(events("acknowledgement.sent")) == 1


def test_acknowledgements_to_one_sender_are_rate_limited():
    for n in range(5):
        take_in_email(raw_email(f"<flood-{n}@example.org>", subject=f"Request {n}"), "test")
    assert count(Ticket) == 5
    assert len(events("acknowledgement.sent")) == 3
    held = events("acknowledgement.held")
    assert len(held) == 2 and "3 acknowledgements to this address" in held[0].reason


def test_our_own_outgoing_mail_coming_back_is_dropped():
    ticket = take_in_email(raw_email("<new-1@example.org>"), "test").result.ticket
    agent = make_agent()
    db.session.commit()
    sent = reply(ticket, agent, "Fixed it.")
    messages_before = count(Message)
    loop = take_in_email(raw_email(sent.external_id, sender="support@example.com", subject="Re: VAT"), "test")
    assert loop.result is None and loop.dropped_reason == "our own outgoing mail came back"
    assert count(Message) == messages_before


def test_a_bounce_marks_our_reply_failed_and_the_address_bouncing_and_files_the_report_on_the_ticket():
    ticket = take_in_email(raw_email("<new-1@example.org>"), "test").result.ticket
    agent = make_agent()
    db.session.commit()
    sent = reply(ticket, agent, "Fixed it.")
    deliver_due(current_app.extensions["helpdesk.channels"])
    report = delivery_status_report(sent.external_id)
    intake = take_in_email(report, "test")
    assert intake.result.ticket.id == ticket.id and intake.result.message.is_automatic
    db.session.expire_all()
    failed = db.session.get(Message, sent.id)
    assert failed.delivery_status is DeliveryStatus.FAILED
    assert "5.1.1" in failed.delivery_error and "user unknown" in failed.delivery_error
    identity = db.session.scalar(sa.select(CustomerIdentity).where(CustomerIdentity.value == "maria@example.org"))
    assert identity.bouncing_since is not None and "5.1.1" in identity.bounce_reason
    assert len(events("delivery.bounced")) == 1
    assert len(events("acknowledgement.sent")) == 1  # the bounce itself is never acknowledged
    again = take_in_email(report, "test")
    assert again.result.is_duplicate and len(events("delivery.bounced")) == 1


def test_an_agent_about_to_reply_to_a_bouncing_address_is_told_on_the_ticket_page(client, login_as, auth):
    ticket = take_in_email(raw_email("<new-1@example.org>"), "test").result.ticket
    agent = make_agent()
    db.session.commit()
    login_as()
    client_page = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assert 'id="bouncing"' not in client_page
    sent = reply(ticket, agent, "Fixed it.")
    deliver_due(current_app.extensions["helpdesk.channels"])
    take_in_email(delivery_status_report(sent.external_id), "test")

    page = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assert 'id="bouncing"' in page and "Mail to maria@example.org bounced" in page and "5.1.1" in page
    # The next reply still goes to the customer, not to the mail server that sent the report.
    assert reply_route(db.session.get(Ticket, ticket.id)) == (ChannelName.EMAIL, "maria@example.org")

    # The customer fixed their mailbox: an agent takes the mark off on the customer's page.
    customer_page = f"/customers/{ticket.customer_id}"
    assert "bouncing since" in client.get(customer_page).get_data(as_text=True)
    [action] = re.findall(r'action="(/customers/\d+/identities/\d+/clear-bounce)"',
                          client.get(customer_page).get_data(as_text=True))
    assert client.post(action).status_code == 400  # without the form's CSRF token
    client.post(action, data={"csrf_token": auth.csrf_token(customer_page)})
    assert "is no longer marked as bouncing" in client.get(customer_page).get_data(as_text=True)
    assert 'id="bouncing"' not in client.get(f"/tickets/{ticket.number}").get_data(as_text=True)


def test_a_bounce_for_mail_we_do_not_know_is_kept_as_automatic_mail():
    intake = take_in_email(delivery_status_report("<unknown@elsewhere>"), "test")
    assert intake.result.message.is_automatic
    assert events("acknowledgement.sent") == []


def test_mail_whose_id_only_looks_like_one_of_ours_is_kept():
    never_sent = "<helpdesk.0123456789abcdef0123456789abcdef@helpdesk.localhost>"
    intake = take_in_email(raw_email(never_sent), "test")
    assert intake.dropped_reason is None and intake.result.message.external_id == never_sent
