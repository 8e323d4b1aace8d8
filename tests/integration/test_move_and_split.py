"""Agents put a misfiled message right: move it to another ticket, or split it into a new one."""

import pytest
import sqlalchemy as sa

from channels.messages import Attachment, IdentityKind, SenderIdentity
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Message, Priority, Ticket, TicketEvent, Tier
from helpdesk.tickets import MoveRefused, move_message, split_message
from tests.factories import make_agent, make_inbound

pytestmark = pytest.mark.integration

MARIA = SenderIdentity(IdentityKind.EMAIL, "maria@example.org")


@pytest.fixture
def agent():
    agent = make_agent()
    db.session.commit()
    return agent


def events_of(ticket) -> list[tuple[str, dict]]:
    rows = db.session.scalars(sa.select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id))
    return [(row.kind, row.data) for row in rows]


def test_a_misfiled_message_moves_with_its_attachments_and_both_tickets_record_it(agent):
    first = ingest(make_inbound(sender=MARIA, subject="VAT")).ticket
    second = ingest(make_inbound(sender=MARIA, subject="Delivery")).ticket
    wrong = ingest(make_inbound(sender=MARIA, text="About the delivery...", attachments=(
        Attachment("label.pdf", "application/pdf", b"%PDF"),), thread=_hint(first))).message
    assert wrong.ticket_id == first.id
    move_message(wrong, second, agent, reason="customer wrote about the delivery")
    db.session.commit()
    moved = db.session.get(Message, wrong.id)
    assert moved.ticket_id == second.id and moved.attachments[0].filename == "label.pdf"
    expected = {"message_id": wrong.id, "from": first.number, "to": second.number}
    assert ("message.moved_out", expected) in events_of(first)
    assert ("message.moved_in", expected) in events_of(second)


def test_moving_a_message_onto_its_own_ticket_is_refused(agent):
    result = ingest(make_inbound())
    with pytest.raises(MoveRefused):
        move_message(result.message, result.ticket, agent)


def test_a_message_split_off_becomes_a_new_ticket_of_its_author_keeping_triage(agent):
    first = ingest(make_inbound(sender=MARIA, subject="VAT")).ticket
    first.priority = Priority.HIGH
    first.tier = Tier.SECOND_LINE
    db.session.commit()
    other_topic = ingest(make_inbound(sender=MARIA, subject="New topic: my password", thread=_hint(first))).message
    new_ticket = split_message(other_topic, agent)
    db.session.commit()
    assert new_ticket.number != first.number
    assert (new_ticket.subject, new_ticket.customer_id) == ("New topic: my password", first.customer_id)
    assert (new_ticket.priority, new_ticket.tier) == (Priority.HIGH, Tier.SECOND_LINE)
    assert db.session.get(Message, other_topic.id).ticket_id == new_ticket.id
    created = [data for kind, data in events_of(new_ticket) if kind == "ticket.created"]
    assert created and db.session.scalar(sa.select(sa.func.count()).select_from(Ticket)) == 2


def _hint(ticket):
    from channels.messages import ThreadHints

    return ThreadHints(ticket_number=ticket.number)


def test_agents_move_and_split_messages_from_the_ticket_page(client, auth, login_as):
    login_as("agent")
    first = ingest(make_inbound(sender=MARIA, subject="VAT")).ticket
    second = ingest(make_inbound(sender=MARIA, subject="Delivery")).ticket
    wrong = ingest(make_inbound(sender=MARIA, thread=_hint(first))).message
    token = auth.csrf_token(f"/tickets/{first.number}")
    assert client.post(f"/tickets/{first.number}/messages/{wrong.id}/move",
                       data={"target": f"#{second.number}", "csrf_token": token}).status_code == 302
    db.session.expire_all()
    assert db.session.get(Message, wrong.id).ticket_id == second.id
    # The message is no longer on the first ticket, so acting on it there is a 404.
    assert client.post(f"/tickets/{first.number}/messages/{wrong.id}/split",
                       data={"csrf_token": token}).status_code == 404
    assert client.post(f"/tickets/{second.number}/messages/{wrong.id}/move",
                       data={"target": "soon", "csrf_token": token}).status_code == 400
    response = client.post(f"/tickets/{second.number}/messages/{wrong.id}/split", data={"csrf_token": token})
    assert response.status_code == 302
    db.session.expire_all()
    new_number = db.session.get(Message, wrong.id).ticket.number
    assert new_number not in (first.number, second.number)
    assert response.headers["Location"].endswith(f"/tickets/{new_number}")
