"""Triage rules: each condition and action, ordering, stop, defaults, the file formats and their errors."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from helpdesk.triage.calendar import calendar_from_dict
from helpdesk.triage.rules import (
    PRIORITIES,
    TIERS,
    RunOn,
    TriageConfigError,
    TriageFacts,
    check_references,
    dump_policies,
    dump_rules,
    escalation_from_dict,
    evaluate,
    is_open_at,
    parse_policies,
    parse_rules,
    policies_from_data,
    policy_from_dict,
    rule_from_dict,
    rules_from_data,
)

pytestmark = pytest.mark.usefixtures("no_app")

STOCKHOLM = calendar_from_dict(
    {
        "name": "Office",
        "timezone": "Europe/Stockholm",
        "hours": {d: [["08:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")},
    }
)
#: Monday 2026-03-02 10:00 in Stockholm (UTC+1), and the same day at 18:30.
MONDAY_MORNING = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
MONDAY_EVENING = dt.datetime(2026, 3, 2, 17, 30, tzinfo=dt.UTC)


@pytest.fixture
def no_app():
    """Pure code under test: skip the app context and the table clean-up after each test."""


def facts(**overrides) -> TriageFacts:
    fields = {
        "channel": "email",
        "sender": "maria@shop.example",
        "subject": "Question about my order",
        "body": "Hello, where is my parcel?",
        "received_at": MONDAY_MORNING,
        "calendar": STOCKHOLM,
    }
    fields.update(overrides)
    return TriageFacts(**fields)


def rule(conditions=None, actions=None, **extra):
    data = {
        "name": extra.pop("name", "the rule"),
        "conditions": conditions or {},
        "actions": actions or {"priority": "high"},
        **extra,
    }
    return rule_from_dict(data)


@pytest.mark.parametrize(
    ("conditions", "fact_overrides", "matches"),
    [
        ({"channel": "email"}, {}, True),
        ({"channel": ["sms", "whatsapp"]}, {}, False),
        ({"channel": ["sms", "whatsapp"]}, {"channel": "whatsapp"}, True),
        ({"sender": "maria@shop.example"}, {}, True),
        ({"sender": "Maria@Shop.Example"}, {}, True),
        ({"sender": "other@shop.example"}, {}, False),
        ({"sender": "shop.example"}, {}, True),
        ({"sender": "@shop.example"}, {}, True),
        ({"sender": "@shop.example"}, {"sender": "ops@eu.shop.example"}, True),
        ({"sender": "@shop.example"}, {"sender": "someone@bigshop.example"}, False),
        ({"sender": ["@acme.example", "+46701234567"]}, {"sender": "+46701234567"}, True),
        ({"customer_tags": "enterprise"}, {"customer_tags": frozenset({"beta", "Enterprise"})}, True),
        ({"customer_tags": ["enterprise", "partner"]}, {"customer_tags": frozenset({"beta"})}, False),
        ({"vip": True}, {"is_vip": True}, True),
        ({"vip": True}, {}, False),
        ({"vip": False}, {}, True),
        ({"subject_keywords": "order"}, {}, True),
        ({"subject_keywords": "ORDER"}, {}, True),
        ({"subject_keywords": "ord"}, {}, False),
        ({"subject_keywords": ["refund", "about my"]}, {}, True),
        ({"subject_keywords": "is down"}, {"subject": "The shop IS\n  DOWN!"}, True),
        ({"subject_keywords": "urgent"}, {"subject": "insurgent ideas"}, False),
        ({"subject_keywords": "c++"}, {"subject": "A C++ question"}, True),
        ({"body_keywords": "parcel"}, {}, True),
        ({"body_keywords": "parcel"}, {"body": "", "subject": "parcel"}, False),
        ({"subject_regex": r"order\s+#?\d+"}, {"subject": "Order #1234 missing"}, True),
        ({"subject_regex": r"^question"}, {}, True),
        ({"subject_regex": [r"invoice", r"refund"]}, {}, False),
        ({"body_regex": r"error\s+5\d\d"}, {"body": "We get ERROR 503 at checkout"}, True),
        ({"body_regex": r"error\s+5\d\d"}, {"body": "error 404"}, False),
        ({"language": "de"}, {"language": "de"}, True),
        ({"language": ["sv", "da"]}, {"language": "de"}, False),
        ({"language": "de"}, {"language": None}, False),
        ({"business_hours": "inside"}, {}, True),
        ({"business_hours": "outside"}, {}, False),
        ({"business_hours": "outside"}, {"received_at": MONDAY_EVENING}, True),
        ({"business_hours": "inside"}, {"calendar": None}, False),
        ({"business_hours": "outside"}, {"calendar": None}, False),
        ({"priority": "normal"}, {}, True),
        ({"priority": ["high", "urgent"]}, {}, False),
        ({"priority": ["high", "urgent"]}, {"priority": "urgent"}, True),
        ({}, {}, True),
        ({"vip": True, "channel": "email"}, {}, False),
        ({"match": "any", "vip": True, "channel": "email"}, {}, True),
        ({"match": "any", "vip": True, "channel": "sms"}, {}, False),
        ({"match": "all", "channel": "email", "subject_keywords": "order"}, {}, True),
    ],
)
def test_conditions(conditions, fact_overrides, matches):
    outcome = evaluate(facts(**fact_overrides), [rule(conditions)])
    assert outcome.matched_rules == (["the rule"] if matches else [])


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ({"tier": "second_line"}, {"tier": "second_line"}),
        ({"priority": "urgent"}, {"priority": "urgent"}),
        ({"group": "Billing"}, {"group": "Billing"}),
        ({"sla_policy": "Premium"}, {"sla_policy": "Premium"}),
        ({"add_tags": ["vip", "invoice"]}, {"add_tags": ["vip", "invoice"]}),
        ({"assign": "Sam@Example.com"}, {"assign": "sam@example.com"}),
        ({"assign": "auto"}, {"assign": "auto"}),
        ({"auto_reply": "out-of-hours"}, {"auto_reply": ["out-of-hours"]}),
        (
            {"tier": "second_line", "priority": "high", "add_tags": ["vip"]},
            {"tier": "second_line", "priority": "high", "add_tags": ["vip"]},
        ),
    ],
)
def test_actions(actions, expected):
    outcome = evaluate(facts(), [rule(actions=actions)])
    assert outcome.changes() == expected
    assert outcome.matched[0].changes == {k: v for k, v in rule(actions=actions).actions.to_dict().items()}
    assert set(outcome.set_by.values()) == {"the rule"}


def test_no_rule_matching_leaves_the_defaults():
    outcome = evaluate(facts(), [rule({"vip": True}, {"tier": "second_line", "priority": "urgent"})])
    assert outcome.matched == ()
    assert (outcome.tier, outcome.priority, outcome.sla_policy) == ("first_line", "normal", None)
    assert outcome.changes() == {} and outcome.stopped_by is None


def test_with_no_rules_at_all_the_defaults_apply():
    outcome = evaluate(facts(), [])
    assert (outcome.tier, outcome.priority, outcome.sla_policy, outcome.group) == (
        "first_line",
        "normal",
        None,
        None,
    )


def test_rules_apply_in_order_and_a_later_value_wins_while_tags_add_up():
    rules = [
        rule(actions={"priority": "high", "add_tags": ["a"], "group": "Billing"}, name="first"),
        rule(actions={"priority": "low", "add_tags": ["b", "a"]}, name="second"),
    ]
    outcome = evaluate(facts(), rules)
    assert outcome.matched_rules == ["first", "second"]
    assert (outcome.priority, outcome.add_tags, outcome.group) == ("low", ("a", "b"), "Billing")
    assert outcome.set_by == {"priority": "second", "add_tags": "second", "group": "first"}


def test_a_priority_condition_sees_what_earlier_rules_set():
    rules = [
        rule({"vip": True}, {"priority": "high"}, name="vip is high"),
        rule({"priority": "high"}, {"tier": "second_line"}, name="high goes to second line"),
    ]
    assert evaluate(facts(is_vip=True), rules).tier == "second_line"
    assert evaluate(facts(is_vip=False), rules).tier == "first_line"


def test_stop_ends_processing_after_a_matching_rule_only():
    rules = [
        rule({"vip": True}, {"priority": "urgent"}, name="vip", stop=True),
        rule({}, {"priority": "low", "add_tags": ["late"]}, name="catch-all"),
    ]
    stopped = evaluate(facts(is_vip=True), rules)
    assert stopped.matched_rules == ["vip"] and stopped.stopped_by == "vip"
    assert (stopped.priority, stopped.add_tags) == ("urgent", ())
    assert stopped.matched[0].stopped
    passed = evaluate(facts(is_vip=False), rules)
    assert passed.matched_rules == ["catch-all"] and passed.stopped_by is None


def test_a_disabled_rule_is_skipped():
    outcome = evaluate(
        facts(), [rule(enabled=False, name="off"), rule(name="on", actions={"tier": "second_line"})]
    )
    assert outcome.matched_rules == ["on"]


@pytest.mark.parametrize(
    ("run_on", "on", "runs"),
    [
        ("create", "create", True),
        ("create", "customer_message", False),
        ("create_and_customer_message", "create", True),
        ("create_and_customer_message", "customer_message", True),
    ],
)
def test_run_on_decides_whether_a_rule_runs_for_later_customer_messages(run_on, on, runs):
    outcome = evaluate(facts(), [rule(run_on=run_on)], on=on)
    assert bool(outcome.matched) is runs


def test_a_customer_message_starts_from_the_ticket_as_it_stands():
    ticket_facts = facts(tier="second_line", priority="high", sla_policy="Premium")
    outcome = evaluate(
        ticket_facts,
        [rule(run_on="create_and_customer_message", actions={"add_tags": ["x"]})],
        on="customer_message",
    )
    assert (outcome.tier, outcome.priority, outcome.sla_policy) == ("second_line", "high", "Premium")


def test_evaluate_refuses_an_unknown_moment():
    with pytest.raises(ValueError, match="on must be"):
        evaluate(facts(), [], on="update")


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        (dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC), True),  # 08:00 local: opening minute
        (dt.datetime(2026, 3, 2, 6, 59, 30, tzinfo=dt.UTC), False),
        (dt.datetime(2026, 3, 2, 15, 59, tzinfo=dt.UTC), True),
        (dt.datetime(2026, 3, 2, 16, 0, tzinfo=dt.UTC), False),  # 17:00 local: closed
        (dt.datetime(2026, 3, 7, 10, 0, tzinfo=dt.UTC), False),  # Saturday
        (dt.datetime(2026, 3, 2, 10, 0), True),  # naive: read as UTC
    ],
)
def test_business_hours_follow_the_calendar(moment, is_open):
    assert is_open_at(STOCKHOLM, moment) is is_open


def test_rule_constants_match_the_ticket_enums():
    from helpdesk.models import Priority, Tier

    assert set(TIERS) == {tier.value for tier in Tier}
    assert set(PRIORITIES) == {priority.value for priority in Priority}


# --- files ---

RULES_YAML = """
version: 1
rules:
  - name: VIP customers to second line
    conditions:
      match: any
      vip: true
      sender: ["@acme.example", "ceo@globex.example"]
    actions:
      tier: second_line
      priority: high
      sla_policy: Premium
      add_tags: [vip]
    stop: true
  - name: Outage reports are urgent
    run_on: create_and_customer_message
    enabled: false
    conditions:
      subject_keywords: [outage, "is down"]
      body_regex: 'error\\s+5\\d\\d'
      business_hours: outside
    actions: {priority: urgent, assign: auto, auto_reply: outage-ack, group: Operations}
