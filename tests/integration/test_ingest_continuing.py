"""A customer writing again in a conversation under way: the plain statements ingest writes it with, and when
it leaves the message to the general path instead."""

import json

import pytest
import sqlalchemy as sa

import helpdesk.ingest
from channels.messages import ChannelName, IdentityKind, SenderIdentity
from helpdesk.extensions import db, socketio
from helpdesk.ingest import ingest
from helpdesk.models import Message, Ticket, TicketEvent, TicketStatus
from helpdesk.outbound import reply
from helpdesk.tickets import change_field
from helpdesk.triage.config_io import import_policies, import_rules
from tests.factories import make_agent, make_inbound
from tests.integration.engine_events import statements_sent

pytestmark = pytest.mark.integration

POLICIES = {
    "policies": [
        {"name": "Standard", "default": True,
         "calendar": {"name": "Around the clock", "timezone": "UTC", "always_open": True},
         "targets": {"normal": {"first_response": 60, "next_response": 30, "resolution": 6000},
                     "high": {"first_response": 15, "next_response": 10, "resolution": 600}}},
    ]
}
RULES = {
    "rules": [
        {"name": "urgent first", "conditions": {"body_regex": "(?i)urgent"}, "actions": {"priority": "high"}},
    ]
}
RULE_ON_EVERY_MESSAGE = {
    "rules": [
        {"name": "urgent any time", "conditions": {"body_regex": "(?i)urgent"}, "actions": {"priority": "high"},
         "run_on": "create_and_customer_message"},
    ]
}


@pytest.fixture
def triage():
    import_policies(json.dumps(POLICIES), filename="policies.json")
    import_rules(json.dumps(RULES), filename="rules.json")


@pytest.fixture
def emitted(monkeypatch):
    calls = []
    monkeypatch.setattr(socketio, "emit", lambda event, payload, namespace=None, to=None: calls.append((event, payload)))
    return calls


def chat(visitor: str, text: str, number: int, name: str | None = None):
    return make_inbound(channel=ChannelName.CHAT, sender=SenderIdentity(IdentityKind.VISITOR, visitor, name),
                        external_id=f"{visitor}-{number}", dedupe_key=f"chat:{visitor}:{number}", text=text)


def conversation(visitor: str) -> dict:
    """What a visitor's conversation left behind, without ids and clock readings."""
    ticket = db.session.scalar(sa.select(Ticket).join(Ticket.customer).where(
        Ticket.id.in_(sa.select(Message.ticket_id).where(Message.address == visitor))))
    messages = db.session.scalars(sa.select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id))
    events = db.session.scalars(sa.select(TicketEvent).where(TicketEvent.ticket_id == ticket.id)
                                .order_by(TicketEvent.id))
    return {
        "ticket": {name: getattr(ticket, name) for name in (
            "status", "priority", "tier", "language", "sla_policy_name", "first_response_due_at",
            "next_response_due_at", "resolution_due_at", "sla_check_at")}
        | {"stamped": ticket.last_customer_message_at is not None and ticket.updated_at is not None},
        "messages": [(message.direction, message.channel, message.text, message.html, message.address == visitor,
                      message.is_public, message.is_automatic, message.author_customer_id == ticket.customer_id,
                      message.external_id.rsplit("-", 1)[1]) for message in messages],
        "events": [(event.kind, event.reason, event.actor_label.replace(visitor, "<visitor>"),
                    event.actor_customer_id == ticket.customer_id,
                    {key: value for key, value in event.data.items() if key not in ("message_id", "external_id")})
                   for event in events],
    }


def test_a_follow_up_leaves_the_same_rows_and_events_as_the_general_path(app, triage, emitted, monkeypatch):
    texts = ["Hello, my parcel never arrived.", "It was ordered last week.", "Any news about it?"]
    for number, text in enumerate(texts):
        ingest(chat("visitor-quick", text, number, "Ada"))
    quick_emits = [(event, {**payload, "message_id": None, "ticket": None}) for event, payload in emitted]
    emitted.clear()
    monkeypatch.setattr(helpdesk.ingest, "may_continue_conversation", lambda inbound: False)
    for number, text in enumerate(texts):
        ingest(chat("visitor-general", text, number, "Ada"))
    general_emits = [(event, {**payload, "message_id": None, "ticket": None}) for event, payload in emitted]

    quick, general = conversation("visitor-quick"), conversation("visitor-general")
    assert quick == general
    assert [kind for kind, *_ in quick["events"]].count("message.received") == 3
    assert quick["ticket"]["language"] == "en" and quick["ticket"]["sla_check_at"] is not None
    assert quick_emits == general_emits
    events = [event for event, _ in quick_emits]
    assert events.count("ticket.created") == 1 and events.count("message.created") == 2


