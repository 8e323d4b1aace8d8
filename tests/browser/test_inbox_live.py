"""The agents' inbox in a real browser: tickets arriving without a reload, and messages shown as text."""

import sqlalchemy as sa

from helpdesk.extensions import db
from helpdesk.models import Message
from tests.conftest import TEST_PASSWORD
from tests.factories import make_agent


def log_in(page, base_url, email):
    page.goto(f"{base_url}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/inbox")


def test_a_message_from_the_simulator_shows_up_in_another_agents_open_inbox(browser, live_server, screenshot):
    make_agent(email="watcher@example.com")
    make_agent(email="writer@example.com")
    db.session.commit()
    watcher = browser.new_context(viewport={"width": 1280, "height": 800})
    writer = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        inbox = watcher.new_page()
        log_in(inbox, live_server, "watcher@example.com")
        assert inbox.locator("#live-notice").is_hidden()
        # Give the inbox's socket a moment to connect before anything happens.
        inbox.wait_for_function("() => window.performance.now() > 1000")

        simulator = writer.new_page()
        log_in(simulator, live_server, "writer@example.com")
        simulator.goto(f"{live_server}/simulator")
        simulator.select_option("select[name=channel]", "sms")
        simulator.fill("input[name=sender]", "+46 70 765 43 21")
        simulator.fill("textarea[name=text]", "Hi! My <script>window.pwned = 1</script> card was charged twice.")
        simulator.click("main button[type=submit]")
        simulator.wait_for_url("**/tickets/*")

        inbox.wait_for_selector("#live-notice:not([hidden])", timeout=15000)
        screenshot(inbox, "inbox-notice")
        inbox.click("#live-notice a")
        inbox.wait_for_selector("text=card was charged twice")
        screenshot(inbox, "inbox-reloaded")

        # The payload is text on the ticket page, never markup that runs.
        body = simulator.locator("article.message .body").first
        assert "<script>window.pwned = 1</script>" in body.inner_text()
        assert simulator.evaluate("window.pwned") is None
        screenshot(simulator, "ticket")
    finally:
        watcher.close()
        writer.close()
    stored = db.session.scalar(sa.select(Message.text).where(Message.address == "+46707654321"))
    assert stored == "Hi! My <script>window.pwned = 1</script> card was charged twice."