"""


def test_a_yaml_rules_file_reads_into_rules():
    first, second = parse_rules(RULES_YAML, filename="rules.yaml")
    assert (first.name, first.run_on, first.stops_processing, first.is_enabled) == (
        "VIP customers to second line",
        RunOn.CREATE,
        True,
        True,
    )
    assert first.conditions.match == "any"
    assert first.actions.add_tags == ("vip",)
    assert (second.run_on, second.is_enabled, second.actions.assign) == (
        RunOn.CREATE_AND_CUSTOMER_MESSAGE,
        False,
        "auto",
    )
    assert second.conditions.to_dict()["body_regex"] == r"error\s+5\d\d"


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_rules_survive_an_export_and_import(fmt):
    rules = parse_rules(RULES_YAML)
    text = dump_rules(rules, fmt)
    again = parse_rules(text, filename=f"rules.{fmt}")
    assert [r.to_dict() for r in again] == [r.to_dict() for r in rules]
    assert dump_rules(again, fmt) == text


def test_json_is_read_as_json_and_yaml_reads_json_too():
    text = json.dumps({"rules": [{"name": "a", "actions": {"priority": "low"}}]})
    assert parse_rules(text, filename="rules.json")[0].actions.priority == "low"
    assert parse_rules(text)[0].actions.priority == "low"


def test_yaml_times_dates_and_words_stay_strings():
    # YAML 1.1 would read 17:00 as 1020 and `no` as false.
    (policy,) = parse_policies("""
