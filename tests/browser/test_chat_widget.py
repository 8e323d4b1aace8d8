"""The chat widget on another site, in a real browser: the visitor writes, agents answer from the live inbox.

The host page is served from another origin than the helpdesk (another loopback port), with hostile styles.
"""

import re

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from channels.messages import ChannelName
from helpdesk.extensions import db
from helpdesk.models import Direction, Message, Ticket
from tests.browser.conftest import DELIVERY_TIMEOUT, WIDGET, acknowledged, log_in, open_widget, write
from tests.factories import make_agent


def widget_messages(page, kind: str = "") -> list[str]:
    return page.locator(f"{WIDGET} .log li{'.' + kind if kind else ''}").all_inner_texts()


def stored_texts(direction: Direction | None = None) -> list[str]:
    db.session.rollback()  # a fresh read of what the served app committed
    query = sa.select(Message.text).where(Message.channel == ChannelName.CHAT).order_by(Message.id)
    if direction is not None:
        query = query.where(Message.direction == direction)
    return list(db.session.scalars(query))


def chat_ticket_number() -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(Ticket.number).where(Ticket.channel == ChannelName.CHAT))


@pytest.fixture
def agent_page(browser, chat_server):
    """A signed-in agent's page on the helpdesk, in a browser context of their own."""
    make_agent(email="ada@example.com", name="Ada Agent")
    db.session.commit()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    log_in(page, chat_server, "ada@example.com")
    yield page
    context.close()


def wait_until_live(page) -> None:
    page.wait_for_selector("body[data-live=connected]")
    page.evaluate("window.stayedOnPage = true")


def test_a_visitors_message_reaches_the_live_inbox_and_the_agents_reply_reaches_the_widget(
    agent_page, visitor, host_page, chat_server, screenshot
):
    wait_until_live(agent_page)
    site = visitor.new_page()
    open_widget(site, host_page())
    write(site, "Hello! Where is my order 1234?")
    expect(acknowledged(site, "Where is my order 1234?")).to_have_count(1, timeout=DELIVERY_TIMEOUT)

    # The agent's open inbox shows the chat without a reload.
    row = agent_page.locator("#inbox tr[data-ticket]").filter(has_text="Where is my order 1234?")
    expect(row).to_have_count(1, timeout=DELIVERY_TIMEOUT)
    expect(row).to_contain_text("chat")
    assert agent_page.evaluate("window.stayedOnPage") is True
    screenshot(agent_page, "agent-inbox")

    # On the open ticket page the visitor's next message appears without a reload too.
    row.locator("a").first.click()
    agent_page.wait_for_url("**/tickets/*")
    wait_until_live(agent_page)
    write(site, "It was due yesterday.")
    expect(agent_page.locator("#messages article.inbound .body").last).to_have_text(
        "It was due yesterday.", timeout=DELIVERY_TIMEOUT)
    assert agent_page.evaluate("window.stayedOnPage") is True

    # The agent answers from the composer; the visitor sees it in the widget.
    agent_page.fill("form.reply textarea", "Sorry about that! It ships today.")
    agent_page.click("form.reply button[type=submit]")
    expect(site.locator(f"{WIDGET} .log li.agent")).to_have_text(
        ["Sorry about that! It ships today."], timeout=DELIVERY_TIMEOUT)
    screenshot(site, "widget-conversation")
    screenshot(agent_page, "agent-ticket")

    # A returning visitor (the host page reloaded) sees the whole conversation again, once.
    site.reload()
    site.click(f"{WIDGET} .launcher")
    expect(site.locator(f"{WIDGET} .log li")).to_have_text(
        ["Hello! Where is my order 1234?", "It was due yesterday.", "Sorry about that! It ships today."],
        timeout=DELIVERY_TIMEOUT)
    expect(site.locator(f"{WIDGET} .log li.agent")).to_have_count(1)
    assert stored_texts() == [
        "Hello! Where is my order 1234?", "It was due yesterday.", "Sorry about that! It ships today."]


def test_a_dropped_network_loses_no_message_and_duplicates_none(visitor, host_page, screenshot):
    site = visitor.new_page()
    open_widget(site, host_page())
    write(site, "Before the drop")
    expect(acknowledged(site, "Before the drop")).to_have_count(1, timeout=DELIVERY_TIMEOUT)

    # One message is in flight as the network goes, one is written while it is gone.
    write(site, "In flight when the network dropped")
    visitor.set_offline(True)
    expect(site.locator(f"{WIDGET} .status")).not_to_be_empty(timeout=DELIVERY_TIMEOUT)
    write(site, "Written while offline")
    expect(site.locator(f"{WIDGET} .log li.visitor.pending").filter(has_text="Written while offline")).to_have_count(1)
    screenshot(site, "widget-offline")

    visitor.set_offline(False)
    expect(site.locator(f"{WIDGET} .log li.visitor.pending")).to_have_count(0, timeout=30_000)
    sent = ["Before the drop", "In flight when the network dropped", "Written while offline"]
    assert widget_messages(site, "visitor") == sent
    assert stored_texts(Direction.INBOUND) == sent

    # Nothing is sent again after a reload, and the history holds each message once.
    site.reload()
    site.click(f"{WIDGET} .launcher")
    expect(site.locator(f"{WIDGET} .log li.visitor")).to_have_text(sent, timeout=DELIVERY_TIMEOUT)
    assert stored_texts(Direction.INBOUND) == sent


