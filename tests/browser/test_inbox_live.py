"""The agents' live inbox and ticket page in a real browser: changes arrive without a reload, as text."""

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from channels.messages import ChannelName, IdentityKind, SenderIdentity
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Message
from tests.browser.conftest import AgentOverHttp, log_in
from tests.factories import make_agent, make_inbound

SCRIPT_TEXT = "Hi! My <script>window.pwned = 1</script> card was charged twice."


@pytest.fixture
def agents(browser, live_server):
    """Two signed-in agents: Wendy in a browser, Rob over HTTP; yields (Wendy's context, Rob)."""
    make_agent(email="wendy@example.com", name="Wendy Watcher")
    make_agent(email="rob@example.com", name="Rob Writer")
    db.session.commit()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context, AgentOverHttp(live_server, "rob@example.com")
    finally:
        context.close()


def open_live(page, url):
    """Open an agents' page and wait until its realtime connection is up."""
    page.goto(url)
    page.wait_for_selector("body[data-live=connected]")
    # A marker that a reload or navigation would wipe out: the checks below prove the page stayed put.
    page.evaluate("window.stayedOnPage = true")


def assert_not_reloaded(page):
    assert page.evaluate("window.stayedOnPage") is True


def test_a_message_from_the_simulator_appears_as_a_row_in_another_agents_open_inbox(
    agents, live_server, screenshot
):
    context, rob = agents
    inbox = context.new_page()
    log_in(inbox, live_server, "wendy@example.com")
    open_live(inbox, f"{live_server}/inbox")
    expect(inbox.locator("#inbox tr.empty")).to_be_visible()

    number = rob.simulate("sms", "+46 70 765 43 21", SCRIPT_TEXT)

    row = inbox.locator(f'#inbox tr[data-ticket="{number}"]')
    expect(row.locator(".last-message")).to_contain_text("card was charged twice", timeout=15000)
    assert "<script>window.pwned = 1</script>" in row.locator(".last-message").inner_text()
    assert inbox.evaluate("window.pwned") is None
    expect(inbox.locator("#inbox tr.empty")).to_be_hidden()
    expect(inbox.locator('.count[data-count="new"]')).to_have_text("1")
    assert inbox.locator("#live-notice").is_hidden()
    screenshot(inbox, "inbox-new-row")

    # Changed fields update the row in place.
    wendy_id = db.session.scalar(sa.text("SELECT id FROM agent WHERE email = 'wendy@example.com'"))
    rob.post_form(f"/tickets/{number}/update", priority="urgent", assignee_id=str(wendy_id))
    expect(row.locator(".priority")).to_have_text("urgent")
    expect(row.locator(".assignee")).to_have_text("Wendy Watcher")
    # So does the last message, and a ticket that moves up goes to the top.
    other = rob.simulate("email", "someone@example.org", "A second customer")
    expect(inbox.locator("#inbox tbody tr[data-ticket]").first).to_have_attribute("data-ticket", str(other))
    rob.simulate("sms", "+46707654321", "Any news about the refund?")
    expect(row.locator(".last-message")).to_contain_text("Any news about the refund?")
    expect(inbox.locator("#inbox tbody tr[data-ticket]").first).to_have_attribute("data-ticket", str(number))
    # A solved ticket leaves the active view; the counts follow.
    rob.post_form(f"/tickets/{number}/update", status="solved")
    expect(row).to_have_count(0)
    expect(inbox.locator('.count[data-count="solved"]')).to_have_text("1")
    assert_not_reloaded(inbox)
    screenshot(inbox, "inbox-updated")

    db.session.rollback()  # a fresh read: the served app wrote these
    stored = db.session.scalars(sa.select(Message.text).where(Message.address == "+46707654321")).all()
    assert stored == [SCRIPT_TEXT, "Any news about the refund?"]


def test_a_ticket_outside_the_chosen_view_is_left_out_until_it_matches(agents, live_server):
    context, rob = agents
    inbox = context.new_page()
    log_in(inbox, live_server, "wendy@example.com")
    open_live(inbox, f"{live_server}/inbox?view=pending")

    number = rob.simulate("sms", "+46701112233", "Not pending yet")
    # The counts show the event was handled; the new ticket is not pending, so no row.
    expect(inbox.locator('.count[data-count="new"]')).to_have_text("1")
    assert inbox.locator("#inbox tr[data-ticket]").count() == 0

    rob.post_form(f"/tickets/{number}/update", status="pending")
    expect(inbox.locator(f'#inbox tr[data-ticket="{number}"]')).to_be_visible()
    expect(inbox.locator('.count[data-count="pending"]')).to_have_text("1")
    assert_not_reloaded(inbox)


