"""Triage on a real database: rules and SLA policies applied at ingest, and the commands that manage them."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from channels.messages import IdentityKind, SenderIdentity, ThreadHints
from helpdesk.customers import normalize_identity, resolve_customer
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Customer, Group, Message, SlaPolicy, Ticket, TicketEvent, TriageRule
from helpdesk.outbound import reply
from helpdesk.tickets import open_ticket
from helpdesk.triage.calendar import calendar_from_dict
from helpdesk.triage.config_io import replace_policies
from helpdesk.triage.engine import apply_triage, dry_run, replace_rules
from helpdesk.triage.rules import parse_policies, parse_rules
from helpdesk.triage.sla import add_business_minutes
from tests.factories import make_agent, make_inbound

pytestmark = pytest.mark.integration

OFFICE_HOURS = {
    "name": "Stockholm office",
    "timezone": "Europe/Stockholm",
    "hours": {day: [["08:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
}
ALWAYS_OPEN = {"name": "Around the clock", "timezone": "UTC", "always_open": True}
STANDARD_TARGETS = {
    "normal": {"first_response": 120, "next_response": 240, "resolution": 960},
    "high": {"first_response": 60, "next_response": 120, "resolution": 480},
    "urgent": {"first_response": 30, "next_response": 60, "resolution": 240},
}
PREMIUM_TARGETS = {"high": {"first_response": 60, "next_response": 90, "resolution": 480}}
POLICIES = {
    "version": 1,
    "policies": [
        {"name": "Standard", "default": True, "calendar": OFFICE_HOURS, "targets": STANDARD_TARGETS},
        {"name": "Premium", "calendar": ALWAYS_OPEN, "targets": PREMIUM_TARGETS, "warn_at_percent": 80},
    ],
}
RULES = """
version: 1
rules:
  - name: VIP customers
    conditions:
      match: any
      vip: true
      sender: "@bigcorp.example"
    actions: {tier: second_line, priority: high, sla_policy: Premium, add_tags: [vip]}
    stop: true
  - name: Outages are urgent
    conditions: {subject_keywords: [outage, "is down"]}
    actions: {priority: urgent, group: Operations}
  - name: German to DACH
    conditions: {language: de}
    actions: {group: DACH, add_tags: [german]}
  - name: Escalations
    run_on: create_and_customer_message
    conditions: {body_keywords: escalate}
    actions: {priority: urgent, add_tags: [escalated]}
  - name: Everyone is triaged
    actions: {add_tags: [triaged]}
