"""Visitors' messages written by one thread, many per transaction: each once, in order, each answered after its
commit; and what the chat stores through it."""

import pytest
import sqlalchemy as sa
from flask import current_app

from channels.messages import ChannelName, IdentityKind, SenderIdentity
from helpdesk import group_ingest
from helpdesk.extensions import db
from helpdesk.group_ingest import GroupIngest
from helpdesk.ingest import IngestError, ingest
from helpdesk.models import Message, Ticket, TicketStatus
from helpdesk.tickets import change_field
from tests.factories import make_inbound
from tests.integration.engine_events import commits

pytestmark = pytest.mark.integration


def chat(visitor: str, number: int, text: str = "Where is my parcel?"):
    return make_inbound(channel=ChannelName.CHAT, sender=SenderIdentity(IdentityKind.VISITOR, visitor),
                        external_id=f"{visitor}-{number}", dedupe_key=f"chat:{visitor}:{number}", text=text)


def store_as_one_batch(messages) -> list:
    """Queue every message before the writer starts, so its first batch holds them all; return each outcome."""
    writer = GroupIngest(current_app._get_current_object(), start_writer=False)
    handed = [writer.submit(inbound) for inbound in messages]
    writer.start()
    outcomes = []
    for pending in handed:
        try:
            outcomes.append(pending.wait(timeout=30))
        except IngestError as error:
            outcomes.append(error)
    db.session.rollback()  # read what the writer committed
    return outcomes


def stored_keys(visitor: str) -> list[str]:
    return list(db.session.scalars(sa.select(Message.dedupe_key).where(Message.address == visitor)
                                   .order_by(Message.id)))


def test_follow_ups_that_arrive_together_are_committed_together(app):
    visitors = [f"visitor-{n}" for n in range(5)]
    for visitor in visitors:
        ingest(chat(visitor, 0))  # each has a conversation under way
    follow_ups = [chat(visitor, number) for number in (1, 2) for visitor in visitors]
    with commits() as counted:
        outcomes = store_as_one_batch(follow_ups)
    assert len(counted) == 1, "ten follow-ups, one transaction"
    for inbound, outcome in zip(follow_ups, outcomes, strict=True):
        assert not outcome.is_duplicate and not outcome.is_new_ticket
        assert db.session.get(Message, outcome.message_id).dedupe_key == inbound.dedupe_key
    for visitor in visitors:
        assert stored_keys(visitor) == [f"chat:{visitor}:{number}" for number in (0, 1, 2)]


def test_a_message_resent_within_a_batch_is_stored_once(app):
    ingest(chat("visitor-a", 0))
    first, again, after = store_as_one_batch([chat("visitor-a", 1), chat("visitor-a", 1), chat("visitor-a", 2)])
    assert not first.is_duplicate and again.is_duplicate and again.message_id == first.message_id
    assert not after.is_duplicate
    assert stored_keys("visitor-a") == ["chat:visitor-a:0", "chat:visitor-a:1", "chat:visitor-a:2"]


def test_a_new_visitor_in_a_batch_opens_a_ticket_and_each_sender_keeps_their_order(app):
    ingest(chat("visitor-b", 0))
    ticket_b = db.session.scalar(sa.select(Ticket.id))
    outcomes = store_as_one_batch([chat("visitor-new", 0), chat("visitor-b", 1), chat("visitor-new", 1)])
    opened, continued, next_one = outcomes
    assert opened.is_new_ticket and next_one.ticket_id == opened.ticket_id
    assert continued.ticket_id == ticket_b and not continued.is_new_ticket
    # The new visitor's second message waited for the first one, which opened the ticket.
    assert stored_keys("visitor-new") == ["chat:visitor-new:0", "chat:visitor-new:1"]


def test_a_pending_ticket_in_a_batch_still_wakes(app):
    ticket = ingest(chat("visitor-d", 0)).ticket
    change_field(ticket, "status", TicketStatus.PENDING)
    db.session.commit()
    [woken] = store_as_one_batch([chat("visitor-d", 1)])
    assert woken.ticket_id == ticket.id
    db.session.refresh(ticket)
    assert ticket.status == TicketStatus.OPEN


def test_a_message_that_fails_is_reported_to_its_sender_only(app, monkeypatch):
    ingest(chat("visitor-c", 0))
    real_ingest = group_ingest.ingest

    def failing(inbound):
        if inbound.dedupe_key == "chat:visitor-broken:0":
            raise IngestError("database unavailable")
        return real_ingest(inbound)

    monkeypatch.setattr(group_ingest, "ingest", failing)
    before, broken, after = store_as_one_batch([chat("visitor-c", 1), chat("visitor-broken", 0), chat("visitor-c", 2)])
    assert isinstance(broken, IngestError)
    assert not isinstance(before, Exception) and not isinstance(after, Exception)
    assert stored_keys("visitor-c") == ["chat:visitor-c:0", "chat:visitor-c:1", "chat:visitor-c:2"]
    assert stored_keys("visitor-broken") == []


def test_a_writer_that_is_not_started_keeps_its_callers_waiting_then_times_out(app):
    writer = GroupIngest(current_app._get_current_object(), start_writer=False)
    with pytest.raises(IngestError, match="not stored within"):
        writer.submit(chat("visitor-e", 0)).wait(timeout=0.2)
