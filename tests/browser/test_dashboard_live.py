"""The leads' SLA dashboard in a real browser: an escalation by another agent shows up without a reload."""

from __future__ import annotations

import datetime as dt
import re

from helpdesk.extensions import db
from helpdesk.models import Customer, TicketStatus, Tier
from helpdesk.models.base import utcnow
from helpdesk.tickets import open_ticket
from tests.conftest import TEST_PASSWORD
from tests.factories import make_agent
from tests.servers import login_session

SUBJECT = 'Refund <img src=x onerror="window.pwned=1"> please'


def open_dashboard(page, base_url: str, email: str) -> None:
    page.goto(f"{base_url}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/inbox")
    page.click("header nav a:text-is('Dashboard')")
    page.wait_for_url("**/dashboard")


def escalate_over_http(base_url: str, email: str, number: int, reason_code: str) -> None:
    """Escalate as another agent would from the ticket page: a form post with its CSRF token."""
    session = login_session(base_url, email, TEST_PASSWORD)
    page = session.get(f"{base_url}/tickets/{number}", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = session.post(f"{base_url}/tickets/{number}/escalate",
                            data={"reason_code": reason_code, "note": "crashes on export", "csrf_token": token},
                            allow_redirects=False, timeout=15)
    assert response.status_code == 302, response.text


def cell_text(page, selector: str) -> str:
    return page.locator(selector).inner_text().strip()


def test_a_leads_open_dashboard_follows_an_escalation_without_a_reload(browser, live_server, screenshot):
    make_agent(email="lead@example.com", name="Lee Lead", role="lead", tier=Tier.SECOND_LINE)
    agent = make_agent(email="agent@example.com", name="Sam Agent")
    customer = Customer(name="Cus Tomer")
    db.session.add(customer)
    ticket = open_ticket(customer, "email", SUBJECT, reason="test")
    ticket.status = TicketStatus.OPEN
    ticket.assignee = agent
    ticket.first_response_due_at = utcnow() + dt.timedelta(minutes=25)
    db.session.commit()
    number = ticket.number

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        open_dashboard(page, live_server, "lead@example.com")
        row = f'#at-risk tr[data-ticket="{number}"]'
        bug_count = '#escalations-agents tr[data-reason="bug"] td:nth-child(2)'
        assert cell_text(page, f"{row} td:nth-child(6)") == "First line"
        assert cell_text(page, bug_count) == "0"
        assert cell_text(page, '#backlog tr[data-tier="second_line"] td:nth-child(6)') == "0"
        page.wait_for_selector('#dash-live[data-state="connected"]', timeout=15000)
        assert cell_text(page, "#dash-live-label") == "Live"
        # Anything set on the window survives only if the page is not reloaded.
        page.evaluate("window.stillTheSamePage = true")

        escalate_over_http(live_server, "agent@example.com", number, "bug")

        page.wait_for_function(f"document.querySelector('{bug_count}').textContent === '1'", timeout=15000)
        assert cell_text(page, f"{row} td:nth-child(6)") == "Second line"
        assert cell_text(page, '#backlog tr[data-tier="second_line"] td:nth-child(6)') == "1"
        assert cell_text(page, "#escalations-total") == "1"
        assert page.evaluate("window.stillTheSamePage") is True
        # The subject came back in the JSON and was written as text, never as markup.
        assert cell_text(page, f"{row} td:nth-child(2)") == SUBJECT
        assert page.evaluate("window.pwned") is None
        assert page.locator("#dash-error").is_hidden()
        path = screenshot(page, "dashboard")
        assert path.exists() and path.stat().st_size > 0
    finally:
        context.close()
