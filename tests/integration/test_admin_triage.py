"""Admins' triage rule pages: listing, editing, ordering, import and export, dry runs; nobody else gets in."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from markupsafe import escape

from channels.messages import IdentityKind, SenderIdentity
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Group, Ticket, TicketEvent, TriageRule
from helpdesk.triage.config_io import import_policies, import_rules
from helpdesk.triage.rules import RunOn, parse_rules
from tests.admin_forms import form_with, upload
from tests.factories import make_inbound

pytestmark = pytest.mark.integration

POLICIES = {
    "policies": [
        {"name": "Standard", "default": True, "calendar": {"name": "Always", "timezone": "UTC", "always_open": True},
         "targets": {"normal": {"first_response": 120}, "urgent": {"first_response": 30}}},
        {"name": "Premium", "calendar": {"name": "Always", "timezone": "UTC", "always_open": True},
         "targets": {"high": {"first_response": 60}}},
    ]
}
RULES = """
rules:
  - name: VIP customers
    conditions: {match: any, vip: true, sender: "@bigcorp.example"}
    actions: {tier: second_line, priority: high, sla_policy: Premium, add_tags: [vip]}
    stop: true
  - name: Outages are urgent
    conditions: {subject_keywords: [outage, "is down"]}
    actions: {priority: urgent, group: Operations}
  - name: German to DACH
    conditions: {language: de}
    actions: {group: DACH}
