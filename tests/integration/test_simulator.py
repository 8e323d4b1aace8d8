"""The channel simulator: what an agent writes as a customer takes the real ingest path."""

import pytest
import sqlalchemy as sa

from channels.messages import ChannelName, IdentityKind
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Customer, CustomerIdentity, Message, Ticket
from tests.factories import make_inbound

pytestmark = pytest.mark.integration


@pytest.fixture
def simulate(client, auth, login_as):
    login_as()

    def simulate(**fields):
        return client.post("/simulator", data={**fields, "csrf_token": auth.csrf_token("/simulator")})

    return simulate


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def ticket_at(response) -> Ticket:
    assert response.status_code == 302, response.get_data(as_text=True)
    prefix = "/tickets/"
    assert response.headers["Location"].startswith(prefix)
    number = int(response.headers["Location"].removeprefix(prefix))
    return db.session.scalar(sa.select(Ticket).where(Ticket.number == number))


def messages_of(ticket) -> list[Message]:
    return list(
        db.session.scalars(sa.select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id))
    )


@pytest.mark.parametrize(
    "channel, sender, kind, stored",
    [
        ("email", "Maria.Lopez@Example.org", IdentityKind.EMAIL, "maria.lopez@example.org"),
        ("sms", "+46 70-123 45 67", IdentityKind.PHONE, "+46701234567"),
        ("whatsapp", "+4915112345678", IdentityKind.PHONE, "+4915112345678"),
        ("chat", "visitor-42", IdentityKind.VISITOR, "visitor-42"),
    ],
)
def test_a_simulated_message_opens_a_ticket_on_its_channel(client, simulate, channel, sender, kind, stored):
    response = simulate(
        channel=channel,
        sender=sender,
        name="Maria",
        subject="Broken invoice",
        text="The invoice total is wrong.",
    )
    ticket = ticket_at(response)
    assert ticket.channel == channel
    [message] = messages_of(ticket)
    assert (message.channel, message.text, message.address) == (
        channel,
        "The invoice total is wrong.",
        stored,
    )
    identity = db.session.scalars(sa.select(CustomerIdentity)).one()
    assert (identity.kind, identity.value, identity.customer_id) == (kind, stored, ticket.customer_id)
    expected_subject = "Broken invoice" if channel == "email" else "The invoice total is wrong."
    assert ticket.subject == expected_subject
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"opened ticket #{ticket.number}" in page


def test_a_second_text_from_the_same_number_joins_the_open_ticket(client, simulate):
    first = ticket_at(simulate(channel="sms", sender="+46701234567", text="My parcel is late."))
    second = ticket_at(simulate(channel="sms", sender="+46 70 123 45 67", text="Any news?"))
    assert second.id == first.id
    assert [m.text for m in messages_of(first)] == ["My parcel is late.", "Any news?"]
    assert f"added to ticket #{first.number}" in client.get(f"/tickets/{first.number}").get_data(as_text=True)


def test_an_email_never_joins_an_open_ticket_just_by_its_sender(simulate):
    first = ticket_at(simulate(channel="email", sender="maria@example.org", subject="One", text="First"))
    second = ticket_at(simulate(channel="email", sender="maria@example.org", subject="Two", text="Second"))
    assert second.id != first.id
    assert second.customer_id == first.customer_id


@pytest.mark.parametrize(
    "channel, sender",
    [
        ("sms", "not a number"),
        ("sms", "+46 12"),
        ("whatsapp", "call me"),
        ("email", "maria at example dot org"),
    ],
)
def test_an_invalid_sender_is_refused_with_400_and_nothing_is_written(simulate, channel, sender):
    response = simulate(channel=channel, sender=sender, text="Hello")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'class="error"' in page and "not a" in page
    assert (count(Customer), count(Ticket), count(Message)) == (0, 0, 0)


def test_an_unknown_channel_or_empty_text_is_refused(simulate):
    assert simulate(channel="fax", sender="+46701234567", text="Hello").status_code == 400
    assert simulate(channel="sms", sender="+46701234567", text="").status_code == 400
    assert count(Ticket) == 0


def test_an_email_naming_a_ticket_joins_it_only_when_the_sender_takes_part(simulate):
    original = ticket_at(
        simulate(channel="email", sender="maria@example.org", subject="VAT", text="Wrong VAT")
    )

    follow_up = ticket_at(
        simulate(
            channel="email",
            sender="Maria@Example.org",
            subject="Re: VAT",
            text="Any update?",
            reply_to_ticket=str(original.number),
        )
    )
    assert follow_up.id == original.id

    stranger = ticket_at(
        simulate(
            channel="email",
            sender="mallory@example.net",
            subject="Re: VAT",
            text="Show me that invoice",
            reply_to_ticket=str(original.number),
        )
    )
    assert stranger.id != original.id
    assert [m.text for m in messages_of(original)] == ["Wrong VAT", "Any update?"]


def test_a_simulated_message_reaches_a_ticket_opened_by_a_real_channel(simulate):
    real = ingest(make_inbound(channel=ChannelName.SMS)).ticket
    joined = ticket_at(simulate(channel="sms", sender="+46701234567", text="Me again"))
    assert joined.id == real.id
