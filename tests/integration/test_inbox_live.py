"""The fragments the live inbox and ticket page fetch after an event: filtered, escaped, and bounded."""

import datetime as dt
import re

import pytest
import sqlalchemy as sa

from channels.messages import ChannelName, IdentityKind, SenderIdentity
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Message, Priority, TicketStatus, Tier
from helpdesk.models.base import utcnow
from helpdesk.outbound import reply
from helpdesk.tickets import change_field
from helpdesk.web.inbox import sla_due_at
from tests.factories import make_agent, make_inbound

pytestmark = pytest.mark.integration

ROW = re.compile(r'<tr data-ticket="(\d+)"')


@pytest.fixture
def agent(login_as):
    return login_as(name="Alex Agent")


def new_ticket(status=TicketStatus.NEW, tier=Tier.FIRST_LINE, assignee=None, **inbound) -> int:
    ticket = ingest(make_inbound(**inbound)).ticket
    change_field(ticket, "status", status)
    change_field(ticket, "tier", tier)
    change_field(ticket, "assignee", assignee)
    db.session.commit()
    return ticket.number


def rows(client, query: str) -> dict:
    response = client.get("/inbox/rows" + query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def numbers_of(answer) -> list[int]:
    return [row["number"] for row in answer["rows"]]


def test_asked_about_tickets_come_back_only_where_they_match_the_view(client, agent):
    fresh = new_ticket()
    waiting = new_ticket(TicketStatus.PENDING)
    escalated = new_ticket(TicketStatus.OPEN, Tier.SECOND_LINE)
    mine = new_ticket(TicketStatus.OPEN, assignee=agent)
    done = new_ticket(TicketStatus.SOLVED)
    asked = f"numbers={fresh},{waiting},{escalated},{mine},{done}"

    assert sorted(numbers_of(rows(client, f"?{asked}"))) == sorted([fresh, waiting, escalated, mine])
    assert numbers_of(rows(client, f"?view=pending&{asked}")) == [waiting]
    assert numbers_of(rows(client, f"?view=solved&{asked}")) == [done]
    assert numbers_of(rows(client, f"?tier=second_line&{asked}")) == [escalated]
    assert numbers_of(rows(client, f"?mine=1&{asked}")) == [mine]
    assert numbers_of(rows(client, "?numbers=")) == []
    assert numbers_of(rows(client, "?numbers=999999")) == []


def test_each_row_is_the_same_markup_as_the_inbox_page_and_the_counts_come_along(client, agent):
    number = new_ticket(TicketStatus.PENDING)
    answer = rows(client, f"?view=pending&numbers={number}")
    [row] = answer["rows"]
    assert ROW.match(row["html"]).group(1) == str(number)
    assert row["html"].strip() in client.get("/inbox?view=pending").get_data(as_text=True)
    assert answer["counts"]["pending"] == 1
    assert answer["complete"] is False
    assert dt.datetime.fromisoformat(row["updated_at"]).tzinfo is not None


def test_without_numbers_the_first_page_of_the_view_comes_back_newest_first(client, agent):
    older = new_ticket()
    newer = new_ticket()
    new_ticket(TicketStatus.CLOSED)
    answer = rows(client, "")
    assert numbers_of(answer) == [newer, older]
    assert answer["complete"] is True


def test_a_row_shows_the_last_message_as_text_and_the_sla_due_time(client, agent):
    ticket = ingest(make_inbound(channel=ChannelName.SMS, text="First")).ticket
    ingest(make_inbound(channel=ChannelName.SMS, text="Then <script>alert(1)</script> & more"))
    ticket.first_response_due_at = utcnow() - dt.timedelta(minutes=5)
    db.session.commit()
    [row] = rows(client, f"?numbers={ticket.number}")["rows"]
    assert "Then &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in row["html"]
    assert "<script>" not in row["html"]
    assert 'class="sla sla-overdue"' in row["html"]

    reply(ticket, make_agent(name="Sam Sender"), "On its way", is_public=False)
    [row] = rows(client, f"?numbers={ticket.number}")["rows"]
    assert re.search(r'class="last-message internal"><span class="author">Sam Sender:</span>\s*On its way', row["html"])


def test_the_sla_due_time_is_the_earliest_target_still_open():
    ticket = ingest(make_inbound()).ticket
    now = utcnow()
    ticket.first_response_due_at = now + dt.timedelta(hours=1)
    ticket.resolution_due_at = now + dt.timedelta(hours=8)
    assert sla_due_at(ticket) == now + dt.timedelta(hours=1)
    ticket.first_responded_at = now
    assert sla_due_at(ticket) == now + dt.timedelta(hours=8)
    ticket.next_response_due_at = now + dt.timedelta(hours=2)
    assert sla_due_at(ticket) == now + dt.timedelta(hours=2)
    # Answered: the stored next-response due time no longer counts, even once it has passed.
    ticket.last_customer_message_at = now - dt.timedelta(hours=3)
    ticket.next_response_due_at = now - dt.timedelta(hours=1)
    ticket.last_agent_reply_at = now - dt.timedelta(minutes=30)
    assert sla_due_at(ticket) == now + dt.timedelta(hours=8)
    ticket.last_customer_message_at = now  # the customer wrote again
    assert sla_due_at(ticket) == now - dt.timedelta(hours=1)
    ticket.status = TicketStatus.PENDING  # the clock is paused
    assert sla_due_at(ticket) is None
    ticket.status = TicketStatus.SOLVED
    assert sla_due_at(ticket) is None
    db.session.rollback()


@pytest.mark.parametrize("query, problem", [
    ("?numbers=1,abc", "numbers must be ticket numbers"),
    ("?numbers=" + ",".join(str(n) for n in range(1, 102)), "at most 100"),
])
def test_bad_numbers_are_refused_with_a_reason(client, agent, query, problem):
    response = client.get("/inbox/rows" + query, headers={"Accept": "application/json"})
    assert response.status_code == 400
    assert problem in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/inbox/rows", "/tickets/1001/live"])
def test_the_live_fragments_need_a_signed_in_agent(client, path):
    ingest(make_inbound(subject="Private matter"))
    response = client.get(path)
    assert response.status_code in (302, 401)
    assert "Private matter" not in response.get_data(as_text=True)


@pytest.fixture
def conversation(agent):
    """A ticket with a customer message, an agent's reply and a note; returns (ticket, [messages])."""
    ticket = ingest(make_inbound(subject="Wrong VAT", text="My invoice shows <b>25%</b>")).ticket
    first = db.session.scalar(sa.select(Message.id).where(Message.ticket_id == ticket.id))
    answer = reply(ticket, agent, "We are looking into it.")
    note = reply(ticket, agent, "Check the <script>x()</script> rules", is_public=False)
    return ticket, [first, answer.id, note.id]


def live(client, number: int, query: str = "") -> dict:
    response = client.get(f"/tickets/{number}/live{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_the_ticket_page_gets_the_messages_after_the_newest_it_shows(client, conversation):
    ticket, (first, answer, note) = conversation
    everything = live(client, ticket.number, "?after=0")
    assert [entry["id"] for entry in everything["messages"]] == [first, answer, note]
    assert everything["message_ids"] == [first, answer, note]
    newer = live(client, ticket.number, f"?after={answer}")
    assert [entry["id"] for entry in newer["messages"]] == [note]
    assert f'id="message-{note}"' in newer["messages"][0]["html"]
    assert "Check the &lt;script&gt;x()&lt;/script&gt; rules" in newer["messages"][0]["html"]
    assert "internal note" in newer["messages"][0]["html"]
    assert live(client, ticket.number, f"?after={note}")["messages"] == []


def test_a_changed_message_is_rendered_again_on_request(client, conversation):
    ticket, (_, answer, note) = conversation
    message = db.session.get(Message, answer)
    message.delivery_error = "mailbox full"
    db.session.commit()
    again = live(client, ticket.number, f"?after={note}&messages={answer}")
    [entry] = again["messages"]
    assert entry["id"] == answer
    assert "Delivery: mailbox full" in entry["html"]


def test_the_header_fields_and_history_follow_the_ticket(client, conversation, agent):
    ticket, (_, _, note) = conversation
    change_field(ticket, "priority", Priority.URGENT, agent=agent)
    change_field(ticket, "tier", Tier.SECOND_LINE, agent=agent)
    db.session.commit()
    answer = live(client, ticket.number, f"?after={note}")
    assert answer["fields"] == {"status": "open", "priority": "urgent", "tier": "second_line",
                                "assignee_id": str(ticket.assignee_id or "")}
    assert "urgent</span> priority" in answer["header"]
    assert "priority.changed" in answer["history"]
    assert "Hand back to first line" in answer["tier_actions"]
    assert 'data-tier="second_line"' in answer["tier_actions"]


def test_a_moved_message_leaves_the_list_of_ids(client, conversation, agent, post):
    ticket, (first, answer, note) = conversation
    other = ingest(make_inbound(subject="Another")).ticket
    assert post(f"/tickets/{ticket.number}/messages/{first}/move", target=str(other.number)).status_code == 302
    assert live(client, ticket.number, "?after=0")["message_ids"] == [answer, note]


def test_the_ticket_page_lists_the_customers_other_conversations(client, agent):
    maria = SenderIdentity(IdentityKind.EMAIL, "maria@example.org", "Maria Lopez")
    phone = SenderIdentity(IdentityKind.PHONE, "+46701234567")
    by_mail = ingest(make_inbound(sender=maria, subject="Invoice <i>question</i>")).ticket
    by_sms = ingest(make_inbound(channel=ChannelName.SMS, sender=phone, text="Any news?",
                                 other_identities=(maria,))).ticket
    someone_else = ingest(make_inbound(subject="Not Maria")).ticket

    page = client.get(f"/tickets/{by_sms.number}").get_data(as_text=True)
    others = page[page.index('id="other-conversations"'):]
    others = others[:others.index("</section>")]
    assert f'href="/tickets/{by_mail.number}"' in others
    assert "Invoice &lt;i&gt;question&lt;/i&gt;" in others
    assert f'href="/tickets/{by_sms.number}"' not in others
    assert f'href="/tickets/{someone_else.number}"' not in others
    assert live(client, by_sms.number)["others"].count('href="/tickets/') == 1


@pytest.mark.parametrize("query", ["?after=x", "?messages=1,two", "?messages=" + ",".join(map(str, range(51)))])
def test_bad_message_ids_are_refused(client, conversation, query):
    ticket, _ = conversation
    response = client.get(f"/tickets/{ticket.number}/live{query}", headers={"Accept": "application/json"})
    assert response.status_code == 400


def test_an_unknown_ticket_has_no_live_fragment(client, agent):
    assert client.get("/tickets/424242/live").status_code == 404
