"""The dedupe key: a message delivered again is stored once and nothing else changes."""

import sqlalchemy as sa

from channels.messages import Attachment
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Attachment as AttachmentRow
from helpdesk.models import Customer, Message, Ticket, TicketEvent
from tests.factories import make_inbound


def counts():
    return {model.__name__: db.session.scalar(sa.select(sa.func.count()).select_from(model))
            for model in (Customer, Ticket, Message, TicketEvent, AttachmentRow)}


def test_the_same_message_twice_is_stored_once_and_returns_the_first():
    inbound = make_inbound(attachments=(Attachment("a.txt", "text/plain", b"hello"),))
    first = ingest(inbound)
    before = counts()
    second = ingest(inbound)
    assert not first.is_duplicate and second.is_duplicate
    assert second.message.id == first.message.id
    assert second.ticket.number == first.ticket.number
    assert counts() == before == {"Customer": 1, "Ticket": 1, "Message": 1, "TicketEvent": 2, "Attachment": 1}


def test_a_redelivery_with_different_content_is_still_the_same_message():
    first = ingest(make_inbound(dedupe_key="email:<x@example.org>", text="original"))
    second = ingest(make_inbound(dedupe_key="email:<x@example.org>", text="changed on redelivery"))
    assert second.is_duplicate
    assert db.session.get(Message, first.message.id).text == "original"


def test_different_dedupe_keys_are_different_messages():
    sender = make_inbound().sender
    ingest(make_inbound(sender=sender, channel="sms", dedupe_key="sms:SM1"))
    ingest(make_inbound(sender=sender, channel="sms", dedupe_key="sms:SM2"))
    assert counts()["Message"] == 2
