"""Admins' SLA policy pages: targets, escalation, default flag, business calendars, import and export."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import sqlalchemy as sa
from markupsafe import escape

from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import SlaPolicy, Ticket, TicketEvent, TriageRule
from helpdesk.models.base import utcnow
from helpdesk.triage.config_io import import_policies, import_rules
from helpdesk.triage.rules import parse_policies
from helpdesk.triage.sweep import sweep_sla
from tests.admin_forms import form_with, upload
from tests.factories import make_inbound

pytestmark = pytest.mark.integration

OFFICE = {
    "name": "Stockholm office",
    "timezone": "Europe/Stockholm",
    "hours": {"mon": [["08:00", "12:00"], ["13:00", "17:00"]], "tue": [["08:00", "17:00"]], "sat": []},
    "holidays": {"country": "SE", "subdivision": None},
    "closed_dates": ["2026-12-24"],
    "open_dates": {"2026-12-27": [["10:00", "14:00"]]},
}
ALWAYS_OPEN = {"name": "Around the clock", "timezone": "UTC", "always_open": True}
POLICIES = {
    "version": 1,
    "policies": [
        {"name": "Standard", "default": True, "calendar": OFFICE,
         "targets": {"normal": {"first_response": 240, "next_response": 480, "resolution": 2880}}},
        {"name": "Premium", "calendar": ALWAYS_OPEN, "targets": {"high": {"first_response": 60}},
         "warn_at_percent": 80, "escalation": {"tier": None, "raise_priority": True, "notify": False}},
    ],
}


@pytest.fixture
def configured():
    import_policies(json.dumps(POLICIES), filename="policies.json")
    import_rules("rules: [{name: VIPs, conditions: {vip: true}, actions: {sla_policy: Premium}}]")


def policy_named(name: str) -> SlaPolicy | None:
    return db.session.scalar(sa.select(SlaPolicy).where(SlaPolicy.name == name))


def stored_policies() -> list[tuple]:
    db.session.expire_all()
    return [
        (row.name, row.is_default, row.calendar, row.targets, row.warn_at_percent, row.escalation)
        for row in db.session.scalars(sa.select(SlaPolicy).order_by(SlaPolicy.name))
    ]


def policy_form(**overrides) -> dict:
    defaults = {
        "name": "Gold",
        "warn_at_percent": "80",
        "escalation_tier": "second_line",
        "escalation_raise_priority": "y",
        "escalation_notify": "y",
        "calendar": json.dumps(OFFICE, indent=2),
        "target_high_first_response": "60",
        "target_high_resolution": "480",
        "target_urgent_first_response": "30",
        "target_urgent_next_response": "45",
    }
    return form_with(defaults, overrides)


GET_PAGES = [
    "/admin/triage/policies",
    "/admin/triage/policies/new",
    "/admin/triage/policies/{policy_id}",
    "/admin/triage/policies/export",
    "/admin/triage/policies/export?format=json",
    "/admin/triage/policies/{policy_id}/calendar.json",
]


@pytest.mark.parametrize("path", GET_PAGES)
def test_policy_pages_send_anonymous_visitors_to_login(client, configured, path):
    response = client.get(path.format(policy_id=policy_named("Standard").id))
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("role", ["agent", "lead"])
@pytest.mark.parametrize("path", GET_PAGES)
def test_policy_pages_are_forbidden_to_agents_and_leads(client, login_as, configured, role, path):
    login_as(role)
    assert client.get(path.format(policy_id=policy_named("Standard").id)).status_code == 403


@pytest.mark.parametrize("path", GET_PAGES)
def test_policy_pages_open_for_admins(client, admin, configured, path):
    assert client.get(path.format(policy_id=policy_named("Standard").id)).status_code == 200


@pytest.mark.parametrize("role", ["agent", "lead"])
def test_agents_and_leads_cannot_change_policies_or_calendars(login_as, post, configured, role):
    login_as(role)
    before = stored_policies()
    standard = policy_named("Standard").id
    attempts = [
        ("/admin/triage/policies/new", policy_form()),
        (f"/admin/triage/policies/{standard}", policy_form(name="Standard", is_default="y")),
        (f"/admin/triage/policies/{policy_named('Premium').id}/delete", {}),
        ("/admin/triage/policies/import", {"file": upload('{"policies": []}', "p.json")}),
        (f"/admin/triage/policies/{standard}/calendar", {"file": upload(json.dumps(ALWAYS_OPEN), "c.json")}),
    ]
    for path, data in attempts:
        assert post(path, **data).status_code == 403, path
    assert stored_policies() == before


def test_the_list_shows_targets_calendar_and_escalation(client, admin, configured):
    html = client.get("/admin/triage/policies").get_data(as_text=True)
    assert "Standard</a>\n        <span class=\"badge\">default</span>" in html
    assert "normal: 240 / 480 / 2880" in html and "high: 60 / - / -" in html
    assert "Stockholm office (Europe/Stockholm)" in html and "holidays of SE" in html
    assert "Around the clock (UTC), always open" in html
    assert "tier unchanged, raise priority</td>" in html
    assert "move to second line, raise priority, notify leads and assignee" in html


def test_the_first_policy_an_admin_adds_becomes_the_default(client, admin, post):
    response = post("/admin/triage/policies/new", **policy_form())
    assert response.status_code == 302, response.get_data(as_text=True)
    row = policy_named("Gold")
    assert (row.is_default, row.warn_at_percent, row.targets, row.escalation) == (
        True,
        80,
        {"high": {"first_response": 60, "resolution": 480}, "urgent": {"first_response": 30, "next_response": 45}},
        {"tier": "second_line", "raise_priority": True, "notify": True},
    )
    assert row.calendar == OFFICE
    assert "Gold is the default policy, as the only one." in client.get("/admin/triage/policies").get_data(
        as_text=True
    )
    ticket = ingest(make_inbound()).ticket
    assert ticket.sla_policy_name == "Gold"


def test_marking_a_policy_default_takes_the_mark_from_the_old_one(admin, post, configured):
    response = post("/admin/triage/policies/new", **policy_form(is_default="y"))
    assert response.status_code == 302
    db.session.expire_all()
    assert (policy_named("Gold").is_default, policy_named("Standard").is_default) == (True, False)
    assert ingest(make_inbound()).ticket.sla_policy_name == "Gold"


def test_the_default_policy_cannot_simply_stop_being_the_default(admin, post, configured):
    before = stored_policies()
    standard = policy_named("Standard")
    response = post(f"/admin/triage/policies/{standard.id}", **policy_form(name="Standard"))
    assert response.status_code == 400
    assert "default: this is the default policy; mark another policy as the default instead" in response.get_data(
        as_text=True
    )
    assert stored_policies() == before


def test_the_edit_page_shows_the_stored_policy(client, admin, configured):
    html = client.get(f"/admin/triage/policies/{policy_named('Premium').id}").get_data(as_text=True)
    assert re.search(r'<input[^>]*name="target_high_first_response"[^>]*value="60"', html)
    assert re.search(r'<input[^>]*name="warn_at_percent"[^>]*value="80"', html)
    assert re.search(r'<input[^>]*name="target_normal_first_response"[^>]*value=""', html)
    assert '<option selected value="">leave the ticket&#39;s tier alone</option>' in html
    assert 'id="escalation_raise_priority" name="escalation_raise_priority" type="checkbox" value="y"' in html
    assert '<input id="escalation_notify" name="escalation_notify" type="checkbox" value="y">' in html
    assert str(escape(json.dumps({"name": "Around the clock", "timezone": "UTC", "always_open": True,
                                  "holidays": None, "closed_dates": [], "open_dates": {}}, indent=2))) in html


def test_an_admin_edits_targets_escalation_and_calendar(admin, post, configured):
    premium = policy_named("Premium")
    response = post(
        f"/admin/triage/policies/{premium.id}",
        **policy_form(name="Premium", escalation_tier="", escalation_notify=None, calendar=json.dumps(ALWAYS_OPEN)),
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    db.session.expire_all()
    assert premium.escalation == {"tier": None, "raise_priority": True, "notify": False}
    assert premium.targets["urgent"] == {"first_response": 30, "next_response": 45}
    assert premium.calendar["always_open"] is True and premium.is_default is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"calendar": '{"name": "x",'}, "calendar: not valid JSON"),
        (
            {"calendar": json.dumps({**OFFICE, "hours": {"mon": [["09:00", "25:00"]]}})},
            "calendar.hours.mon[0]: end &#39;25:00&#39; is not a time of day",
        ),
        ({"calendar": json.dumps({**ALWAYS_OPEN, "timezone": "Mars/Olympus"})}, "calendar.timezone: unknown time zone"),
        (
            {"calendar": json.dumps({**OFFICE, "hours": {"sat": []}, "open_dates": {}})},
            "calendar.hours: the calendar is never open",
        ),
        ({"calendar": json.dumps({**OFFICE, "colour": "red"})}, "calendar.colour: unknown field"),
        ({"calendar": ""}, "This field is required."),
        ({"name": "premium"}, "name: &#39;premium&#39; is already the name of another SLA policy"),
        ({"target_high_first_response": "0"}, "Number must be between 1 and 10000000."),
        ({"target_high_first_response": "soon"}, "Not a valid integer value."),
        ({"warn_at_percent": "101"}, "Number must be between 1 and 100."),
        ({"escalation_tier": "first_line"}, "Not a valid choice."),
    ],
)
def test_a_malformed_policy_is_refused_with_the_field_named_and_the_text_kept(
    admin, post, configured, overrides, message
):
    before = stored_policies()
    form = policy_form(**overrides)
    response = post("/admin/triage/policies/new", **form)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in html
    assert str(escape(form["calendar"])) in html
    assert stored_policies() == before


def test_a_renamed_policy_keeps_its_rules_and_tickets(admin, post, configured):
    ticket = ingest(make_inbound()).ticket
    standard = policy_named("Standard")
    response = post(
        f"/admin/triage/policies/{standard.id}",
        **policy_form(name="Business hours", is_default="y", calendar=json.dumps(OFFICE)),
    )
    assert response.status_code == 302
    import_rules("rules: [{name: To premium, actions: {sla_policy: Premium}}]")
    premium = policy_named("Premium")
    assert post(f"/admin/triage/policies/{premium.id}", **policy_form(name="Platinum")).status_code == 302
    db.session.expire_all()
    assert db.session.scalar(sa.select(TriageRule.actions)) == {"sla_policy": "Platinum"}
    assert ticket.sla_policy_name == "Business hours"
    assert ingest(make_inbound()).ticket.sla_policy_name == "Platinum"


def test_a_policy_a_rule_names_or_the_default_cannot_be_deleted(client, admin, post, configured):
    before = stored_policies()
    premium = policy_named("Premium")
    response = post(f"/admin/triage/policies/{premium.id}/delete")
    assert response.status_code == 302
    assert "triage rule &#39;VIPs&#39; names this policy" in client.get(response.headers["Location"]).get_data(
        as_text=True
    )
    response = post(f"/admin/triage/policies/{policy_named('Standard').id}/delete")
    assert "mark another policy as the default first" in client.get(response.headers["Location"]).get_data(
        as_text=True
    )
    assert stored_policies() == before


def test_a_policy_nothing_needs_is_deleted(client, admin, post, configured):
    import_rules("rules: []")
    response = post(f"/admin/triage/policies/{policy_named('Premium').id}/delete")
    assert response.headers["Location"] == "/admin/triage/policies"
    assert policy_named("Premium") is None and policy_named("Standard") is not None
    response = post(f"/admin/triage/policies/{policy_named('Standard').id}/delete")
    assert policy_named("Standard") is None


# --- calendars ---


def test_the_calendar_download_is_the_file_sla_due_reads(client, admin, runner, tmp_path, configured):
    response = client.get(f"/admin/triage/policies/{policy_named('Standard').id}/calendar.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == 'attachment; filename="Stockholm_office.json"'
    assert json.loads(response.get_data(as_text=True)) == OFFICE
    path = tmp_path / "calendar.json"
    path.write_bytes(response.get_data())
    # Monday 2026-03-02 11:30 in Stockholm: half an hour before lunch, then the afternoon shift.
    due = runner.invoke(args=["helpdesk", "sla-due", "--calendar", str(path), "--start", "2026-03-02T11:30",
                              "--minutes", "60"])
    assert due.exit_code == 0, due.output
    assert due.output.strip() == "2026-03-02T13:30:00+01:00"


def test_an_uploaded_calendar_replaces_the_policys_calendar(client, admin, post, configured):
    standard = policy_named("Standard")
    new_calendar = {**ALWAYS_OPEN, "name": "Support desk", "closed_dates": ["2026-12-25"]}
    response = post(f"/admin/triage/policies/{standard.id}/calendar",
                    file=upload(json.dumps(new_calendar), "desk.json"))
    assert response.status_code == 302, response.get_data(as_text=True)
    db.session.expire_all()
    assert standard.calendar == {**new_calendar, "holidays": None, "open_dates": {}}
    assert (standard.targets, standard.is_default) == (POLICIES["policies"][0]["targets"], True)
    download = client.get(f"/admin/triage/policies/{standard.id}/calendar.json")
    assert json.loads(download.get_data(as_text=True)) == standard.calendar


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"name": "x",', "desk.json: not valid JSON"),
        (b"\xff\xfe", "desk.json: the file is not UTF-8 text"),
        (json.dumps({**OFFICE, "hours": {"mon": [["09:00", "25:00"]]}}), "desk.json: hours.mon[0]: end"),
        (json.dumps({**OFFICE, "holidays": {"country": "XX"}}), "desk.json: holidays.country"),
        (json.dumps({**OFFICE, "hours": {}, "open_dates": {}}), "desk.json: hours: the calendar is never open"),
        (json.dumps([OFFICE]), "desk.json: a calendar must be a JSON object"),
    ],
)
def test_a_malformed_calendar_file_is_refused_and_the_calendar_stays(admin, post, configured, content, message):
    before = stored_policies()
    standard = policy_named("Standard")
    response = post(f"/admin/triage/policies/{standard.id}/calendar", file=upload(content, "desk.json"))
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in html, html[-3000:]
    assert 'id="policy-form"' in html and "Stockholm office" in html
    assert stored_policies() == before


# --- whole files ---


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_policies_export_is_what_the_cli_writes_and_import_keeps_every_field(
    client, admin, post, runner, configured, fmt
):
    response = client.get(f"/admin/triage/policies/export?format={fmt}")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == f'attachment; filename="sla-policies.{fmt}"'
    exported = response.get_data(as_text=True)
    cli = runner.invoke(args=["helpdesk", "sla-policy-export", "--format", fmt])
    assert cli.exit_code == 0 and cli.output == exported
    premium = next(policy for policy in parse_policies(exported, filename=f"p.{fmt}") if policy.name == "Premium")
    assert premium.escalation.to_dict() == {"tier": None, "raise_priority": True, "notify": False}

    before = stored_policies()
    import_rules("rules: []")
    import_policies('{"policies": [{"name": "Other", "default": true, "calendar": {"name": "A", "timezone": "UTC",'
                    ' "always_open": true}}]}', filename="p.json")
    response = post("/admin/triage/policies/import", file=upload(exported, f"policies.{fmt}"))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert stored_policies() == before


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        (
            json.dumps({"policies": [{**POLICIES["policies"][0], "escalation": {"tier": "first_line"}}]}),
            "p.json",
            "p.json: policies[0].escalation.tier: must be second_line, or null",
        ),
        (
            json.dumps({"policies": [POLICIES["policies"][0]]}),
            "p.json",
            "triage rule &#39;VIPs&#39; names the SLA policy &#39;Premium&#39;, which this file leaves out",
        ),
        ("policies:\n  - {name: A, calendar: {name: B, timezone: UTC, always_open: yes}}\n", "p.yaml",
         "p.yaml: policies[0].calendar.always_open: must be true or false"),
        ("policies: [", "p.yaml", "p.yaml: not valid YAML"),
    ],
)
def test_a_malformed_policies_file_is_refused_whole_and_nothing_changes(
    admin, post, configured, content, filename, message
):
    before = stored_policies()
    response = post("/admin/triage/policies/import", file=upload(content, filename))
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert stored_policies() == before


# --- the sweep follows what admins set ---


def test_the_sweep_escalates_as_the_admin_set_the_policy(admin, post):
    form = policy_form(
        name="Calm",
        calendar=json.dumps(ALWAYS_OPEN),
        escalation_tier="",
        escalation_raise_priority=None,
        escalation_notify=None,
        target_normal_first_response="60",
    )
    assert post("/admin/triage/policies/new", **form).status_code == 302
    calm = ingest(make_inbound()).ticket
    form.update(name="Loud", is_default="y", escalation_tier="second_line", escalation_raise_priority="y")
    assert post("/admin/triage/policies/new", **form).status_code == 302
    loud = ingest(make_inbound()).ticket
    assert (calm.sla_policy_name, loud.sla_policy_name) == ("Calm", "Loud")

    sweep_sla(now=utcnow() + dt.timedelta(hours=2))
    db.session.expire_all()
    assert (calm.tier.value, calm.priority.value) == ("first_line", "normal")
    assert (loud.tier.value, loud.priority.value) == ("second_line", "high")
    escalated = db.session.scalars(
        sa.select(TicketEvent.ticket_id).where(TicketEvent.kind == "sla.escalated").order_by(TicketEvent.ticket_id)
    ).all()
    assert escalated == sorted([calm.id, loud.id])
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Ticket)) == 2
