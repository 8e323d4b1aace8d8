"""The `flask --app wsgi helpdesk ...` commands, through Click's runner on the test database."""

import pytest
import sqlalchemy as sa

from helpdesk.extensions import db
from helpdesk.models import Agent, Customer, Message, QuarantinedMessage, Role, Ticket, TicketStatus, Tier
from tests.factories import make_agent

pytestmark = pytest.mark.integration

RAW_EMAIL = (
    b"From: Maria Lopez <maria@example.org>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: Invoice shows the wrong VAT\r\n"
    b"Message-ID: <vat-1@example.org>\r\n"
    b"Date: Mon, 23 Nov 2026 09:00:00 +0100\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello, the VAT on invoice 42 is wrong.\r\n"
)


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_create_admin_creates_an_admin_who_can_log_in(runner, auth):
    result = runner.invoke(args=["helpdesk", "create-admin", "Boss@Example.com", "--password", "a long password"])
    assert result.exit_code == 0, result.output
    agent = db.session.scalar(sa.select(Agent).where(Agent.email == "boss@example.com"))
    assert agent.role is Role.ADMIN
    assert auth.login("boss@example.com", "a long password").status_code == 302


def test_create_admin_promotes_an_existing_agent_and_refuses_a_short_password(runner):
    agent = make_agent(email="sam@example.com")
    db.session.commit()
    assert runner.invoke(args=["helpdesk", "create-admin", "sam@example.com"]).exit_code == 0
    assert db.session.get(Agent, agent.id).role is Role.ADMIN
    refused = runner.invoke(args=["helpdesk", "create-admin", "new@example.com", "--password", "short"])
    assert refused.exit_code != 0 and "at least 10 characters" in refused.output
    assert db.session.scalar(sa.select(Agent).where(Agent.email == "new@example.com")) is None