def test_a_follow_up_on_a_waiting_ticket_takes_five_statements(app, triage):
    ingest(chat("visitor-1", "Hello, my parcel never arrived.", 1))
    with statements_sent() as seen:
        result = ingest(chat("visitor-1", "Still nothing, it is urgent.", 2))
    assert not result.is_new_ticket and not result.is_duplicate
    # BEGIN (IMMEDIATE, on SQLite); the customer, ticket, dedupe check and rules' stamp; the ticket; the message;
    # its event.
    assert [statement.split()[0] for statement in seen if not statement.startswith("BEGIN")] == [
        "SELECT", "UPDATE", "INSERT", "INSERT"]
    # The rule runs on new tickets only: "urgent" in a follow-up changes nothing.
    assert result.ticket.priority.value == "normal"
    assert result.message.text == "Still nothing, it is urgent."


def test_a_rule_that_runs_on_customer_messages_still_runs(app, triage):
    import_rules(json.dumps(RULE_ON_EVERY_MESSAGE), filename="rules.json")
    ingest(chat("visitor-2", "Hello, my parcel never arrived.", 1))
    result = ingest(chat("visitor-2", "Still nothing, it is urgent.", 2))
    ticket = result.ticket
    assert ticket.priority.value == "high"
    kinds = [event.kind for event in db.session.scalars(sa.select(TicketEvent).where(
        TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id))]
    assert kinds[-3:] == ["message.received", "priority.changed", "triage.applied"]


def test_a_pending_ticket_is_woken_by_the_customer(app, triage):
    ticket = ingest(chat("visitor-3", "Hello, my parcel never arrived.", 1)).ticket
    reply(ticket, make_agent(), "Could you send the order number?")
    change_field(ticket, "status", TicketStatus.PENDING)
    db.session.commit()
    result = ingest(chat("visitor-3", "It is 4711.", 2))
    assert result.ticket_id == ticket.id
    db.session.refresh(ticket)
    assert ticket.status == TicketStatus.OPEN
    assert ticket.next_response_due_at is not None, "answered, then asked again: the next-response clock runs"


def test_a_customer_the_agents_answered_starts_the_next_response_clock(app, triage):
    ticket = ingest(chat("visitor-4", "Hello, my parcel never arrived.", 1)).ticket
    reply(ticket, make_agent(), "We are looking into it.")
    db.session.commit()
    assert ticket.next_response_due_at is None
    ingest(chat("visitor-4", "Thanks, and when will it come?", 2))
    db.session.refresh(ticket)
    assert ticket.next_response_due_at is not None and ticket.sla_check_at is not None


def test_a_resent_follow_up_is_stored_once(app, triage):
    ingest(chat("visitor-5", "Hello, my parcel never arrived.", 1))
    first = ingest(chat("visitor-5", "Still nothing.", 2))
    again = ingest(chat("visitor-5", "Still nothing.", 2))
    assert again.is_duplicate and again.message_id == first.message_id
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)
                             .where(Message.ticket_id == first.ticket_id)) == 2


def test_the_first_message_that_tells_its_language_sets_the_tickets(app, triage):
    ticket = ingest(chat("visitor-6", "ok", 1)).ticket
    assert ticket.language is None
    ingest(chat("visitor-6", "Bonjour, ma commande n'est jamais arrivée et je suis inquiète.", 2))
    db.session.refresh(ticket)
    assert ticket.language == "fr"


def test_a_solved_conversation_is_not_continued(app, triage):
    ticket = ingest(chat("visitor-7", "Hello, my parcel never arrived.", 1)).ticket
    change_field(ticket, "status", TicketStatus.SOLVED)
    db.session.commit()
    result = ingest(chat("visitor-7", "Something else now.", 2))
    assert result.is_new_ticket and result.ticket_id != ticket.id