policies:
  - name: Office
    default: true
    calendar: {name: Office, timezone: UTC, hours: {mon: [[08:00, 17:00]]}, closed_dates: [2026-12-24]}
""")
    assert policy.calendar.hours["mon"][0].closes == 17 * 60
    assert policy.calendar.closed_dates == (dt.date(2026, 12, 24),)
    assert parse_rules("rules: [{name: a, actions: {add_tags: [no, on]}}]")[0].actions.add_tags == (
        "no",
        "on",
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            "rules: [{name: a, conditions: {subject_regex: '(('}, actions: {priority: high}}]",
            "rules[0].conditions.subject_regex: invalid regular expression '((': missing ), unterminated subpattern",
        ),
        (
            (
                "rules: [{name: a, actions: {priority: high}}, {name: b, actions: {priority: high}},"
                " {name: c, conditions: {subject_regex: ['ok', '[a-']}, actions: {priority: high}}]"
            ),
            "rules[2].conditions.subject_regex[1]: invalid regular expression '[a-'",
        ),
        (
            "rules: [{name: a, actions: {tier: third_line}}]",
            "rules[0].actions.tier: must be first_line or second_line",
        ),
        (
            "rules: [{name: a, actions: {priority: asap}}]",
            "rules[0].actions.priority: must be one of low, normal, high, urgent",
        ),
        ("rules: [{name: a, actions: {}}]", "rules[0].actions: give at least one action (or stop: true)"),
        ("rules: [{name: a, actions: {colour: red}}]", "rules[0].actions.colour: unknown field"),
        (
            "rules: [{name: a, actions: {add_tags: vip}}]",
            "rules[0].actions.add_tags: must be a non-empty list",
        ),
        ("rules: [{name: a, actions: {add_tags: ['a,b']}}]", "rules[0].actions.add_tags[0]: must be a tag"),
        ("rules: [{name: a, actions: {assign: sam}}]", "rules[0].actions.assign: must be an agent's email"),
        ("rules: [{name: a, actions: {group: ''}}]", "rules[0].actions.group: must be a non-empty string"),
        (
            "rules: [{name: a, conditions: {channel: fax}, actions: {priority: high}}]",
            "rules[0].conditions.channel: must be one of email, sms, whatsapp, chat",
        ),
        (
            "rules: [{name: a, conditions: {vip: 'yes'}, actions: {priority: high}}]",
            "rules[0].conditions.vip: must be true or false",
        ),
        (
            "rules: [{name: a, conditions: {match: most}, actions: {priority: high}}]",
            "rules[0].conditions.match: must be all or any",
        ),
        (
            "rules: [{name: a, conditions: {business_hours: evening}, actions: {priority: high}}]",
            "rules[0].conditions.business_hours: must be inside or outside",
        ),
        (
            "rules: [{name: a, conditions: {language: english}, actions: {priority: high}}]",
            "rules[0].conditions.language: 'english' is not an ISO 639-1 language code",
        ),
        (
            "rules: [{name: a, conditions: {sender: 'a@b'}, actions: {priority: high}}]",
            "rules[0].conditions.sender: 'a@b' is not an email address",
        ),
        (
            "rules: [{name: a, conditions: {subject_keywords: []}, actions: {priority: high}}]",
            "rules[0].conditions.subject_keywords: must not be an empty list",
        ),
        (
            "rules: [{name: a, conditions: {subject_keywords: 42}, actions: {priority: high}}]",
            "rules[0].conditions.subject_keywords: must be a string, not a number",
        ),
        (
            "rules: [{name: a, conditions: {weather: sunny}, actions: {priority: high}}]",
            "rules[0].conditions.weather: unknown field",
        ),
        (
            "rules: [{name: a, run_on: update, actions: {priority: high}}]",
            "rules[0].run_on: must be create or create_and_customer_message",
        ),
        ("rules: [{name: a, stop: 1}]", "rules[0].stop: must be true or false"),
        ("rules: [{actions: {priority: high}}]", "rules[0].name: must be a non-empty string"),
        (
            "rules: [{name: A, actions: {priority: high}}, {name: a, actions: {priority: low}}]",
            "rules[1].name: 'a' is already the name of rules[0]",
        ),
        ("rules: [{name: a, actions: {priority: high}, when: now}]", "rules[0].when: unknown field"),
        ("rules: [42]", "rules[0]: must be an object"),
        ("rules: {name: a}", "rules: must be a list"),
        ("version: 2\nrules: []", "version: only version 1 is known"),
        ("- name: a", "must be an object with a 'rules' list"),
        ("rules: [{name: a", "not valid YAML: "),
    ],
)
def test_a_malformed_rules_file_names_the_field(document, message):
    with pytest.raises(TriageConfigError) as caught:
        parse_rules(document)
    assert str(caught.value).startswith(message), str(caught.value)


def test_malformed_json_says_where():
    with pytest.raises(TriageConfigError, match=r"not valid JSON: .*\(line 1, column"):
        parse_rules('{"rules": [', filename="rules.json")


def test_a_file_that_is_not_utf8_is_refused():
    with pytest.raises(TriageConfigError, match="not UTF-8"):
        parse_rules(b"rules: [\xff]")


def test_an_empty_rules_list_is_a_valid_file():
    assert rules_from_data({"version": 1, "rules": []}) == []


def test_references_to_groups_policies_and_agents_are_checked():
    rules = parse_rules("""