def test_a_message_stored_but_never_acknowledged_is_sent_again_and_stored_once(visitor, host_page):
    """The connection dies after the server stored a message and before its acknowledgement arrived."""
    seen = {"upgraded": False, "held": False, "dropped": None}

    def relay(page_side):
        server_side = page_side.connect_to_server()

        def to_server(frame):
            if frame == "5":  # Engine.IO's upgrade: from here on every packet goes through this WebSocket
                seen["upgraded"] = True
            if isinstance(frame, str) and frame.startswith("42") and "never acknowledged" in frame:
                seen["held"] = True
            server_side.send(frame)

        def to_page(frame):
            # Socket.IO acknowledgements are "43..."; the first one after the marked message is lost, with the link.
            if seen["held"] and seen["dropped"] is None and isinstance(frame, str) and frame.startswith("43"):
                seen["dropped"] = frame
                page_side.close()
                server_side.close()
                return
            page_side.send(frame)

        page_side.on_message(to_server)
        server_side.on_message(to_page)

    site = visitor.new_page()
    site.route_web_socket(re.compile(r"/socket\.io/"), relay)
    open_widget(site, host_page())
    write(site, "First, to be sure the link is up")
    expect(acknowledged(site, "First, to be sure")).to_have_count(1, timeout=DELIVERY_TIMEOUT)
    assert seen["upgraded"], "the widget's Socket.IO connection never moved to the WebSocket"

    write(site, "This one is never acknowledged the first time")
    expect(acknowledged(site, "never acknowledged")).to_have_count(1, timeout=30_000)
    assert seen["dropped"] is not None, "the acknowledgement was not intercepted"
    assert widget_messages(site, "visitor") == [
        "First, to be sure the link is up", "This one is never acknowledged the first time"]
    assert stored_texts(Direction.INBOUND) == [
        "First, to be sure the link is up", "This one is never acknowledged the first time"]


def test_markup_in_a_message_is_text_on_both_sides_and_never_runs(agent_page, visitor, host_page, chat_server):
    attack = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> is my order'
    site = visitor.new_page()
    open_widget(site, host_page())
    write(site, attack)
    expect(acknowledged(site, "is my order")).to_have_count(1, timeout=DELIVERY_TIMEOUT)
    mine = acknowledged(site, "is my order")
    expect(mine).to_have_text(attack)
    assert mine.evaluate("li => li.children.length") == 0

    agent_page.goto(f"{chat_server}/tickets/{chat_ticket_number()}")
    wait_until_live(agent_page)
    expect(agent_page.locator("#messages article.inbound .body")).to_have_text(attack)
    agent_page.goto(f"{chat_server}/inbox")
    expect(agent_page.locator("#inbox .last-message")).to_contain_text(attack)
    assert agent_page.evaluate("window.pwned") is None

    answer = '<b onmouseover="window.pwned=3">Bold?</b><img src=y onerror="window.pwned=4">'
    agent_page.goto(f"{chat_server}/tickets/{chat_ticket_number()}")
    agent_page.fill("form.reply textarea", answer)
    agent_page.click("form.reply button[type=submit]")
    reply = site.locator(f"{WIDGET} .log li.agent")
    expect(reply).to_have_text(answer, timeout=DELIVERY_TIMEOUT)
    assert reply.evaluate("li => li.children.length") == 0
    assert site.evaluate("window.pwned") is None
    assert agent_page.evaluate("window.pwned") is None
    assert stored_texts() == [attack, answer]


def test_the_host_pages_styles_do_not_reach_the_widget_and_the_widgets_do_not_leak_out(
    visitor, host_page, screenshot
):
    site = visitor.new_page()
    site.goto(host_page(body='<button id="host-button" type="button">Buy socks</button>'))
    launcher = site.locator(f"{WIDGET} .launcher")
    expect(launcher).to_be_visible()
    box = launcher.bounding_box()
    viewport = site.viewport_size
    # Sized and placed by the widget (bottom right, readable), not by the page's 3-pixel buttons.
    assert box["width"] >= 60 and 30 <= box["height"] <= 80, box
    assert box["x"] + box["width"] > viewport["width"] - 80 and box["y"] + box["height"] > viewport["height"] - 80
    style = launcher.evaluate(
        "b => { const s = getComputedStyle(b); return [s.fontSize, s.fontStyle, s.textTransform, s.letterSpacing,"
        " s.backgroundColor, s.borderStyle]; }")
    assert style[:4] == ["14px", "normal", "none", "normal"]
    assert style[4] != "rgb(255, 255, 0)" and style[5] != "dashed"

    launcher.click()
    window = site.locator(f"{WIDGET} .window")
    expect(window).to_have_class(re.compile(r"\bopen\b"))
    expect(window.locator("form textarea")).to_be_visible()
    assert window.bounding_box()["width"] >= 240
    assert window.locator("form textarea").bounding_box()["height"] >= 30
    screenshot(site, "widget-hostile-page")

    # The page keeps its own look: the widget's styles stay inside its shadow root.
    host_button = site.locator("#host-button").evaluate(
        "b => { const s = getComputedStyle(b); return [s.backgroundColor, s.borderStyle, s.width]; }")
    assert host_button == ["rgb(255, 255, 0)", "dashed", "3px"]
    assert site.locator("h1").evaluate("h => getComputedStyle(h).textTransform") == "uppercase"