"""
VIP_SENDER = SenderIdentity(IdentityKind.EMAIL, "ceo@bigcorp.example", "Big Corp CEO")


@pytest.fixture
def configured():
    db.session.add_all([Group(name="Operations"), Group(name="DACH")])
    db.session.commit()
    import_policies(json.dumps(POLICIES), filename="policies.json")
    import_rules(RULES)


def rule_names() -> list[str]:
    return list(db.session.scalars(sa.select(TriageRule.name).order_by(TriageRule.position)))


def rule_named(name: str) -> TriageRule:
    return db.session.scalar(sa.select(TriageRule).where(TriageRule.name == name))


def stored_rules() -> list[tuple]:
    db.session.expire_all()
    return [
        (row.position, row.name, row.is_enabled, str(row.run_on), row.conditions, row.actions, row.stops_processing)
        for row in db.session.scalars(sa.select(TriageRule).order_by(TriageRule.position))
    ]


def rule_form(**overrides) -> dict:
    defaults = {
        "name": "Refunds to billing",
        "is_enabled": "y",
        "conditions": "subject_keywords: [refund, money back]\n",
        "actions": "priority: high\nadd_tags: [refund]\n",
    }
    return form_with(defaults, overrides)


GET_PAGES = [
    "/admin/triage/rules",
    "/admin/triage/rules/new",
    "/admin/triage/rules/{rule_id}",
    "/admin/triage/rules/export",
    "/admin/triage/rules/export?format=json",
    "/admin/triage/dry-run",
]


@pytest.mark.parametrize("path", GET_PAGES)
def test_rule_pages_send_anonymous_visitors_to_login(client, configured, path):
    response = client.get(path.format(rule_id=rule_named("VIP customers").id))
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("role", ["agent", "lead"])
@pytest.mark.parametrize("path", GET_PAGES)
def test_rule_pages_are_forbidden_to_agents_and_leads(client, login_as, configured, role, path):
    login_as(role)
    assert client.get(path.format(rule_id=rule_named("VIP customers").id)).status_code == 403


@pytest.mark.parametrize("path", GET_PAGES)
def test_rule_pages_open_for_admins(client, admin, configured, path):
    assert client.get(path.format(rule_id=rule_named("VIP customers").id)).status_code == 200


@pytest.mark.parametrize("role", ["agent", "lead"])
def test_agents_and_leads_cannot_change_rules_or_dry_run(login_as, post, configured, role):
    login_as(role)
    before = stored_rules()
    vip = rule_named("VIP customers").id
    attempts = [
        ("/admin/triage/rules/new", rule_form()),
        (f"/admin/triage/rules/{vip}", rule_form(name="Hijacked")),
        (f"/admin/triage/rules/{vip}/delete", {}),
        (f"/admin/triage/rules/{vip}/enabled", {"enabled": "0"}),
        (f"/admin/triage/rules/{vip}/move", {"direction": "down"}),
        ("/admin/triage/rules/import", {"file": upload("rules: []", "rules.yaml")}),
        ("/admin/triage/dry-run/ticket", {"ticket_number": "1001"}),
        ("/admin/triage/dry-run/message", {"channel": "email", "body": "hello"}),
    ]
    for path, data in attempts:
        assert post(path, **data).status_code == 403, path
    assert stored_rules() == before


@pytest.mark.parametrize(("role", "shown"), [("agent", False), ("lead", False), ("admin", True)])
def test_the_admin_menu_links_to_rules_and_policies_for_admins_only(client, login_as, role, shown):
    login_as(role)
    html = client.get("/inbox").get_data(as_text=True)
    assert ('href="/admin/triage/rules"' in html, 'href="/admin/triage/policies"' in html) == (shown, shown)


def test_the_list_shows_rules_in_order_with_conditions_and_actions(client, admin, configured):
    html = client.get("/admin/triage/rules").get_data(as_text=True)
    positions = [html.index(name) for name in ("VIP customers", "Outages are urgent", "German to DACH")]
    assert positions == sorted(positions)
    assert "<code>sender</code>: @bigcorp.example" in html
    assert "<code>subject_keywords</code>: outage, is down" in html
    assert "<code>sla_policy</code>: Premium" in html
    assert "stop</span>" in html


def test_an_admin_adds_a_rule_and_new_tickets_follow_it(client, admin, post, configured):
    response = post("/admin/triage/rules/new", **rule_form(runs_on_every_message="y"))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert rule_names()[-1] == "Refunds to billing"
    row = rule_named("Refunds to billing")
    assert (row.conditions, row.actions, row.run_on) == (
        {"subject_keywords": ["refund", "money back"]},
        {"priority": "high", "add_tags": ["refund"]},
        RunOn.CREATE_AND_CUSTOMER_MESSAGE,
    )
    ticket = ingest(make_inbound(subject="Money back please")).ticket
    assert ticket.priority.value == "high" and "refund" in ticket.tags


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"conditions": "subject_regex: '(unclosed'"}, "conditions.subject_regex: invalid regular expression"),
        ({"conditions": "vip: [true"}, "conditions: not valid YAML"),
        ({"conditions": "colour: red"}, "conditions.colour: unknown field"),
        ({"actions": "tier: third_line"}, "actions.tier: must be first_line or second_line"),
        ({"actions": "group: Nobody"}, "actions.group: no group named &#39;Nobody&#39;"),
        ({"actions": "sla_policy: Gold"}, "actions.sla_policy: no SLA policy named &#39;Gold&#39;"),
        ({"actions": ""}, "actions: give at least one action"),
        ({"name": "vip CUSTOMERS"}, "name: &#39;vip CUSTOMERS&#39; is already the name of another rule"),
        ({"name": ""}, "This field is required."),
    ],
)
def test_a_malformed_rule_is_refused_with_the_field_named_and_the_text_kept(
    client, admin, post, configured, overrides, message
):
    before = stored_rules()
    form = rule_form(**overrides)
    response = post("/admin/triage/rules/new", **form)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in html
    assert str(escape(form["conditions"])) in html and str(escape(form["actions"])) in html
    assert stored_rules() == before


def test_an_admin_edits_a_rule_in_yaml_and_its_text_comes_back(client, admin, post, configured):
    row = rule_named("Outages are urgent")
    page = client.get(f"/admin/triage/rules/{row.id}").get_data(as_text=True)
    assert "subject_keywords:\n- outage\n- is down\n</textarea>" in page
    response = post(
        f"/admin/triage/rules/{row.id}",
        name="Outages are urgent",
        is_enabled="y",
        stops_processing="y",
        conditions='{"subject_keywords": ["outage"], "channel": ["email", "chat"]}',
        actions="priority: urgent\ngroup: operations\n",
    )
    assert response.status_code == 302
    db.session.expire_all()
    assert (row.conditions, row.actions, row.stops_processing, row.position) == (
        {"channel": ["email", "chat"], "subject_keywords": "outage"},
        {"group": "operations", "priority": "urgent"},
        True,
        1,
    )


def test_disabling_a_rule_keeps_it_but_stops_it_matching(client, admin, post, configured):
    row = rule_named("Outages are urgent")
    assert post(f"/admin/triage/rules/{row.id}/enabled", enabled="0").status_code == 302
    db.session.expire_all()
    assert row.is_enabled is False and rule_names()[1] == "Outages are urgent"
    assert "disabled</span>" in client.get("/admin/triage/rules").get_data(as_text=True)
    assert ingest(make_inbound(subject="Site is down")).ticket.priority.value == "normal"
    assert post(f"/admin/triage/rules/{row.id}/enabled", enabled="1").status_code == 302
    assert ingest(make_inbound(subject="Site is down again")).ticket.priority.value == "urgent"
    assert post(f"/admin/triage/rules/{row.id}/enabled", enabled="maybe").status_code == 400


def test_rules_move_up_down_and_to_a_position(admin, post, configured):
    german = rule_named("German to DACH").id
    assert post(f"/admin/triage/rules/{german}/move", direction="up").status_code == 302
    assert rule_names() == ["VIP customers", "German to DACH", "Outages are urgent"]
    assert post(f"/admin/triage/rules/{german}/move", position="1").status_code == 302
    assert rule_names() == ["German to DACH", "VIP customers", "Outages are urgent"]
    assert post(f"/admin/triage/rules/{german}/move", direction="down").status_code == 302
    assert rule_names() == ["VIP customers", "German to DACH", "Outages are urgent"]
    assert post(f"/admin/triage/rules/{german}/move", position="99").status_code == 302
    assert rule_names() == ["VIP customers", "Outages are urgent", "German to DACH"]
    assert post(f"/admin/triage/rules/{german}/move", direction="down").status_code == 302
    assert rule_names() == ["VIP customers", "Outages are urgent", "German to DACH"]
    assert post(f"/admin/triage/rules/{german}/move", direction="sideways").status_code == 400
    assert post(f"/admin/triage/rules/{german}/move").status_code == 400


def test_the_order_decides_which_rule_wins(admin, post, configured):
    # VIP customers stops processing: tried first, the outage rule never sets the group.
    ticket = ingest(make_inbound(sender=VIP_SENDER, subject="Outage in Berlin")).ticket
    assert (ticket.priority.value, ticket.group) == ("high", None)
    outage = rule_named("Outages are urgent").id
    assert post(f"/admin/triage/rules/{outage}/move", position="1").status_code == 302
    ticket = ingest(make_inbound(sender=VIP_SENDER, subject="Another outage")).ticket
    assert (ticket.priority.value, ticket.group.name, ticket.tier.value) == ("high", "Operations", "second_line")


def test_deleting_a_rule_keeps_the_others_in_order(admin, post, configured):
    assert post(f"/admin/triage/rules/{rule_named('Outages are urgent').id}/delete").status_code == 302
    assert rule_names() == ["VIP customers", "German to DACH"]
    assert post("/admin/triage/rules/99999/delete").status_code == 404


def test_a_form_without_its_csrf_token_is_refused(client, admin, configured):
    before = stored_rules()
    response = client.post("/admin/triage/rules/new", data=rule_form())
    assert response.status_code == 400
    assert client.post(f"/admin/triage/rules/{rule_named('VIP customers').id}/delete").status_code == 400
    assert stored_rules() == before


# --- import and export ---


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_downloads_what_the_cli_writes_and_import_reads_it_back(client, admin, post, runner, configured, fmt):
    response = client.get(f"/admin/triage/rules/export?format={fmt}")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == f'attachment; filename="triage-rules.{fmt}"'
    exported = response.get_data(as_text=True)
    cli = runner.invoke(args=["helpdesk", "rules-export", "--format", fmt])
    assert cli.exit_code == 0 and cli.output == exported
    before = stored_rules()
    import_rules("rules: [{name: Only one, actions: {priority: low}}]")
    assert rule_names() == ["Only one"]
    response = post("/admin/triage/rules/import", file=upload(exported, f"rules.{fmt}"))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert stored_rules() == before


def test_an_uploaded_rules_file_replaces_the_whole_set(client, admin, post, configured):
    text = (
        "rules:\n  - {name: Everything urgent, actions: {priority: urgent}}\n"
        "  - {name: Spare, enabled: false, stop: true}\n"
    )
    response = post("/admin/triage/rules/import", file=upload(text, "new-rules.yml"))
    assert response.status_code == 302
    assert rule_names() == ["Everything urgent", "Spare"]
    assert "Imported 2 rules from new-rules.yml" in client.get("/admin/triage/rules").get_data(as_text=True)
    assert ingest(make_inbound()).ticket.priority.value == "urgent"


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        (
            (
                "rules:\n  - {name: a, actions: {priority: high}}\n  - {name: b, actions: {priority: high}}\n"
                "  - {name: c, conditions: {subject_regex: '(unclosed'}, actions: {priority: high}}\n"
            ),
            "rules.yaml",
            "rules.yaml: rules[2].conditions.subject_regex: invalid regular expression",
        ),
        ('{"rules": [{"name": "a", "actions": {"group": "Nobody"}}]}', "rules.json",
         "rules.json: rules[0].actions.group: no group named &#39;Nobody&#39;"),
        ('{"rules": [', "rules.json", "rules.json: not valid JSON"),
        ("rules: [{name: a", "rules.yaml", "rules.yaml: not valid YAML"),
        (b"\xff\xfe", "rules.yaml", "rules.yaml: the file is not UTF-8 text"),
    ],
)
def test_a_malformed_rules_file_is_refused_whole_and_nothing_changes(
    client, admin, post, configured, content, filename, message
):
    before = stored_rules()
    response = post("/admin/triage/rules/import", file=upload(content, filename))
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert stored_rules() == before


def test_an_import_without_a_file_is_refused(admin, post, configured):
    before = stored_rules()
    response = post("/admin/triage/rules/import")
    assert response.status_code == 400 and "Choose a file." in response.get_data(as_text=True)
    assert stored_rules() == before


def test_an_unknown_export_format_is_refused(client, admin):
    assert client.get("/admin/triage/rules/export?format=xml").status_code == 400


# --- dry runs ---


def counts() -> tuple[int, int]:
    return (
        db.session.scalar(sa.select(sa.func.count()).select_from(Ticket)),
        db.session.scalar(sa.select(sa.func.count()).select_from(TicketEvent)),
    )


def test_a_dry_run_on_a_ticket_shows_the_rules_that_match_and_the_result(admin, post, configured):
    ticket = ingest(make_inbound(sender=VIP_SENDER, subject="Hello")).ticket
    before = counts()
    response = post("/admin/triage/dry-run/ticket", ticket_number=str(ticket.number))
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f"Result for ticket #{ticket.number}" in html
    assert html.count('class="matched-rule"') == 1
    assert "VIP customers <span class=\"badge\">stop: later rules not tried</span>" in html
    assert '<dd id="result-tier">second_line</dd>' in html
    assert '<dd id="result-priority">high</dd>' in html
    assert '<dd id="result-sla-policy">Premium</dd>' in html
    assert counts() == before


def test_a_dry_run_on_a_pasted_message_shows_each_rule_and_changes_nothing(admin, post, configured):
    import_rules(RULES.replace("    stop: true\n", "") + "  - {name: Angry words, conditions: {body_keywords: furious},"
                 " actions: {add_tags: [angry]}}\n")
    before = counts()
    response = post(
        "/admin/triage/dry-run/message",
        channel="email",
        sender="it@kunde.example",
        subject="Outage",
        body="Hallo, unser Shop ist seit heute Morgen nicht mehr erreichbar. Wir sind wirklich verärgert.",
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    matched = [line for line in html.splitlines() if 'class="matched-rule"' in line]
    assert [m.split("<td>")[1].split("<")[0].strip() for m in matched] == ["Outages are urgent", "German to DACH"]
    assert "<code>priority</code>: urgent" in html and "<code>group</code>: DACH" in html
    assert '<dd id="result-priority">urgent</dd>' in html
    assert '<dd id="result-group">DACH</dd>' in html
    assert '<dd id="result-language">de</dd>' in html
    assert '<dd id="result-sla-policy">Standard</dd>' in html
    assert counts() == before


def test_a_dry_run_where_no_rule_matches_says_the_defaults_apply(admin, post, configured):
    response = post("/admin/triage/dry-run/message", channel="sms", sender="+46701234567", body="Hi there")
    html = response.get_data(as_text=True)
    assert 'id="no-rule-matched"' in html and '<dd id="result-tier">first_line</dd>' in html


def test_a_dry_run_shows_pasted_text_as_text(admin, post, configured):
    import_rules("rules: [{name: '<b>Bold</b> rule', conditions: {body_keywords: script}, actions: {priority: low}}]")
    html = post("/admin/triage/dry-run/message", channel="email", body="<script>alert(1)</script>").get_data(
        as_text=True
    )
    assert "<b>Bold</b>" not in html and "&lt;b&gt;Bold&lt;/b&gt; rule" in html
    assert "<script>alert(1)</script>" not in html


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("/admin/triage/dry-run/ticket", {"ticket_number": "424242"}, "There is no ticket #424242."),
        ("/admin/triage/dry-run/ticket", {"ticket_number": "abc"}, "Not a valid integer value."),
        ("/admin/triage/dry-run/message", {"channel": "email", "body": ""}, "This field is required."),
        ("/admin/triage/dry-run/message", {"channel": "fax", "body": "Hi"}, "Not a valid choice."),
    ],
)
def test_a_dry_run_with_bad_input_says_what_is_wrong(admin, post, configured, path, data, message):
    response = post(path, **data)
    assert response.status_code == 400 and message in response.get_data(as_text=True)


def test_rules_written_in_the_ui_read_back_through_the_file_format(admin, post, client, configured):
    post("/admin/triage/rules/new", **rule_form())
    exported = client.get("/admin/triage/rules/export?format=yaml").get_data(as_text=True)
    assert [rule.name for rule in parse_rules(exported)][-1] == "Refunds to billing"
