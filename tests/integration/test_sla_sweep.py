"""The SLA clock on tickets and the sweep, on a frozen clock: pauses, warnings, breaches and escalation."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from helpdesk.extensions import db, socketio
from helpdesk.models import Customer, Priority, SlaPolicy, Ticket, TicketEvent, TicketStatus, Tier
from helpdesk.realtime import AGENT_NAMESPACE
from helpdesk.tickets import change_field, open_ticket
from helpdesk.triage.calendar import calendar_from_dict
from helpdesk.triage.clock import schedule_check
from helpdesk.triage.sla import add_business_minutes
from helpdesk.triage.sweep import sweep_sla
from tests.conftest import clear_g
from tests.factories import make_agent

pytestmark = pytest.mark.integration

OFFICE = {"name": "Office", "timezone": "UTC", "hours": {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}}
#: Friday 2026-03-06, five minutes before closing.
FRIDAY_1655 = dt.datetime(2026, 3, 6, 16, 55, tzinfo=dt.UTC)
MONDAY = dt.date(2026, 3, 9)


def monday(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(MONDAY, dt.time(hour, minute), tzinfo=dt.UTC)


@pytest.fixture
def policy():
    row = SlaPolicy(name="Standard", is_default=True, calendar=OFFICE, warn_at_percent=75,
                    targets={"normal": {"first_response": 120}, "high": {"first_response": 60}})
    db.session.add(row)
    db.session.commit()
    return row


def make_ticket(created_at=FRIDAY_1655, *, assignee=None, subject="Help") -> Ticket:
    customer = Customer(name="Cus Tomer")
    db.session.add(customer)
    ticket = open_ticket(customer, "email", subject, reason="test")
    ticket.created_at = created_at
    ticket.assignee = assignee
    ticket.sla_policy_name = "Standard"
    ticket.first_response_due_at = add_business_minutes(created_at, 120, calendar_from_dict(OFFICE)).astimezone(dt.UTC)
    db.session.flush()
    schedule_check(ticket)
    db.session.commit()
    return ticket


def events(ticket: Ticket, kind: str) -> list[TicketEvent]:
    return db.session.scalars(
        sa.select(TicketEvent).where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == kind)
    ).all()


def test_a_friday_afternoon_ticket_is_due_monday_morning(policy):
    assert make_ticket().first_response_due_at == monday(10, 55)


def test_pending_pauses_the_clock_and_reopening_resumes_it(policy):
    ticket = make_ticket()
    change_field(ticket, "status", TicketStatus.PENDING, now=monday(9, 30))
    db.session.commit()
    assert ticket.first_response_due_at == monday(10, 55)
    assert ticket.sla_check_at is None
    assert sweep_sla(now=monday(12)) == 0
    change_field(ticket, "status", TicketStatus.OPEN, now=monday(10, 30))
    db.session.commit()
    # Sixty business minutes stood still, so the due time is sixty minutes later.
    assert ticket.first_response_due_at == monday(11, 55)
    [resumed] = events(ticket, "sla.resumed")
    assert resumed.data["moved"]["first_response"]["new"] == monday(11, 55).isoformat()
    change_field(ticket, "status", TicketStatus.ON_HOLD, now=monday(11))
    change_field(ticket, "status", TicketStatus.OPEN, now=monday(11))
    db.session.commit()
    assert ticket.first_response_due_at == monday(11, 55)


def test_a_pause_over_closed_hours_moves_nothing(policy):
    ticket = make_ticket()
    change_field(ticket, "status", TicketStatus.PENDING, now=FRIDAY_1655 + dt.timedelta(minutes=10))
    change_field(ticket, "status", TicketStatus.OPEN, now=monday(8))
    db.session.commit()
    assert ticket.first_response_due_at == monday(10, 55)


def test_the_sweep_warns_once_and_escalates_at_the_breach_once(policy):
    lead = make_agent(role="lead", tier=Tier.SECOND_LINE)
    assignee = make_agent()
    db.session.commit()
    ticket = make_ticket(assignee=assignee)
    # 75% of 120 business minutes: 5 on Friday and 85 on Monday.
    assert sweep_sla(now=monday(10, 24)) == 0
    assert sweep_sla(now=monday(10, 25)) == 1
    assert sweep_sla(now=monday(10, 26)) == 0
    assert len(events(ticket, "sla.warning")) == 1
    assert ticket.tier == Tier.FIRST_LINE

    assert sweep_sla(now=monday(10, 54)) == 0
    assert sweep_sla(now=monday(11, 3)) == 1
    assert sweep_sla(now=monday(11, 4)) == 0
    assert sweep_sla(now=monday(15)) == 0
    db.session.refresh(ticket)
    assert ticket.sla_breached_at == monday(10, 55)
    assert ticket.tier == Tier.SECOND_LINE
    assert ticket.priority == Priority.HIGH
    [escalated] = events(ticket, "sla.escalated")
    assert escalated.reason == "the first response target was breached"
    assert escalated.data["notified"] == [lead.id, assignee.id]
    assert len(events(ticket, "sla.breached")) == 1
    assert [e.reason for e in events(ticket, "tier.changed")] == ["the first response target was breached"]
    assert ticket.sla_check_at is None


def test_an_unassigned_ticket_is_escalated_when_a_breach_is_predicted(policy):
    ticket = make_ticket()
    # Less than the typical 15 minutes are left at 10:40; nobody is assigned.
    assert sweep_sla(now=monday(10, 39)) == 1  # the warning
    assert sweep_sla(now=monday(10, 40)) == 1
    db.session.refresh(ticket)
    assert ticket.tier == Tier.SECOND_LINE
    assert ticket.sla_breached_at is None
    assert sweep_sla(now=monday(10, 55)) == 1  # the breach is recorded, not escalated again
    assert len(events(ticket, "sla.escalated")) == 1
    db.session.refresh(ticket)
    assert ticket.sla_breached_at == monday(10, 55)
    assert ticket.priority == Priority.HIGH


def test_the_policy_decides_how_to_escalate(policy):
    policy.escalation = {"tier": None, "raise_priority": True}
    db.session.commit()
    ticket = make_ticket(assignee=make_agent())
    sweep_sla(now=monday(11))
    db.session.refresh(ticket)
    assert (ticket.tier, ticket.priority) == (Tier.FIRST_LINE, Priority.HIGH)


def test_a_key_left_out_of_the_escalation_keeps_its_default(policy):
    policy.escalation = {"raise_priority": False}
    db.session.commit()
    ticket = make_ticket(assignee=make_agent())
    sweep_sla(now=monday(11))
    db.session.refresh(ticket)
    assert (ticket.tier, ticket.priority) == (Tier.SECOND_LINE, Priority.NORMAL)


def test_a_policy_that_does_not_notify_escalates_without_telling_anyone(app, client, login_as, policy):
    policy.escalation = {"notify": False}
    db.session.commit()
    login_as(role="lead", tier=Tier.SECOND_LINE)
    clear_g()
    socket = socketio.test_client(app, namespace=AGENT_NAMESPACE, flask_test_client=client)
    try:
        socket.get_received(AGENT_NAMESPACE)
        ticket = make_ticket(assignee=make_agent(tier=Tier.SECOND_LINE))
        sweep_sla(now=monday(11))
        assert [p for p in socket.get_received(AGENT_NAMESPACE) if p["name"] == "sla.escalated"] == []
        [escalated] = events(ticket, "sla.escalated")
        assert escalated.data["notified"] == []
        db.session.refresh(ticket)
        assert (ticket.tier, ticket.priority) == (Tier.SECOND_LINE, Priority.HIGH)
    finally:
        socket.disconnect(namespace=AGENT_NAMESPACE)


def test_the_lead_hears_about_the_escalation(app, client, login_as, policy):
    lead = login_as(role="lead", tier=Tier.SECOND_LINE)
    clear_g()
    socket = socketio.test_client(app, namespace=AGENT_NAMESPACE, flask_test_client=client)
    try:
        assert socket.is_connected(AGENT_NAMESPACE)
        socket.get_received(AGENT_NAMESPACE)
        ticket = make_ticket(subject="Printer on fire")
        sweep_sla(now=monday(11))
        heard = [p["args"][0] for p in socket.get_received(AGENT_NAMESPACE) if p["name"] == "sla.escalated"]
        assert heard == [{
            "ticket": ticket.number, "subject": "Printer on fire", "target": "first_response",
            "due_at": monday(10, 55).isoformat(), "reason": "the first response target was breached",
            "tier": "second_line", "priority": "high",
        }]
        assert lead.id in events(ticket, "sla.escalated")[0].data["notified"]
    finally:
        socket.disconnect(namespace=AGENT_NAMESPACE)


def test_the_sweep_reads_only_tickets_near_their_due_time(policy):
    near = [make_ticket() for _ in range(3)]
    customer_id = near[0].customer_id
    far = monday(9) + dt.timedelta(days=60)
    db.session.execute(sa.insert(Ticket), [
        {"number": 5000 + n, "channel": "email", "customer_id": customer_id, "sla_policy_name": "Standard",
         "first_response_due_at": far, "sla_check_at": far - dt.timedelta(minutes=30)}
        for n in range(2000)
    ])
    db.session.commit()
    near_ids = sorted(ticket.id for ticket in near)
    db.session.expunge_all()
    loaded = []
    statements = []

    def count_loads(target, context):
        loaded.append(target.id)

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(Ticket, "load", count_loads)
    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert sweep_sla(now=monday(10, 25)) == 3
    finally:
        sa.event.remove(Ticket, "load", count_loads)
        sa.event.remove(db.engine, "before_cursor_execute", record)
    assert sorted(loaded) == near_ids
    [select] = [s for s in statements if s.lstrip().startswith("SELECT") and "FROM ticket " in s + " "
                and "sla_check_at <=" in s]
    assert "ORDER BY ticket.sla_check_at" in select
    assert "LIMIT" in select