def test_create_api_token_prints_a_working_token_on_its_last_line(runner, client):
    make_agent(email="sam@example.com")
    db.session.commit()
    result = runner.invoke(args=["helpdesk", "create-api-token", "sam@example.com"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert client.get("/api/v1/tickets", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_create_api_token_refuses_an_unknown_agent(runner):
    result = runner.invoke(args=["helpdesk", "create-api-token", "nobody@example.com"])
    assert result.exit_code != 0 and "no active agent" in result.output


def test_ingest_email_from_a_file_then_again_from_stdin_stores_one_message(runner, tmp_path):
    path = tmp_path / "vat.eml"
    path.write_bytes(RAW_EMAIL)
    first = runner.invoke(args=["helpdesk", "ingest-email", str(path)])
    assert first.exit_code == 0, first.output
    assert "new ticket #1001" in first.output
    again = runner.invoke(args=["helpdesk", "ingest-email", "-"], input=RAW_EMAIL)
    assert again.exit_code == 0 and "duplicate of #1001" in again.output
    message = db.session.scalars(sa.select(Message).where(Message.direction == "inbound")).one()
    assert (message.external_id, message.address) == ("<vat-1@example.org>", "maria@example.org")
    assert message.ticket.subject == "Invoice shows the wrong VAT"


def test_unparseable_mail_is_quarantined_with_its_bytes_and_requeue_keeps_it_until_fixed(runner):
    garbage = b"this is not an email at all\r\n\r\nno headers"
    result = runner.invoke(args=["helpdesk", "ingest-email", "-"], input=garbage)
    assert result.exit_code != 0 and "quarantined" in result.output
    row = db.session.scalars(sa.select(QuarantinedMessage)).one()
    assert row.raw == garbage and "From" in row.error and row.source == "pipe"
    requeued = runner.invoke(args=["helpdesk", "requeue-quarantined"])
    assert "0 ingested, 1 still quarantined" in requeued.output
    db.session.expire_all()
    assert db.session.get(QuarantinedMessage, row.id).attempts == 2
    assert count(Ticket) == 0


def test_requeue_ingests_a_quarantined_message_once_it_can_be_parsed(runner):
    db.session.add(QuarantinedMessage(channel="email", source="imap:support", raw=RAW_EMAIL, error="db was down"))
    db.session.commit()
    result = runner.invoke(args=["helpdesk", "requeue-quarantined"])
    assert "1 ingested, 0 still quarantined" in result.output
    assert db.session.scalars(sa.select(Message.external_id).where(Message.direction == "inbound")).all() == [
        "<vat-1@example.org>"]
    assert db.session.scalars(sa.select(QuarantinedMessage)).one().resolved_at is not None


def test_requeued_mail_is_taken_in_as_polled_mail_is_acknowledged_and_a_bounce_applied(runner):
    from flask import current_app

    from channels.messages import DeliveryStatus
    from helpdesk.email_intake import take_in_email
    from helpdesk.models import TicketEvent
    from helpdesk.outbound import deliver_due, reply
    from tests.integration.test_email_intake import delivery_status_report

    ticket = take_in_email(RAW_EMAIL, "test").result.ticket
    sent = reply(ticket, make_agent(), "Fixed it.")
    deliver_due(current_app.extensions["helpdesk.channels"])
    new_request = RAW_EMAIL.replace(b"vat-1@", b"vat-2@").replace(b"maria@", b"jon@").replace(b"VAT", b"VIES")
    for raw in (delivery_status_report(sent.external_id), new_request):
        db.session.add(QuarantinedMessage(channel="email", source="imap:support", raw=raw, error="db was down"))
    db.session.commit()

    result = runner.invoke(args=["helpdesk", "requeue-quarantined"])

    assert "2 ingested, 0 still quarantined" in result.output
    db.session.expire_all()
    failed = db.session.get(Message, sent.id)
    assert failed.delivery_status is DeliveryStatus.FAILED and "5.1.1" in failed.delivery_error
    acknowledged = db.session.scalars(sa.select(TicketEvent.data).where(TicketEvent.kind == "acknowledgement.sent"))
    assert sorted(data["address"] for data in acknowledged) == ["jon@example.org", "maria@example.org"]


def test_seed_demo_covers_every_role_status_and_tier_and_is_idempotent(runner):
    first = runner.invoke(args=["helpdesk", "seed-demo"])
    assert first.exit_code == 0, first.output
    snapshot = (count(Agent), count(Customer), count(Ticket), count(Message))
    assert runner.invoke(args=["helpdesk", "seed-demo"]).exit_code == 0
    assert (count(Agent), count(Customer), count(Ticket), count(Message)) == snapshot
    assert set(db.session.scalars(sa.select(Agent.role))) == set(Role)
    assert set(db.session.scalars(sa.select(Ticket.status))) == set(TicketStatus)
    assert set(db.session.scalars(sa.select(Ticket.tier))) == set(Tier)
    # One demo customer is known by email and by phone.
    kinds_per_customer = [sorted(i.kind.value for i in c.identities) for c in db.session.scalars(sa.select(Customer))]
    assert ["email", "phone"] in kinds_per_customer


def test_parse_email_prints_the_documented_json_without_storing_anything(runner, tmp_path):
    import json

    path = tmp_path / "vat.eml"
    path.write_bytes(RAW_EMAIL)
    result = runner.invoke(args=["helpdesk", "parse-email", str(path), "--json"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    for key in ("message_id", "in_reply_to", "references", "from_address", "from_name", "to", "cc", "subject",
                "date", "text", "html", "reply_text", "attachments", "is_auto_reply", "is_bounce", "bounce"):
        assert key in parsed
    assert (parsed["message_id"], parsed["from_address"], parsed["from_name"]) == (
        "<vat-1@example.org>", "maria@example.org", "Maria Lopez")
    assert parsed["text"].strip() == "Hello, the VAT on invoice 42 is wrong."
    assert count(Message) == 0


def test_parse_email_reports_garbage_as_an_error_object_and_a_failing_exit(runner):
    import json

    result = runner.invoke(args=["helpdesk", "parse-email", "-", "--json"], input=b"\x00\xff not mail")
    assert result.exit_code == 1
    assert "error" in json.loads(result.output)