"""
STANDARD_CALENDAR = calendar_from_dict(OFFICE_HOURS)
PREMIUM_CALENDAR = calendar_from_dict(ALWAYS_OPEN)
#: Friday 2026-03-06 16:30 in Stockholm: half an hour before closing.
FRIDAY_AFTERNOON = dt.datetime(2026, 3, 6, 15, 30, tzinfo=dt.UTC)
VIP_SENDER = SenderIdentity(IdentityKind.EMAIL, "ceo@bigcorp.example", "Big Corp CEO")


@pytest.fixture
def configured():
    """Groups, the two SLA policies and the rules above, as an admin would set them up."""
    db.session.add_all([Group(name="Operations"), Group(name="DACH")])
    db.session.commit()
    replace_policies(parse_policies(json.dumps(POLICIES), filename="policies.json"))
    replace_rules(parse_rules(RULES))


def events_of(ticket: Ticket, kind: str | None = None) -> list[TicketEvent]:
    query = sa.select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id)
    if kind is not None:
        query = query.where(TicketEvent.kind == kind)
    return list(db.session.scalars(query))


def tags_of(ticket: Ticket) -> list[str]:
    return [tag for tag in ticket.tags.split(",") if tag]


def rule_names() -> list[str]:
    return list(db.session.scalars(sa.select(TriageRule.name).order_by(TriageRule.position)))


def test_a_new_email_from_a_vip_domain_goes_to_second_line_at_high_priority_on_the_premium_policy(configured):
    ticket = ingest(make_inbound(sender=VIP_SENDER, subject="Contract renewal")).ticket
    assert (ticket.tier.value, ticket.priority.value, ticket.sla_policy_name) == (
        "second_line",
        "high",
        "Premium",
    )
    assert ticket.first_response_due_at == add_business_minutes(ticket.created_at, 60, PREMIUM_CALENDAR)
    assert ticket.resolution_due_at == add_business_minutes(ticket.created_at, 480, PREMIUM_CALENDAR)
    assert ticket.next_response_due_at is None
    # stop: the catch-all rule after it did not run.
    assert tags_of(ticket) == ["vip"]


def test_each_change_is_audited_with_its_rule_and_one_event_lists_the_matches(configured):
    ticket = ingest(make_inbound(sender=VIP_SENDER)).ticket
    changes = {(event.kind, event.reason) for event in events_of(ticket) if event.kind.endswith(".changed")}
    assert changes == {
        ("tier.changed", "rule VIP customers"),
        ("priority.changed", "rule VIP customers"),
        ("tags.changed", "rule VIP customers"),
        ("sla_policy_name.changed", "rule VIP customers"),
    }
    (applied,) = events_of(ticket, "triage.applied")
    assert applied.reason == "rules matched: VIP customers"
    assert applied.data["matched"] == [
        {
            "rule": "VIP customers",
            "changes": {
                "tier": "second_line",
                "priority": "high",
                "sla_policy": "Premium",
                "add_tags": ["vip"],
            },
        }
    ]
    assert applied.data["stopped_by"] == "VIP customers"
    assert applied.data["sla_policy"] == "Premium"
    assert applied.data["due"]["first_response"] == ticket.first_response_due_at.isoformat()
    kinds = [event.kind for event in events_of(ticket)]
    assert kinds[:2] == ["ticket.created", "message.received"] and kinds[-1] == "triage.applied"


def test_a_vip_customer_matches_whatever_address_they_write_from(configured):
    customer = resolve_customer(normalize_identity(SenderIdentity(IdentityKind.EMAIL, "pat@home.example")))
    customer.is_vip = True
    db.session.commit()
    ticket = ingest(make_inbound(sender=SenderIdentity(IdentityKind.EMAIL, "pat@home.example"))).ticket
    assert ticket.tier.value == "second_line"


def test_due_times_are_counted_in_the_policys_business_hours_from_creation(configured):
    inbound = make_inbound(subject="Where is my parcel?")
    customer = resolve_customer(normalize_identity(inbound.sender))
    ticket = open_ticket(customer, inbound.channel, inbound.subject, reason="test")
    ticket.created_at = FRIDAY_AFTERNOON
    db.session.flush()
    outcome = apply_triage(ticket, inbound, customer)
    db.session.commit()
    assert outcome.sla_policy == "Standard" and outcome.matched_rules == ["Everyone is triaged"]
    # 30 minutes on Friday, the other 90 on Monday from 08:00.
    assert ticket.first_response_due_at == dt.datetime(2026, 3, 9, 8, 30, tzinfo=dt.UTC)
    assert ticket.first_response_due_at == add_business_minutes(FRIDAY_AFTERNOON, 120, STANDARD_CALENDAR)
    assert ticket.resolution_due_at == add_business_minutes(FRIDAY_AFTERNOON, 960, STANDARD_CALENDAR)


def test_a_keyword_rule_raises_the_priority_and_sets_the_group(configured):
    ticket = ingest(make_inbound(subject="Checkout IS DOWN since this morning")).ticket
    assert (ticket.priority.value, ticket.group.name, ticket.sla_policy_name) == (
        "urgent",
        "Operations",
        "Standard",
    )
    assert ticket.first_response_due_at == add_business_minutes(ticket.created_at, 30, STANDARD_CALENDAR)
    (applied,) = events_of(ticket, "triage.applied")
    assert [match["rule"] for match in applied.data["matched"]] == [
        "Outages are urgent",
        "Everyone is triaged",
    ]
    assert applied.data["changes"] == {"priority": "urgent", "group": "Operations", "add_tags": ["triaged"]}


def test_without_a_matching_rule_a_ticket_keeps_the_defaults_and_gets_the_default_policy(configured):
    replace_rules(
        parse_rules("rules: [{name: only vips, conditions: {vip: true}, actions: {priority: high}}]")
    )
    ticket = ingest(make_inbound()).ticket
    assert (ticket.tier.value, ticket.priority.value, ticket.group) == ("first_line", "normal", None)
    assert ticket.sla_policy_name == "Standard"
    assert ticket.first_response_due_at == add_business_minutes(ticket.created_at, 120, STANDARD_CALENDAR)
    (applied,) = events_of(ticket, "triage.applied")
    assert (
        applied.data["matched"] == [] and applied.reason == "no rule matched; the default SLA policy applies"
    )


def test_with_no_policy_configured_the_sla_fields_stay_empty():
    ticket = ingest(make_inbound()).ticket
    assert ticket.sla_policy_name is None
    assert (ticket.first_response_due_at, ticket.resolution_due_at, ticket.next_response_due_at) == (
        None,
        None,
        None,
    )
    assert events_of(ticket, "triage.applied") == []


def test_the_detected_language_is_stored_and_rules_can_route_by_it(configured):
    german = "Guten Tag, meine Bestellung ist nach zwei Wochen immer noch nicht angekommen."
    ticket = ingest(make_inbound(subject="Bestellung", text=german)).ticket
    assert ticket.language == "de"
    assert ticket.group.name == "DACH" and tags_of(ticket) == ["german", "triaged"]
    assert ingest(make_inbound(subject="Hi", text="ok")).ticket.language is None


def test_the_configured_languages_limit_detection(app, configured):
    app.config["HELPDESK_LANGUAGES"] = "en,fr"
    try:
        ticket = ingest(
            make_inbound(text="Guten Tag, meine Bestellung ist immer noch nicht angekommen.")
        ).ticket
    finally:
        app.config.pop("HELPDESK_LANGUAGES")
    assert ticket.language != "de"


def test_a_rule_for_customer_messages_runs_again_on_a_reply_and_others_do_not(configured):
    first = ingest(
        make_inbound(external_id="<order-1@example.org>", dedupe_key="email:<order-1@example.org>")
    )
    assert first.ticket.priority.value == "normal"
    follow_up = ingest(
        make_inbound(
            sender=SenderIdentity(IdentityKind.EMAIL, first.message.address),
            text="Please escalate this, it has been a week.",
            thread=ThreadHints(reply_to_external_ids=("<order-1@example.org>",)),
        )
    )
    ticket = follow_up.ticket
    assert not follow_up.is_new_ticket and ticket.id == first.ticket.id
    assert ticket.priority.value == "urgent" and tags_of(ticket) == ["triaged", "escalated"]
    on_message = events_of(ticket, "triage.applied")[-1]
    assert on_message.data["on"] == "customer_message"
    assert [match["rule"] for match in on_message.data["matched"]] == ["Escalations"]
    # The priority changed, so the clocks follow the new target from the ticket's creation.
    assert ticket.first_response_due_at == add_business_minutes(ticket.created_at, 30, STANDARD_CALENDAR)


def test_next_response_is_due_from_the_first_unanswered_customer_message(configured):
    first = ingest(make_inbound(subject="Refund"))
    ticket = first.ticket
    agent = make_agent()
    db.session.commit()
    reply(ticket, agent, "We are on it.")
    replied_at = ticket.last_agent_reply_at
    thread = ThreadHints(ticket_number=ticket.number)
    sender = SenderIdentity(IdentityKind.EMAIL, first.message.address)
    ingest(
        make_inbound(
            sender=sender, thread=thread, text="Any news?", received_at=replied_at + dt.timedelta(minutes=5)
        )
    )
    due = add_business_minutes(replied_at + dt.timedelta(minutes=5), 240, STANDARD_CALENDAR)
    assert ticket.next_response_due_at == due
    ingest(
        make_inbound(
            sender=sender, thread=thread, text="Hello?", received_at=replied_at + dt.timedelta(minutes=20)
        )
    )
    assert ticket.next_response_due_at == due


def test_automatic_mail_never_starts_or_restarts_a_clock(configured):
    first = ingest(make_inbound(subject="Refund"))
    ticket = first.ticket
    clocks = (ticket.first_response_due_at, ticket.resolution_due_at)
    agent = make_agent()
    db.session.commit()
    reply(ticket, agent, "We are on it.")
    thread = ThreadHints(ticket_number=ticket.number)
    sender = SenderIdentity(IdentityKind.EMAIL, first.message.address)
    out_of_office = {
        "sender": sender,
        "thread": thread,
        "is_automatic": True,
        "automatic_reason": "Auto-Submitted",
        "text": "I am out of the office until Monday. Please escalate urgent matters.",
    }
    ingest(make_inbound(**out_of_office))
    assert ticket.next_response_due_at is None
    ingest(make_inbound(sender=sender, thread=thread, text="Any news?"))
    waiting = ticket.next_response_due_at
    assert waiting is not None
    ingest(make_inbound(**out_of_office))
    assert (ticket.next_response_due_at, ticket.first_response_due_at, ticket.resolution_due_at) == (
        waiting,
        *clocks,
    )
    assert ticket.priority.value == "normal"  # the escalation rule did not run on the automatic mail
    assert [event.data["on"] for event in events_of(ticket, "triage.applied")] == ["create"]


def test_a_ticket_opened_by_automatic_mail_gets_a_policy_but_no_due_time(configured):
    ticket = ingest(
        make_inbound(is_automatic=True, automatic_reason="Auto-Submitted", text="Out of office")
    ).ticket
    assert ticket.sla_policy_name == "Standard"
    assert (ticket.first_response_due_at, ticket.resolution_due_at) == (None, None)


def test_a_rule_assigns_a_named_agent(configured):
    agent = make_agent(email="sam@example.com")
    db.session.commit()
    replace_rules(parse_rules("rules: [{name: to sam, actions: {assign: sam@example.com}}]"))
    ticket = ingest(make_inbound()).ticket
    assert ticket.assignee_id == agent.id
    assert events_of(ticket, "assignee.changed")[0].reason == "rule to sam"


def test_dry_run_tells_the_outcome_and_writes_nothing(configured):
    ticket = ingest(make_inbound(sender=VIP_SENDER)).ticket
    ticket_count = db.session.scalar(sa.select(sa.func.count()).select_from(Ticket))
    event_count = db.session.scalar(sa.select(sa.func.count()).select_from(TicketEvent))
    by_ticket = dry_run(ticket)
    by_message = dry_run(make_inbound(subject="The site is down"))
    assert (by_ticket.matched_rules, by_ticket.tier, by_ticket.sla_policy) == (
        ["VIP customers"],
        "second_line",
        "Premium",
    )
    assert (by_message.matched_rules, by_message.priority, by_message.sla_policy) == (
        ["Outages are urgent", "Everyone is triaged"],
        "urgent",
        "Standard",
    )
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Ticket)) == ticket_count
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TicketEvent)) == event_count
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Customer)) == 1


# --- commands ---


def test_rules_import_replaces_the_rule_set_and_export_writes_it_back(runner, tmp_path, configured):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - {name: Billing words, conditions: {subject_keywords: invoice}, "
        "actions: {group: Operations}}\n  - {name: Spare, enabled: false, stop: true}\n"
    )
    result = runner.invoke(args=["helpdesk", "rules-import", str(path)])
    assert result.exit_code == 0, result.output
    assert "imported 2 triage rules" in result.output
    assert rule_names() == ["Billing words", "Spare"]

    exported = runner.invoke(args=["helpdesk", "rules-export"])
    assert exported.exit_code == 0, exported.output
    assert [rule.to_dict() for rule in parse_rules(exported.output)] == [
        {
            "name": "Billing words",
            "run_on": "create",
            "conditions": {"subject_keywords": "invoice"},
            "actions": {"group": "Operations"},
        },
        {
            "name": "Spare",
            "enabled": False,
            "run_on": "create",
            "conditions": {},
            "actions": {},
            "stop": True,
        },
    ]
    as_json = tmp_path / "out.json"
    assert runner.invoke(args=["helpdesk", "rules-export", str(as_json)]).exit_code == 0
    assert [rule["name"] for rule in json.loads(as_json.read_text())["rules"]] == ["Billing words", "Spare"]
    again = runner.invoke(args=["helpdesk", "rules-import", str(as_json)])
    assert again.exit_code == 0 and rule_names() == ["Billing words", "Spare"]


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        (
            "rules:\n  - {name: a, actions: {tier: third_line}}\n",
            "rules.yaml",
            "rules[0].actions.tier: must be first_line or second_line",
        ),
        (
            (
                "rules:\n  - {name: a, actions: {priority: high}}\n  - {name: b, actions: {priority: high}}\n"
                "  - {name: c, conditions: {subject_regex: '(unclosed'}, actions: {priority: high}}\n"
            ),
            "rules.yml",
            "rules[2].conditions.subject_regex: invalid regular expression '(unclosed'",
        ),
        (
            '{"rules": [{"name": "a", "actions": {"group": "Nobody"}}]}',
            "rules.json",
            "rules[0].actions.group: no group named 'Nobody'",
        ),
        (
            "rules: [{name: a, actions: {sla_policy: Gold}}]",
            "rules.yaml",
            "rules[0].actions.sla_policy: no SLA policy named 'Gold'",
        ),
        ('{"rules": [', "rules.json", "not valid JSON"),
        ("rules: [{name: a", "rules.yaml", "not valid YAML"),
    ],
)
def test_a_malformed_rules_file_is_refused_whole_and_the_rules_stay(
    runner, tmp_path, configured, content, filename, message
):
    before = rule_names()
    path = tmp_path / filename
    path.write_text(content)
    result = runner.invoke(args=["helpdesk", "rules-import", str(path)])
    assert result.exit_code != 0
    assert f"{path}: {message}" in result.output
    assert rule_names() == before and len(before) == 5


def test_rules_dry_run_by_ticket_and_by_pasted_message(runner, tmp_path, configured):
    ticket = ingest(make_inbound(sender=VIP_SENDER)).ticket
    by_ticket = runner.invoke(args=["helpdesk", "rules-dry-run", "--ticket", str(ticket.number)])
    assert by_ticket.exit_code == 0, by_ticket.output
    assert (
        "matched: VIP customers (tier=second_line, priority=high, sla_policy=Premium, add_tags=vip)"
        "; later rules not tried" in by_ticket.output
    )
    assert "result: tier=second_line, priority=high, sla_policy=Premium" in by_ticket.output

    pasted = tmp_path / "message.txt"
    pasted.write_text("Hallo, unser Shop ist seit heute Morgen nicht mehr erreichbar. Bitte schnell helfen!")
    by_text = runner.invoke(
        args=[
            "helpdesk",
            "rules-dry-run",
            "--message-file",
            str(pasted),
            "--sender",
            "it@kunde.example",
            "--subject",
            "Outage",
        ]
    )
    assert by_text.exit_code == 0, by_text.output
    lines = by_text.output.splitlines()
    assert lines[0] == "language: de"
    assert [line.split(" (")[0] for line in lines if line.startswith("matched:")] == [
        "matched: Outages are urgent",
        "matched: German to DACH",
        "matched: Everyone is triaged",
    ]

    raw = tmp_path / "mail.eml"
    raw.write_bytes(
        b"From: ceo@bigcorp.example\r\nSubject: Hi\r\nMessage-ID: <x@bigcorp.example>\r\n\r\nHello\r\n"
    )
    by_mail = runner.invoke(args=["helpdesk", "rules-dry-run", "--message-file", str(raw)])
    assert "matched: VIP customers" in by_mail.output

    neither = runner.invoke(args=["helpdesk", "rules-dry-run"])
    assert neither.exit_code != 0 and "give either --ticket or --message-file" in neither.output
    unknown = runner.invoke(args=["helpdesk", "rules-dry-run", "--ticket", "999999"])
    assert unknown.exit_code != 0 and "no ticket #999999" in unknown.output


def test_sla_policies_import_and_export(runner, tmp_path):
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(POLICIES))
    result = runner.invoke(args=["helpdesk", "sla-policy-import", str(path)])
    assert result.exit_code == 0, result.output
    assert "imported 2 SLA policies" in result.output
    premium = db.session.scalar(sa.select(SlaPolicy).where(SlaPolicy.name == "Premium"))
    assert (premium.is_default, premium.warn_at_percent, premium.targets) == (False, 80, PREMIUM_TARGETS)
    assert premium.calendar["timezone"] == "UTC"

    exported = runner.invoke(args=["helpdesk", "sla-policy-export"])
    assert exported.exit_code == 0, exported.output
    assert [policy.name for policy in parse_policies(exported.output)] == ["Premium", "Standard"]
    yaml_copy = tmp_path / "policies.yaml"
    yaml_copy.write_text(exported.output)
    assert runner.invoke(args=["helpdesk", "sla-policy-import", str(yaml_copy)]).exit_code == 0


def test_sla_policy_import_keeps_the_escalation_and_export_writes_it_back(runner, tmp_path):
    with_escalation = json.loads(json.dumps(POLICIES))
    with_escalation["policies"][1]["escalation"] = {"tier": None, "raise_priority": False, "notify": False}
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(with_escalation))
    assert runner.invoke(args=["helpdesk", "sla-policy-import", str(path)]).exit_code == 0
    premium = db.session.scalar(sa.select(SlaPolicy).where(SlaPolicy.name == "Premium"))
    standard = db.session.scalar(sa.select(SlaPolicy).where(SlaPolicy.name == "Standard"))
    assert premium.escalation == {"tier": None, "raise_priority": False, "notify": False}
    assert standard.escalation == {"tier": "second_line", "raise_priority": True, "notify": True}

    exported = tmp_path / "exported.json"
    assert runner.invoke(args=["helpdesk", "sla-policy-export", str(exported)]).exit_code == 0
    by_name = {policy["name"]: policy for policy in json.loads(exported.read_text())["policies"]}
    assert by_name["Premium"]["escalation"] == {"tier": None, "raise_priority": False, "notify": False}
    assert runner.invoke(args=["helpdesk", "sla-policy-import", str(exported)]).exit_code == 0
    again = tmp_path / "again.json"
    assert runner.invoke(args=["helpdesk", "sla-policy-export", str(again)]).exit_code == 0
    assert again.read_text() == exported.read_text()


def test_a_malformed_policies_file_or_one_dropping_a_policy_in_use_changes_nothing(
    runner, tmp_path, configured
):
    broken = json.loads(json.dumps(POLICIES))
    broken["policies"][0]["calendar"]["hours"]["mon"] = [["09:00", "25:00"]]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    result = runner.invoke(args=["helpdesk", "sla-policy-import", str(path)])
    assert result.exit_code != 0
    assert "policies[0].calendar.hours.mon[0]: end '25:00' is not a time of day" in result.output

    only_standard = {"policies": [POLICIES["policies"][0]]}
    path.write_text(json.dumps(only_standard))
    result = runner.invoke(args=["helpdesk", "sla-policy-import", str(path)])
    assert result.exit_code != 0
    assert (
        "triage rule 'VIP customers' names the SLA policy 'Premium', which this file leaves out"
        in result.output
    )
    names = db.session.scalars(sa.select(SlaPolicy.name).order_by(SlaPolicy.name))
    assert list(names) == ["Premium", "Standard"]


def test_a_stored_rule_that_no_longer_reads_is_skipped_not_fatal(configured, caplog):
    db.session.execute(
        sa.update(TriageRule).where(TriageRule.name == "VIP customers").values(actions={"tier": "nowhere"})
    )
    db.session.commit()
    ticket = ingest(make_inbound(sender=VIP_SENDER)).ticket
    assert ticket.tier.value == "first_line" and tags_of(ticket) == ["triaged"]
    assert "triage rule 'VIP customers' is skipped" in caplog.text
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1


def test_rules_are_read_once_and_again_only_after_a_change_from_any_process(configured, monkeypatch):
    from helpdesk.triage import engine

    reads = []
    real_load_rules = engine.load_rules
    monkeypatch.setattr(engine, "load_rules", lambda: reads.append(1) or real_load_rules())
    ingest(make_inbound(subject="First"))
    ingest(make_inbound(subject="Second"))
    assert len(reads) <= 1  # at most once: the fixture's own change may have been read already

    # Another process (its own connection, plain SQL) disables the catch-all rule and then deletes another:
    # each change is seen by the next message here.
    with db.engine.begin() as other:
        other.execute(sa.text("UPDATE triage_rule SET is_enabled = :off, updated_at = :now WHERE name = :name"),
                      {"off": False, "now": dt.datetime.now(dt.UTC), "name": "Everyone is triaged"})
    assert tags_of(ingest(make_inbound(subject="Third")).ticket) == []
    with db.engine.begin() as other:
        other.execute(sa.text("DELETE FROM triage_rule WHERE name = :name"), {"name": "Outages are urgent"})
    outage = ingest(make_inbound(subject="The site is down")).ticket
    assert outage.priority.value == "normal" and outage.group_id is None
    assert rule_names() == ["VIP customers", "German to DACH", "Escalations", "Everyone is triaged"]


def test_a_policy_changed_in_this_process_applies_to_the_next_message(configured):
    ingest(make_inbound())
    faster = {**POLICIES, "policies": [{**POLICIES["policies"][0], "calendar": ALWAYS_OPEN,
                                        "targets": {"normal": {"first_response": 5}}},
                                       POLICIES["policies"][1]]}
    replace_policies(parse_policies(json.dumps(faster), filename="policies.json"))
    ticket = ingest(make_inbound()).ticket
    assert ticket.first_response_due_at == add_business_minutes(ticket.created_at, 5, PREMIUM_CALENDAR)
