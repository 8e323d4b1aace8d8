"""Replies are committed with an outbox row, then delivered by the job at most once per success."""

import datetime as dt

import pytest
import sqlalchemy as sa

from channels.base import ChannelRegistry
from channels.messages import ChannelName, DeliveryResult, DeliveryStatus, IdentityKind, SenderIdentity
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Message, OutboxItem, OutboxState, TicketEvent, TicketStatus
from helpdesk.models.base import utcnow
from helpdesk.outbound import ReplyRefused, deliver_due, reply
from tests.factories import make_agent, make_inbound

pytestmark = pytest.mark.integration


class RecordingChannel:
    """Records what it was asked to send and answers with the next scripted result."""

    def __init__(self, name, results=()):
        self.name = ChannelName(name)
        self.sent = []
        self.results = list(results)

    def send(self, message):
        self.sent.append(message)
        if self.results:
            result = self.results.pop(0)
            if isinstance(result, Exception):
                raise result
            return result
        return DeliveryResult(DeliveryStatus.SENT, provider_id=f"P{len(self.sent)}")


def registry_with(*channels):
    registry = ChannelRegistry()
    for channel in channels:
        registry.register(channel)
    return registry


@pytest.fixture
def agent():
    agent = make_agent()
    db.session.commit()
    return agent


def test_a_reply_goes_back_on_the_channel_and_address_the_customer_last_used(agent):
    maria_email = SenderIdentity(IdentityKind.EMAIL, "maria@example.org")
    ticket = ingest(make_inbound(sender=maria_email, subject="VAT")).ticket
    ingest(make_inbound(channel="sms", sender=SenderIdentity(IdentityKind.PHONE, "+34600123456"),
                        other_identities=(maria_email,), thread=ticket_hint(ticket)))
    message = reply(ticket, agent, "Fixed.")
    sms = RecordingChannel("sms")
    assert deliver_due(registry_with(sms, RecordingChannel("email"))) == 1
    [sent] = sms.sent
    assert (sent.recipient, sent.text) == ("+34600123456", "Fixed.")
    db.session.expire_all()
    assert db.session.get(Message, message.id).delivery_status is DeliveryStatus.SENT


def ticket_hint(ticket):
    from channels.messages import ThreadHints

    return ThreadHints(ticket_number=ticket.number)


def test_an_email_reply_carries_threading_ids_and_the_ticket_token(agent):
    first = ingest(make_inbound(external_id="<q1@example.org>", dedupe_key="email:<q1@example.org>", subject="VAT"))
    message = reply(first.ticket, agent, "Fixed.")
    email = RecordingChannel("email")
    deliver_due(registry_with(email))
    [sent] = email.sent
    assert sent.external_id == message.external_id and sent.external_id.startswith("<helpdesk.")
    assert sent.reply_to_external_ids == ("<q1@example.org>",)
    assert sent.subject == f"Re: VAT [#{first.ticket.number}]"


def test_the_first_public_reply_opens_a_new_ticket_and_records_the_first_response(agent):
    ticket = ingest(make_inbound()).ticket
    reply(ticket, agent, "On it.", new_status=TicketStatus.PENDING)
    assert ticket.first_responded_at is not None
    assert ticket.status is TicketStatus.PENDING
    kinds = db.session.scalars(sa.select(TicketEvent.kind).where(TicketEvent.ticket_id == ticket.id)
                               .order_by(TicketEvent.id)).all()
    # (Going pending also pauses the SLA clock, which is an event of its own.)
    assert [kind for kind in kinds if not kind.startswith("sla.")][-3:] == [
        "reply.added", "status.changed", "status.changed"]


def test_an_internal_note_is_never_sent(agent):
    ticket = ingest(make_inbound()).ticket
    note = reply(ticket, agent, "Customer is on the legacy plan", is_public=False)
    email = RecordingChannel("email")
    assert deliver_due(registry_with(email)) == 0
    assert email.sent == [] and note.delivery_status is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 0


def test_an_empty_reply_is_refused(agent):
    ticket = ingest(make_inbound()).ticket
    with pytest.raises(ReplyRefused):
        reply(ticket, agent, "   ")


def test_a_temporary_failure_is_retried_later_with_backoff_and_then_sent_once(agent):
    ticket = ingest(make_inbound()).ticket
    message = reply(ticket, agent, "Hello")
    email = RecordingChannel("email", [DeliveryResult(DeliveryStatus.FAILED, error="421 try later", is_temporary=True)])
    registry = registry_with(email)
    deliver_due(registry)
    item = db.session.scalars(sa.select(OutboxItem)).one()
    assert item.state is OutboxState.PENDING and item.next_attempt_at > utcnow()
    assert deliver_due(registry) == 0  # not due yet
    item.next_attempt_at = utcnow() - dt.timedelta(seconds=1)
    db.session.commit()
    assert deliver_due(registry) == 1
    assert len(email.sent) == 2
    db.session.expire_all()
    assert db.session.get(Message, message.id).delivery_status is DeliveryStatus.SENT
    assert deliver_due(registry) == 0 and len(email.sent) == 2


def test_a_permanent_failure_marks_the_message_failed_with_the_reason(agent):
    ticket = ingest(make_inbound()).ticket
    message = reply(ticket, agent, "Hello")
    email = RecordingChannel("email", [DeliveryResult(DeliveryStatus.FAILED, error="550 no such user")])
    deliver_due(registry_with(email))
    db.session.expire_all()
    stored = db.session.get(Message, message.id)
    assert (stored.delivery_status, stored.delivery_error) == (DeliveryStatus.FAILED, "550 no such user")
    failed = db.session.scalars(sa.select(TicketEvent).where(TicketEvent.kind == "delivery.failed")).one()
    assert failed.reason == "550 no such user"


def test_a_channel_that_crashes_does_not_stop_other_deliveries(agent):
    first = reply(ingest(make_inbound()).ticket, agent, "one")
    second = reply(ingest(make_inbound()).ticket, agent, "two")
    email = RecordingChannel("email", [RuntimeError("bug in adapter")])
    assert deliver_due(registry_with(email)) == 2
    db.session.expire_all()
    assert db.session.get(Message, first.id).delivery_error == "RuntimeError: bug in adapter"
    assert db.session.get(Message, second.id).delivery_status is DeliveryStatus.SENT


def test_an_item_claimed_by_a_live_worker_is_not_sent_again_but_a_stale_claim_is_taken_over(agent):
    reply(ingest(make_inbound()).ticket, agent, "Hello")
    item = db.session.scalars(sa.select(OutboxItem)).one()
    item.state = OutboxState.SENDING
    item.claimed_at = utcnow()
    db.session.commit()
    email = RecordingChannel("email")
    assert deliver_due(registry_with(email)) == 0
    item.claimed_at = utcnow() - dt.timedelta(hours=1)
    db.session.commit()
    assert deliver_due(registry_with(email)) == 1


def test_one_delivery_run_sends_everything_due_however_many_batches_it_takes(agent):
    tickets = [ingest(make_inbound(subject=f"Question {n}")).ticket for n in range(5)]
    messages = [reply(ticket, agent, "Answered.") for ticket in tickets]
    email = RecordingChannel("email")

    assert deliver_due(registry_with(email), limit=2) == 5

    assert sorted(sent.external_id for sent in email.sent) == sorted(message.external_id for message in messages)
    assert db.session.scalars(sa.select(OutboxItem.state)).all() == [OutboxState.SENT] * 5
    assert deliver_due(registry_with(email), limit=2) == 0
