"""The next-response clock around customer messages and agents' replies, and the acknowledgement's language."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from channels.messages import Attachment, IdentityKind, SenderIdentity, ThreadHints
from helpdesk.email_intake import take_in_email
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Message, MessageTemplate, SlaAlert, TicketEvent, TicketStatus
from helpdesk.outbound import reply
from helpdesk.tickets import change_field
from helpdesk.triage.calendar import calendar_from_dict
from helpdesk.triage.clock import is_met
from helpdesk.triage.config_io import import_policies
from helpdesk.triage.sla import add_business_minutes
from helpdesk.triage.summary import ticket_triage_summary
from helpdesk.triage.sweep import sweep_sla
from tests.factories import make_agent, make_inbound
from tests.integration.engine_events import statements_sent

pytestmark = pytest.mark.integration

POLICIES = {
    "policies": [
        {"name": "Standard", "default": True,
         "calendar": {"name": "Around the clock", "timezone": "UTC", "always_open": True},
         "targets": {"normal": {"first_response": 60, "next_response": 30, "resolution": 6000}}},
    ]
}
ALWAYS_OPEN = calendar_from_dict(POLICIES["policies"][0]["calendar"])
SENDER = SenderIdentity(IdentityKind.EMAIL, "maria@example.org", "Maria Lopez")


@pytest.fixture
def policy():
    import_policies(json.dumps(POLICIES), filename="policies.json")


def write_again(ticket, text: str):
    return ingest(make_inbound(sender=SENDER, thread=ThreadHints(ticket_number=ticket.number), text=text)).message


def alerts(ticket, target: str) -> list[str]:
    return list(db.session.scalars(
        sa.select(SlaAlert.kind).where(SlaAlert.ticket_id == ticket.id, SlaAlert.target == target).order_by(SlaAlert.id)
    ))


def test_each_customer_message_after_a_reply_sets_a_next_response_due_and_a_public_reply_meets_it(policy):
    ticket = ingest(make_inbound(sender=SENDER, subject="Refund")).ticket
    agent = make_agent()
    db.session.commit()
    assert ticket.next_response_due_at is None  # the first response covers the first message
    reply(ticket, agent, "We are on it.")
    assert ticket.next_response_due_at is None

    asked = write_again(ticket, "Any news?")
    assert ticket.next_response_due_at == add_business_minutes(asked.created_at, 30, ALWAYS_OPEN)
    assert not is_met(ticket, "next_response")

    reply(ticket, agent, "Checking with billing.", is_public=False)
    assert not is_met(ticket, "next_response"), "an internal note is no answer to the customer"
    reply(ticket, agent, "Refunded today.")
    assert is_met(ticket, "next_response")
    met = {target.target: target.state for target in ticket_triage_summary(ticket).targets}
    assert met["next_response"] == "met"

    # Long after the due time the sweep finds nothing to warn about, breach or escalate.
    sweep_sla(now=asked.created_at + dt.timedelta(hours=2))
    assert alerts(ticket, "next_response") == []
    kinds = set(db.session.scalars(sa.select(TicketEvent.kind).where(TicketEvent.ticket_id == ticket.id)))
    assert not kinds & {"sla.breached", "sla.escalated", "sla.warning"}

    again = write_again(ticket, "It has not arrived.")
    assert ticket.next_response_due_at == add_business_minutes(again.created_at, 30, ALWAYS_OPEN)
    sweep_sla(now=again.created_at + dt.timedelta(minutes=31))
    assert alerts(ticket, "next_response") == ["breach", "escalation"]
    sweep_sla(now=again.created_at + dt.timedelta(minutes=45))
    assert alerts(ticket, "next_response") == ["breach", "escalation"]


def raw_email(message_id: str, subject: str, body: str) -> bytes:
    return (f"From: Maria Lopez <maria@example.org>\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: {message_id}\r\nDate: Mon, 23 Nov 2026 09:00:00 +0100\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def acknowledgement_of(ticket) -> str:
    return db.session.scalar(
        sa.select(Message.text).where(Message.ticket_id == ticket.id, Message.is_automatic.is_(True))
    )


def test_a_customer_writing_again_while_waiting_keeps_the_next_check_without_reading_alerts(policy):
    ticket = ingest(make_inbound(sender=SENDER, subject="Refund")).ticket
    db.session.commit()
    check_at = ticket.sla_check_at
    assert check_at is not None
    with statements_sent() as statements:
        write_again(ticket, "Any news?")
    assert statements, "the listener saw the ingest"
    assert not [statement for statement in statements if "sla_alert" in statement or "sla_pause" in statement]
    db.session.refresh(ticket)
    assert ticket.sla_check_at == check_at


def test_a_customer_answering_a_pending_ticket_with_a_file_starts_its_checks_again(policy):
    ticket = ingest(make_inbound(sender=SENDER, subject="Refund")).ticket
    reply(ticket, make_agent(), "Could you send the receipt?")
    change_field(ticket, "status", TicketStatus.PENDING)
    db.session.commit()
    assert ticket.sla_check_at is None, "pending stops the clocks"
    receipt = Attachment("receipt.pdf", "application/pdf", b"%PDF-1.4 receipt")
    ingest(make_inbound(sender=SENDER, thread=ThreadHints(ticket_number=ticket.number), text="Here it is.",
                        attachments=(receipt,)))
    db.session.refresh(ticket)
    assert ticket.status == TicketStatus.OPEN
    assert ticket.next_response_due_at is not None
    # The message with a file is flushed before triage runs: the check is still worked out again.
    assert ticket.sla_check_at is not None
    assert ticket.sla_check_at <= ticket.next_response_due_at


def test_the_acknowledgement_is_sent_in_the_language_detected_on_the_message(policy):
    db.session.add_all([
        MessageTemplate(name="acknowledgement", language=None, body="Thanks, ticket {{ ticket.number }}."),
        MessageTemplate(name="acknowledgement", language="sv", body="Tack, ärende {{ ticket.number }}."),
    ])
    db.session.commit()
    swedish = take_in_email(raw_email(
        "<sv-1@example.org>", "Fakturan är fel",
        "Hej! Fakturan som jag fick i går har fel belopp och jag vill att ni skickar en ny faktura till mig.",
    ), "test").result.ticket
    german = take_in_email(raw_email(
        "<de-1@example.org>", "Die Rechnung ist falsch",
        "Guten Tag, die Rechnung, die ich gestern bekommen habe, hat den falschen Betrag. Bitte schicken Sie "
        "mir eine neue Rechnung.",
    ), "test").result.ticket
    assert (swedish.language, german.language) == ("sv", "de")
    assert acknowledgement_of(swedish) == f"Tack, ärende {swedish.number}."
    assert acknowledgement_of(german) == f"Thanks, ticket {german.number}."
