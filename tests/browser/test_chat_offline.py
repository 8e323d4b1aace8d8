"""The chat widget in a real browser, on another origin: leaving a message when no agent is online (it becomes
an email ticket answered by email), and a file the visitor sends showing on both sides."""

import email
import email.policy
import re
import struct
import time
import zlib

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from channels.messages import ChannelName
from helpdesk.extensions import db
from helpdesk.models import Attachment, Direction, Message, Ticket
from tests.browser.conftest import (
    DELIVERY_TIMEOUT,
    WIDGET,
    AgentOverHttp,
    acknowledged,
    log_in,
    open_widget,
    write,
)
from tests.factories import make_agent


def tiny_png(width: int = 24, height: int = 16) -> bytes:
    """A real (decodable) PNG: a red and blue stripe pattern."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"".join(b"\xd0\x20\x20" if (x // 4) % 2 else b"\x20\x40\xd0" for x in range(width))
                    for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def fresh(query):
    db.session.rollback()  # read what the served app committed
    return db.session.scalars(query)


def wait_for(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("the condition did not come true in time")


@pytest.fixture
def agent_context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context
    context.close()


def test_with_no_agent_online_a_left_message_becomes_an_email_ticket_answered_by_email(
    visitor, agent_context, host_page, chat_server, tmp_path, screenshot
):
    make_agent(email="ada@example.com", name="Ada Agent")
    db.session.commit()
    site = visitor.new_page()
    open_widget(site, host_page())

    # Nobody has the helpdesk open: the widget says so and asks where to answer.
    offline = site.locator(f"{WIDGET} .offline")
    expect(offline).to_be_visible(timeout=DELIVERY_TIMEOUT)
    expect(offline).to_contain_text("No one is online right now")
    offline.locator("input[name=name]").fill("Maria Lopez")
    offline.locator("input[name=email]").fill("maria@example.org")
    write(site, "Please call me back about order 1234 <b>today</b>")
    expect(acknowledged(site, "order 1234")).to_have_count(1, timeout=DELIVERY_TIMEOUT)
    expect(acknowledged(site, "order 1234")).to_have_text("Please call me back about order 1234 <b>today</b>")
    expect(site.locator(f"{WIDGET} .offline-done")).to_contain_text("maria@example.org")
    screenshot(site, "widget-message-left")

    # The host page reloaded: the message left is still there, once, marked as answered by email.
    site.reload()
    site.click(f"{WIDGET} .launcher")
    left_again = acknowledged(site, "order 1234")
    expect(left_again).to_have_count(1, timeout=DELIVERY_TIMEOUT)
    expect(left_again).to_have_text("Please call me back about order 1234 <b>today</b>")
    expect(left_again).to_have_class(re.compile(r"\bby-email\b"))
    expect(left_again).to_have_attribute("data-email", "maria@example.org")
    screenshot(site, "widget-message-left-after-reload")

    [ticket] = fresh(sa.select(Ticket)).all()
    assert ticket.channel == ChannelName.EMAIL
    assert ticket.customer.name == "Maria Lopez"
    left = fresh(sa.select(Message).where(Message.direction == Direction.INBOUND)).one()
    assert (left.channel, left.address) == (ChannelName.EMAIL, "maria@example.org")
    assert left.text == "Please call me back about order 1234 <b>today</b>"

    # The agent answers from the ticket page; the answer goes out as an email, not into the widget.
    page = agent_context.new_page()
    log_in(page, chat_server, "ada@example.com")
    page.goto(f"{chat_server}/tickets/{ticket.number}")
    expect(page.locator("#messages article.inbound .body")).to_have_text(
        "Please call me back about order 1234 <b>today</b>")
    page.fill("form.reply textarea", "We will call you at noon.")
    page.click("form.reply button[type=submit]")
    answer = wait_for(lambda: fresh(sa.select(Message).where(
        Message.text == "We will call you at noon.", Message.delivery_status == "sent")).first())
    assert (answer.channel, answer.address) == (ChannelName.EMAIL, "maria@example.org")
    safe = "".join(c if c.isalnum() else "_" for c in answer.external_id.strip("<>"))[:80]
    mail = email.message_from_bytes((tmp_path / "instance" / "outgoing" / f"{safe}.eml").read_bytes(),
                                    policy=email.policy.default)
    assert mail["To"] == "maria@example.org" and f"[#{ticket.number}]" in mail["Subject"]
    assert left.external_id in mail["References"]
    screenshot(page, "agent-email-ticket")
    expect(site.locator(f"{WIDGET} .log li.agent")).to_have_count(0)


def test_a_file_the_visitor_sends_shows_in_the_widget_and_on_the_agents_ticket_page(
    visitor, agent_context, host_page, chat_server, screenshot
):
    make_agent(email="ada@example.com", name="Ada Agent")
    db.session.commit()
    page = agent_context.new_page()
    log_in(page, chat_server, "ada@example.com")
    page.wait_for_selector("body[data-live=connected]")

    site = visitor.new_page()
    open_widget(site, host_page())
    write(site, "The lid arrived scratched, photo follows")
    expect(acknowledged(site, "photo follows")).to_have_count(1, timeout=DELIVERY_TIMEOUT)
    file_input = site.locator(f"{WIDGET} .composer input[type=file]")

    # Refused in the widget before anything is sent: the visitor reads why.
    file_input.set_input_files(files=[{"name": "setup.exe", "mimeType": "application/octet-stream",
                                       "buffer": b"MZ" + b"\x00" * 64}])
    expect(site.locator(f"{WIDGET} .status")).to_contain_text("cannot be sent")
    file_input.set_input_files(files=[{"name": "huge.png", "mimeType": "image/png",
                                       "buffer": b"\x89PNG\r\n\x1a\n" + b"\x00" * (11 * 1024 * 1024)}])
    expect(site.locator(f"{WIDGET} .status")).to_contain_text("too large")

    file_input.set_input_files(files=[{"name": "scratch.png", "mimeType": "image/png", "buffer": tiny_png()}])
    image = site.locator(f"{WIDGET} .log li.visitor:not(.pending) img.attachment")
    expect(image).to_have_count(1, timeout=DELIVERY_TIMEOUT)
    site.wait_for_function(
        "() => { const i = document.querySelector('[data-helpdesk-chat]').shadowRoot"
        ".querySelector('img.attachment'); return i && i.complete && i.naturalWidth === 24; }")
    screenshot(site, "widget-upload")

    [row] = fresh(sa.select(Attachment)).all()
    assert (row.filename, row.content_type) == ("scratch.png", "image/png")
    assert row.message.ticket.channel == ChannelName.CHAT

    # The agent sees it on the ticket, and the page's image loads from the agents' file route.
    page.goto(f"{chat_server}/tickets/{row.message.ticket.number}")
    thumb = page.locator(f"#message-{row.message_id} img.chat-thumb")
    expect(thumb).to_have_count(1, timeout=DELIVERY_TIMEOUT)
    page.wait_for_function(
        f"() => {{ const i = document.querySelector('#message-{row.message_id} img.chat-thumb');"
        " return i && i.complete && i.naturalWidth === 24; }")
    screenshot(page, "agent-ticket-upload")

    # The visitor is told the agent saw the messages.
    expect(site.locator(f"{WIDGET} .log li.visitor.read")).to_have_count(2, timeout=DELIVERY_TIMEOUT)

    # The agent typing shows in the widget; the reply, once the visitor has it in front, shows as seen.
    page.fill("form.reply textarea", "Thanks, a new lid is on its way.")
    expect(site.locator(f"{WIDGET} .typing")).to_have_text("Ada Agent is typing\u2026", timeout=DELIVERY_TIMEOUT)
    page.click("form.reply button[type=submit]")
    expect(site.locator(f"{WIDGET} .log li.agent")).to_have_text(["Thanks, a new lid is on its way."],
                                                                 timeout=DELIVERY_TIMEOUT)
    expect(site.locator(f"{WIDGET} .typing")).to_be_hidden()
    expect(page.locator("#messages article.outbound .chat-seen")).to_have_text(
        "Seen by the visitor", timeout=DELIVERY_TIMEOUT)
    screenshot(page, "agent-ticket-seen")

    # Another browser (another visitor) cannot fetch the file.
    other = AgentOverHttp(chat_server, "ada@example.com")
    assert other.session.get(f"{chat_server}/chat/attachments/{row.id}", timeout=10).status_code == 404


def test_admin_settings_shape_the_widget_and_an_ended_chat_is_mailed_as_a_transcript(
    visitor, agent_context, host_page, chat_server, tmp_path, screenshot
):
    make_agent(email="root@example.com", name="Root Admin", role="admin")
    db.session.commit()
    admin = AgentOverHttp(chat_server, "root@example.com")
    admin.post_form("/admin/chat", allowed_origins="", primary_color="#0A7D32", greeting="Welcome to Acme!",
                    ask_name="y", ask_email="y", offline_message="Nobody here right now.")
    page = agent_context.new_page()
    log_in(page, chat_server, "root@example.com")
    page.goto(f"{chat_server}/admin/chat")
    expect(page.locator("#embed-snippet")).to_have_text(f'<script src="{chat_server}/widget.js" async></script>')
    expect(page.locator("textarea[name=greeting]")).to_have_value("Welcome to Acme!")
    screenshot(page, "admin-chat-settings")
    page.goto(f"{chat_server}/inbox")
    page.wait_for_selector("body[data-live=connected]")

    site = visitor.new_page()
    open_widget(site, host_page())
    widget = site.locator(WIDGET)
    expect(widget.locator(".greeting")).to_have_text("Welcome to Acme!", timeout=DELIVERY_TIMEOUT)
    assert widget.locator(".launcher").evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(10, 125, 50)"
    # The pre-chat form comes first; the message box waits for it.
    expect(widget.locator(".prechat")).to_be_visible()
    expect(widget.locator(".window form textarea")).to_be_hidden()
    widget.locator(".prechat input[name=email]").fill("not an address")
    widget.locator(".prechat input[name=name]").fill("Vera Visitor")
    widget.locator(".prechat button").click()
    expect(widget.locator(".prechat-error")).to_contain_text("valid email address")
    widget.locator(".prechat input[name=email]").fill("vera@example.com")
    widget.locator(".prechat button").click()
    expect(widget.locator(".window form textarea")).to_be_visible()
    screenshot(site, "widget-settings-applied")

    write(site, "Do you ship to Iceland?")
    expect(acknowledged(site, "Iceland")).to_have_count(1, timeout=DELIVERY_TIMEOUT)
    [ticket] = fresh(sa.select(Ticket)).all()
    assert ticket.channel == ChannelName.CHAT and ticket.customer.name == "Vera Visitor"

    widget.locator(".end").click()
    expect(widget.locator(".ended")).to_be_visible(timeout=DELIVERY_TIMEOUT)
    expect(widget.locator(".transcript-email")).to_have_value("vera@example.com")
    widget.locator(".transcript").click()
    expect(widget.locator(".transcript-status")).to_have_text(
        "The transcript is on its way to vera@example.com.", timeout=DELIVERY_TIMEOUT)
    screenshot(site, "widget-transcript")
    transcript = wait_for(lambda: fresh(sa.select(Message).where(
        Message.subject == "Transcript of your chat", Message.delivery_status == "sent")).first())
    safe = "".join(c if c.isalnum() else "_" for c in transcript.external_id.strip("<>"))[:80]
    mail = email.message_from_bytes((tmp_path / "instance" / "outgoing" / f"{safe}.eml").read_bytes(),
                                    policy=email.policy.default)
    assert mail["To"] == "vera@example.com"
    assert "You:\n  Do you ship to Iceland?" in mail.get_content()
