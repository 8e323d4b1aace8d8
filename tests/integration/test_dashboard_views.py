"""The dashboard's page and JSON: leads and admins only, the same figures in both, bad filters named."""

from __future__ import annotations

import datetime as dt

import pytest

from helpdesk.agents import get_or_create_group
from helpdesk.extensions import db
from helpdesk.models import Customer, TicketStatus, Tier
from helpdesk.models.base import utcnow
from helpdesk.tickets import open_ticket
from tests.factories import make_agent

pytestmark = pytest.mark.integration

PATHS = ["/dashboard", "/dashboard/data"]


def ticket_due_in(minutes: int, subject: str = "Help", **fields):
    customer = Customer(name="Cus Tomer")
    db.session.add(customer)
    ticket = open_ticket(customer, "email", subject, reason="test")
    ticket.status = TicketStatus.OPEN
    ticket.first_response_due_at = utcnow() + dt.timedelta(minutes=minutes)
    for name, value in fields.items():
        setattr(ticket, name, value)
    db.session.commit()
    return ticket


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("role", "status"), [("agent", 403), ("lead", 200), ("admin", 200)])
def test_only_leads_and_admins_see_the_dashboard(client, login_as, path, role, status):
    login_as(role)
    assert client.get(path).status_code == status


@pytest.mark.parametrize("path", PATHS)
def test_anonymous_visitors_are_sent_to_the_login_page(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_an_agent_asking_for_json_gets_a_json_403(client, login_as):
    login_as("agent")
    response = client.get("/dashboard/data", headers={"Accept": "application/json"})
    assert response.status_code == 403 and response.get_json()["error"] == "forbidden"


def test_the_nav_links_to_the_dashboard_for_leads_only(client, login_as, auth):
    login_as("agent")
    assert 'href="/dashboard"' not in client.get("/inbox").get_data(as_text=True)
    auth.logout()
    login_as("lead")
    assert 'href="/dashboard"' in client.get("/inbox").get_data(as_text=True)


def test_the_json_has_every_figure_in_a_stable_shape(client, login_as):
    sam = make_agent(name="Sam Second", tier=Tier.SECOND_LINE)
    db.session.commit()
    soon = ticket_due_in(30, "Printer on fire", assignee=sam, tier=Tier.SECOND_LINE)
    login_as("lead")
    response = client.get("/dashboard/data?window=7d")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    data = response.get_json()
    assert data["window"]["key"] == "7d" and data["window"]["label"] == "Last 7 days"
    assert set(data["compliance"]) == {"first_response", "resolution"}
    assert set(data["compliance"]["first_response"]) == {"label", "met", "breached", "rate"}
    [row] = data["at_risk"]["tickets"]
    assert (row["number"], row["subject"], row["assignee"], row["tier"], row["target"]) == (
        soon.number, "Printer on fire", "Sam Second", "second_line", "first_response")
    assert 29 * 60 <= row["seconds_left"] <= 30 * 60
    assert data["at_risk"]["total"] == 1 and data["breached"] == {"total": 0, "tickets": []}
    assert [b["tier"] for b in data["backlog"]] == ["first_line", "second_line"]
    assert data["backlog"][1]["open"] == 1 and data["backlog"][1]["total"] == 1
    assert set(data["response_times"]["first_response"]) == {"label", "count", "median_seconds", "p90_seconds"}
    names = [agent["name"] for agent in data["agents"]]
    assert "Sam Second" in names
    assert set(data["agents"][0]) == {"id", "name", "role", "tier", "is_online", "open_tickets", "capacity"}
    assert [r["reason"] for r in data["escalations"]["by_agents"]] == [
        "technical", "billing_dispute", "bug", "customer_request", "other"]
    assert data["labels"]["reasons"]["billing_dispute"] == "Billing dispute"


def test_filters_narrow_the_figures(client, login_as):
    billing = get_or_create_group("Billing")
    db.session.commit()
    ticket_due_in(20, "In billing", group=billing)
    ticket_due_in(25, "Elsewhere")
    login_as("lead")
    everything = client.get("/dashboard/data").get_json()
    assert everything["at_risk"]["total"] == 2
    in_billing = client.get(f"/dashboard/data?group={billing.id}&tier=first_line").get_json()
    assert [row["subject"] for row in in_billing["at_risk"]["tickets"]] == ["In billing"]
    assert in_billing["scope"] == {"tier": "first_line", "group_id": billing.id, "group": "Billing"}
    assert [row["tier"] for row in in_billing["backlog"]] == ["first_line"]
    stockholm = client.get("/dashboard/data?tz=Europe/Stockholm").get_json()
    assert stockholm["window"]["timezone"] == "Europe/Stockholm"
    assert stockholm["window"]["start"] != everything["window"]["start"]


@pytest.mark.parametrize(("query", "message"), [
    ("window=forever", "Unknown window 'forever'"),
    ("tier=third_line", "Unknown tier 'third_line'"),
    ("group=abc", "The group must be a group's number"),
    ("group=987654", "There is no group 987654"),
    ("group=99999999999999999999", "There is no group 99999999999999999999"),
    ("tz=../../etc/passwd", "Unknown time zone '../../etc/passwd'"),
    ("tz=Mars/Olympus", "Unknown time zone 'Mars/Olympus'"),
])
@pytest.mark.parametrize("path", PATHS)
def test_bad_filters_are_refused_with_400_naming_the_problem(client, login_as, path, query, message):
    login_as("lead")
    response = client.get(f"{path}?{query}", headers={"Accept": "application/json"})
    assert response.status_code == 400
    assert message in response.get_json()["message"]


def test_the_page_renders_the_figures_and_shows_customer_text_as_text(client, login_as):
    ticket_due_in(15, '<img src=x onerror="window.pwned=1">Refund')
    ticket_due_in(-90, "Overdue order", first_response_due_at=utcnow() - dt.timedelta(minutes=90))
    login_as("admin")
    page = client.get("/dashboard").get_data(as_text=True)
    assert "SLA dashboard" in page
    assert "&lt;img src=x onerror=&#34;window.pwned=1&#34;&gt;Refund" in page
    assert '<img src=x' not in page
    assert "Overdue order" in page and "1 h 30 min" in page
    assert 'data-source="/dashboard/data?window=today"' in page
    assert "dashboard.js" in page and "vendor/socket.io.min.js" in page


def test_the_page_keeps_its_filters_for_the_live_updates(client, login_as):
    login_as("lead")
    page = client.get("/dashboard?window=30d&tier=second_line&tz=Europe/Stockholm&extra=1").get_data(as_text=True)
    assert 'data-source="/dashboard/data?window=30d&amp;tier=second_line&amp;tz=Europe/Stockholm"' in page
    assert '<option value="30d" selected>' in page