def test_after_a_reconnect_the_inbox_fetches_what_it_missed(agents, live_server):
    context, rob = agents
    inbox = context.new_page()
    log_in(inbox, live_server, "wendy@example.com")
    open_live(inbox, f"{live_server}/inbox")

    inbox.evaluate("helpdeskLive.socket.disconnect()")
    inbox.wait_for_selector("body[data-live=disconnected]")
    missed = rob.simulate("sms", "+46704445566", "Sent while the inbox was away")
    inbox.evaluate("helpdeskLive.socket.connect()")

    expect(inbox.locator(f'#inbox tr[data-ticket="{missed}"]')).to_contain_text("Sent while the inbox was away")
    assert_not_reloaded(inbox)


def test_the_ticket_page_shows_other_agents_their_replies_and_the_customers_history(
    browser, agents, live_server, screenshot
):
    context, rob = agents
    make_agent(email="vera@example.com", name="Vera Viewer")
    db.session.commit()
    maria_mail = SenderIdentity(IdentityKind.EMAIL, "maria@example.org", "Maria Lopez")
    maria_phone = SenderIdentity(IdentityKind.PHONE, "+46701234567")
    earlier = ingest(make_inbound(sender=maria_mail, subject="Invoice shows the wrong VAT")).ticket.number
    ticket = ingest(make_inbound(channel=ChannelName.SMS, sender=maria_phone, text="Parcel is late",
                                 other_identities=(maria_mail,))).ticket.number

    wendy = context.new_page()
    log_in(wendy, live_server, "wendy@example.com")
    open_live(wendy, f"{live_server}/tickets/{ticket}")
    # The customer's other conversations, on every channel, are one click away.
    others = wendy.locator("#other-conversations")
    expect(others.locator(f'a[href="/tickets/{earlier}"]')).to_contain_text("Invoice shows the wrong VAT")
    expect(others).to_contain_text("email")

    vera_context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        vera = vera_context.new_page()
        log_in(vera, live_server, "vera@example.com")
        open_live(vera, f"{live_server}/tickets/{ticket}")
        # Each sees the other on the ticket.
        expect(wendy.locator("#presence")).to_contain_text("Vera Viewer")
        expect(vera.locator("#presence")).to_contain_text("Wendy Watcher")

        composer = vera.locator("form.reply textarea")
        composer.fill("Let me check with the carrier")
        composer.press_sequentially(" <b>now</b>")
        expect(wendy.locator("#presence .viewer.replying")).to_have_text("Vera Viewer is replying…")
        screenshot(wendy, "ticket-presence")

        # Vera's internal note and the customer's new text appear on Wendy's page without a reload.
        vera.check("form.reply input[name=internal]")
        vera.click("form.reply button[type=submit]")
        note = wendy.locator("#messages article.internal")
        expect(note.locator(".body")).to_have_text("Let me check with the carrier <b>now</b>")
        expect(wendy.locator("#presence .viewer.replying")).to_have_count(0)
        rob.simulate("sms", "+46701234567", "Still nothing <img src=x onerror=window.pwned=1>")
        expect(wendy.locator("#messages article.inbound .body").last).to_have_text(
            "Still nothing <img src=x onerror=window.pwned=1>")
        assert wendy.evaluate("window.pwned") is None

        # Header and fields follow a change made elsewhere.
        rob.post_form(f"/tickets/{ticket}/update", priority="high", tier="second_line")
        expect(wendy.locator("#ticket-header .meta")).to_contain_text("high priority")
        expect(wendy.locator("aside select[name=priority]")).to_have_value("high")
        expect(wendy.locator("#tier-actions")).to_contain_text("Hand back to first line")
        expect(wendy.locator("#ticket-history")).to_contain_text("priority.changed")
        assert_not_reloaded(wendy)
        screenshot(wendy, "ticket-live")

        # What arrives while Wendy's connection is down is fetched when it comes back.
        wendy.evaluate("helpdeskLive.socket.disconnect()")
        wendy.wait_for_selector("body[data-live=disconnected]")
        rob.simulate("sms", "+46701234567", "Written while Wendy was away")
        wendy.evaluate("helpdeskLive.socket.connect()")
        expect(wendy.locator("#messages article.inbound .body").last).to_have_text("Written while Wendy was away")
        expect(wendy.locator("#presence")).to_contain_text("Vera Viewer")
        assert_not_reloaded(wendy)

        # Vera leaves; Wendy sees her go.
        vera.goto(f"{live_server}/inbox")
        expect(wendy.locator("#presence")).to_be_hidden()
    finally:
        vera_context.close()
