"""Automatic assignment on the database: presence, capacity, language, and each group's strategy."""

from __future__ import annotations

import datetime as dt

import pytest

from helpdesk import presence
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import AssignmentStrategy, Customer, Group, TicketStatus, Tier
from helpdesk.tickets import open_ticket
from helpdesk.triage.assign import auto_assign, unassigned_count
from helpdesk.triage.engine import replace_rules
from helpdesk.triage.rules import parse_rules
from tests.factories import make_agent, make_inbound

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 3, 9, 10, tzinfo=dt.UTC)


@pytest.fixture
def group():
    group = Group(name="Support")
    db.session.add(group)
    db.session.commit()
    return group


def online_agent(group, *, seen=NOW, **overrides):
    agent = make_agent(groups=[group], **overrides)
    db.session.flush()
    presence.record_connect(agent.id, seen)
    db.session.commit()
    db.session.refresh(agent)
    return agent


def make_ticket(group, *, language=None, tags="", assignee=None):
    customer = Customer(name="Cus Tomer")
    db.session.add(customer)
    ticket = open_ticket(customer, "email", "Help", reason="test")
    ticket.group, ticket.language, ticket.tags, ticket.assignee = group, language, tags, assignee
    db.session.flush()
    return ticket


def test_offline_full_and_other_tier_agents_are_skipped(group):
    online_agent(group, seen=NOW - dt.timedelta(minutes=10))  # silent too long
    silent = make_agent(groups=[group])
    full = online_agent(group, capacity=1)
    online_agent(group, tier=Tier.SECOND_LINE)
    make_ticket(group, assignee=full)
    ticket = make_ticket(group)
    assert auto_assign(ticket, now=NOW) is None
    assert ticket.assignee is None and silent.online_connections == 0
    assert unassigned_count() == 1
    free = online_agent(group)
    assert auto_assign(ticket, now=NOW) == free
    assert unassigned_count() == 0


def test_a_disconnected_agent_is_offline(group):
    agent = online_agent(group)
    presence.record_disconnect(agent.id)
    db.session.commit()
    assert auto_assign(make_ticket(group), now=NOW) is None


def test_the_language_is_required_only_when_the_ticket_says_so(group):
    english = online_agent(group)
    german = online_agent(group, languages=["de"])
    make_ticket(group, assignee=german)
    assert auto_assign(make_ticket(group, language="de"), now=NOW) == english
    assert auto_assign(make_ticket(group, language="de", tags="language_required"), now=NOW) == german
    assert auto_assign(make_ticket(group, language="fi", tags="language_required"), now=NOW) is None


def test_least_loaded_picks_the_agent_with_fewest_active_tickets(group):
    busy, idle = online_agent(group), online_agent(group)
    make_ticket(group, assignee=busy)
    solved = make_ticket(group, assignee=idle)
    solved.status = TicketStatus.SOLVED
    make_ticket(group, assignee=idle)
    make_ticket(group, assignee=busy)
    db.session.flush()
    assert auto_assign(make_ticket(group), now=NOW) == idle  # one active ticket; the solved one does not count
    third = online_agent(group)
    assert auto_assign(make_ticket(group), now=NOW) == third


def test_round_robin_rotates(group):
    group.assignment_strategy = AssignmentStrategy.ROUND_ROBIN
    agents = [online_agent(group) for _ in range(3)]
    make_ticket(group, assignee=agents[0])
    chosen = [auto_assign(make_ticket(group), now=NOW) for _ in range(4)]
    assert chosen == [agents[0], agents[1], agents[2], agents[0]]


def test_a_rule_with_assign_auto_assigns_at_ingest(group):
    agent = make_agent(groups=[group])
    db.session.flush()
    presence.record_connect(agent.id)
    db.session.commit()
    replace_rules(parse_rules("version: 1\nrules:\n  - name: All to support\n    actions: {group: Support, assign: auto}\n"))
    ticket = ingest(make_inbound()).ticket
    assert ticket.assignee == agent
    assert any(e.kind == "assignee.changed" and e.reason.startswith("rule All to support")
               for e in db.session.scalars(ticket.events.select()))