rules:
  - {name: a, actions: {group: billing, sla_policy: premium, assign: auto}}
  - {name: b, actions: {assign: nobody@example.com}}
""")
    with pytest.raises(TriageConfigError, match=r"^rules\[1\]\.actions\.assign: no agent with the email"):
        check_references(rules, groups=["Billing"], policies=["Premium"], agents=["sam@example.com"])
    with pytest.raises(TriageConfigError, match=r"^rules\[0\]\.actions\.group: no group named 'billing'"):
        check_references(rules, groups=[], policies=["Premium"], agents=["nobody@example.com"])
    check_references(rules, groups=["Billing"], policies=["Premium"], agents=["Nobody@example.com"])


# --- SLA policies ---

POLICIES = {
    "version": 1,
    "policies": [
        {
            "name": "Standard",
            "default": True,
            "calendar": {
                "name": "Office",
                "timezone": "Europe/Stockholm",
                "hours": {"mon": [["08:00", "17:00"]]},
            },
            "targets": {
                "urgent": {"first_response": 30, "next_response": 60, "resolution": 240},
                "normal": {"first_response": 240},
            },
        },
        {
            "name": "Premium",
            "calendar": {"name": "Always", "timezone": "UTC", "always_open": True},
            "targets": {"high": {"first_response": 60, "resolution": 480}},
            "warn_at_percent": 80,
        },
    ],
}


def test_a_policies_file_reads_with_targets_per_priority():
    standard, premium = policies_from_data(POLICIES)
    assert standard.is_default and not premium.is_default
    assert standard.targets_for("urgent").next_response == 60
    assert standard.targets_for("normal").resolution is None
    assert standard.targets_for("low").first_response is None
    assert (premium.warn_at_percent, standard.warn_at_percent) == (80, 75)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_policies_survive_an_export_and_import(fmt):
    policies = policies_from_data(POLICIES)
    text = dump_policies(policies, fmt)
    assert dump_policies(parse_policies(text, filename=f"p.{fmt}"), fmt) == text


def _with(index: int, **changes) -> dict:
    data = json.loads(json.dumps(POLICIES))
    data["policies"][index].update(changes)
    return data


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_with(0, default=False), "policies: mark exactly one policy as default: true"),
        (_with(1, default=True), "policies[1].default: policies[0] is already the default"),
        (_with(1, name="standard"), "policies[1].name: 'standard' is already the name of policies[0]"),
        (
            _with(0, targets={"urgent": {"first_response": 0}}),
            "policies[0].targets.urgent.first_response: must be a whole number of business minutes",
        ),
        (
            _with(0, targets={"urgent": {"first_response": 1.5}}),
            "policies[0].targets.urgent.first_response: must be a whole number",
        ),
        (_with(0, targets={"asap": {}}), "policies[0].targets.asap: unknown field"),
        (_with(0, targets={"urgent": {"reply": 5}}), "policies[0].targets.urgent.reply: unknown field"),
        (_with(0, warn_at_percent=0), "policies[0].warn_at_percent: must be a whole number from 1 to 100"),
        (
            _with(1, calendar={"name": "x", "timezone": "Mars/Olympus", "always_open": True}),
            "policies[1].calendar.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            _with(0, calendar={"name": "x", "timezone": "UTC", "hours": {"mon": [["09:00", "08:00"]]}}),
            "policies[0].calendar.hours.mon[0]: end 08:00 is not after start 09:00",
        ),
        (_with(0, calendar=None), "policies[0].calendar: a calendar must be a JSON object"),
        (
            _with(0, calendar={"name": "x", "timezone": "UTC", "hours": {"sat": []}}),
            "policies[0].calendar.hours: the calendar is never open",
        ),
    ],
)
def test_a_malformed_policies_file_names_the_field(document, message):
    with pytest.raises(TriageConfigError) as caught:
        policies_from_data(document)
    assert str(caught.value).startswith(message), str(caught.value)


# --- escalation ---


def test_a_policy_without_escalation_moves_to_second_line_raises_priority_and_notifies():
    standard, _ = policies_from_data(POLICIES)
    assert standard.escalation.to_dict() == {"tier": "second_line", "raise_priority": True, "notify": True}


@pytest.mark.parametrize(
    ("escalation", "expected"),
    [
        ({"tier": None, "raise_priority": True}, {"tier": None, "raise_priority": True, "notify": True}),
        ({"raise_priority": False}, {"tier": "second_line", "raise_priority": False, "notify": True}),
        ({"notify": False}, {"tier": "second_line", "raise_priority": True, "notify": False}),
        (None, {"tier": "second_line", "raise_priority": True, "notify": True}),
    ],
)
def test_each_escalation_key_left_out_keeps_its_default(escalation, expected):
    assert escalation_from_dict(escalation).to_dict() == expected


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_a_policys_escalation_survives_an_export_and_import(fmt):
    data = _with(1, escalation={"tier": None, "raise_priority": False, "notify": False})
    text = dump_policies(policies_from_data(data), fmt)
    _, premium = parse_policies(text, filename=f"p.{fmt}")
    assert premium.escalation.to_dict() == {"tier": None, "raise_priority": False, "notify": False}
    assert [policy.to_dict() for policy in parse_policies(text, filename=f"p.{fmt}")] == [
        policy.to_dict() for policy in policies_from_data(data)
    ]


@pytest.mark.parametrize(
    ("escalation", "message"),
    [
        ({"tier": "first_line"}, "policy.escalation.tier: must be second_line, or null"),
        ({"raise_priority": "yes"}, "policy.escalation.raise_priority: must be true or false"),
        ({"notify": 1}, "policy.escalation.notify: must be true or false"),
        ({"page": True}, "policy.escalation.page: unknown field"),
        (["second_line"], "policy.escalation: must be an object"),
    ],
)
def test_a_malformed_escalation_names_the_field(escalation, message):
    data = {**POLICIES["policies"][0], "escalation": escalation}
    with pytest.raises(TriageConfigError) as caught:
        policy_from_dict(data)
    assert str(caught.value).startswith(message), str(caught.value)
