"""The ticket page's triage panel: which rules matched and what they changed, the SLA policy and its due times."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import sqlalchemy as sa

from channels.messages import IdentityKind, SenderIdentity, ThreadHints
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Group, TicketStatus
from helpdesk.models.base import utcnow
from helpdesk.outbound import reply
from helpdesk.tickets import change_field
from helpdesk.triage.config_io import import_policies, import_rules
from helpdesk.triage.summary import ticket_triage_summary
from tests.factories import make_agent, make_inbound

pytestmark = pytest.mark.integration

ALWAYS_OPEN = {"name": "Around the clock", "timezone": "UTC", "always_open": True}
POLICIES = {
    "policies": [
        {"name": "Standard", "default": True, "calendar": ALWAYS_OPEN,
         "targets": {"normal": {"first_response": 120, "next_response": 60, "resolution": 960},
                     "urgent": {"first_response": 30, "next_response": 30, "resolution": 240}}},
        {"name": "Premium", "calendar": ALWAYS_OPEN, "targets": {"high": {"first_response": 60}}},
    ]
}
RULES = """
rules:
  - name: VIP customers
    conditions: {sender: "@bigcorp.example"}
    actions: {tier: second_line, priority: high, sla_policy: Premium, add_tags: [vip]}
    stop: true
  - name: Billing words
    conditions: {subject_keywords: invoice}
    actions: {group: Billing, add_tags: [billing, money]}
  - name: Escalations
    run_on: create_and_customer_message
    conditions: {body_keywords: escalate}
    actions: {priority: urgent}
"""
SENDER = SenderIdentity(IdentityKind.EMAIL, "maria@example.org", "Maria Lopez")


@pytest.fixture
def configured():
    db.session.add(Group(name="Billing"))
    db.session.commit()
    import_policies(json.dumps(POLICIES), filename="policies.json")
    import_rules(RULES)


@pytest.fixture
def agent(login_as):
    return login_as(name="Alex Agent")


def panel(client, ticket) -> str:
    html = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    match = re.search(r'<section class="triage" id="triage-panel">.*?</section>', html, re.DOTALL)
    assert match, "no triage panel on the ticket page"
    return re.sub(r"\s+", " ", match.group(0))


def test_the_panel_lists_the_rules_that_matched_with_their_changes_and_the_sla(client, agent, configured):
    ticket = ingest(make_inbound(sender=SENDER, subject="Invoice 42 is wrong")).ticket
    html = panel(client, ticket)
    assert "SLA policy: <strong>Standard</strong>" in html
    assert "language: en" in html
    assert "on creation" in html
    assert '<span class="kind">Billing words</span>: group → Billing, add_tags → billing, money' in html
    assert "Escalations" not in html
    assert re.search(r"First response</th> <td>due <time[^>]*>[^<]+</time><br> "
                     r'<span class="sla-state sla-state-running">running</span>, 1(19|20) business minutes left', html)
    assert "Next response</th> <td>no due time" in html


def test_a_later_customer_message_adds_a_run_shown_first(client, agent, configured):
    ticket = ingest(make_inbound(sender=SENDER, subject="Invoice 42 is wrong")).ticket
    ingest(make_inbound(sender=SENDER, thread=ThreadHints(ticket_number=ticket.number),
                        text="Please escalate this now."))
    html = panel(client, ticket)
    later, first = html.index("on a later customer message"), html.index("on creation")
    assert later < first
    assert '<span class="kind">Escalations</span>: priority → urgent' in html[later:first]


def test_a_rule_that_stopped_the_others_says_so(client, agent, configured):
    vip = SenderIdentity(IdentityKind.EMAIL, "ceo@bigcorp.example")
    ticket = ingest(make_inbound(sender=vip, subject="Invoice")).ticket
    html = panel(client, ticket)
    assert ('<span class="kind">VIP customers</span> (stopped later rules): tier → second_line, priority → high, '
            "sla_policy → Premium, add_tags → vip") in html
    assert "Billing words" not in html
    assert "SLA policy: <strong>Premium</strong>" in html


def test_what_a_rule_could_not_do_is_shown(client, agent, configured):
    db.session.execute(sa.delete(Group))
    db.session.commit()
    ticket = ingest(make_inbound(sender=SENDER, subject="Invoice")).ticket
    assert "<em>not done: group &#39;Billing&#39; does not exist</em>" in panel(client, ticket)


def test_without_rules_or_policies_the_panel_says_so(client, agent):
    ticket = ingest(make_inbound(sender=SENDER)).ticket
    html = panel(client, ticket)
    assert "SLA policy: <strong>none</strong>" in html
    assert "No rules have run on this ticket." in html
    assert html.count("no due time") == 3


def test_with_no_rule_matching_the_default_policy_run_is_listed(client, agent, configured):
    ticket = ingest(make_inbound(sender=SENDER, subject="Hello")).ticket
    assert "on creation" in panel(client, ticket)
    assert "no rule matched; the defaults apply" in panel(client, ticket)


def test_rule_names_and_values_are_shown_as_text(client, agent, configured):
    import_rules("rules: [{name: '<img src=x onerror=alert(1)>', actions: {add_tags: ['<b>x</b>']}}]")
    ticket = ingest(make_inbound(sender=SENDER)).ticket
    html = panel(client, ticket)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_a_pending_ticket_shows_its_stopped_clock_and_a_reply_meets_the_target(client, agent, configured):
    ticket = ingest(make_inbound(sender=SENDER, subject="Hello")).ticket
    reply(ticket, agent, "We are looking into it.")
    change_field(ticket, "status", TicketStatus.PENDING, agent=agent)
    db.session.commit()
    html = panel(client, ticket)
    assert "Clock stopped since" in html
    assert 'sla-state-met">met</span> <time' in html
    assert 'sla-state-paused">paused</span>' in html


def test_the_summary_tells_overdue_and_late_targets_apart(configured):
    ticket = ingest(make_inbound(sender=SENDER, subject="Hello")).ticket
    later = utcnow() + dt.timedelta(hours=3)
    states = {target.target: target.state for target in ticket_triage_summary(ticket, now=later).targets}
    assert states == {"first_response": "overdue", "next_response": "none", "resolution": "running"}
    agent = make_agent()
    db.session.commit()
    ticket.first_response_due_at = utcnow() - dt.timedelta(minutes=1)
    reply(ticket, agent, "Sorry for the wait.")
    states = {target.target: target.state for target in ticket_triage_summary(ticket).targets}
    assert states["first_response"] == "met late"
    assert ticket_triage_summary(ticket).targets[2].minutes_left in (959, 960)
