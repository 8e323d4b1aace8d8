"""Files and formatted mail on the ticket page in a real browser: an agent sends files, opens the customer's,
and reads an HTML email with its inline images (and no remote ones)."""

import email.message
import http.server
import struct
import threading
import zlib

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from channels.messages import Attachment, IdentityKind, SenderIdentity
from helpdesk.email_intake import take_in_email
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Direction, Message
from tests.browser.conftest import log_in, serving
from tests.factories import make_agent, make_inbound


def png(width: int, height: int) -> bytes:
    """A valid grey PNG image of the given size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


#: A file may have this many bytes on the server these tests run.
FILE_LIMIT = 100_000


@pytest.fixture
def live_server(app, app_config, tmp_path):
    with serving(app, app_config, tmp_path, HELPDESK_MAX_ATTACHMENT_BYTES=str(FILE_LIMIT)) as base_url:
        yield base_url


@pytest.fixture
def page(browser, live_server):
    make_agent(email="wendy@example.com", name="Wendy Watcher")
    db.session.commit()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        log_in(page, live_server, "wendy@example.com")
        yield page
    finally:
        context.close()


def test_an_agent_sends_files_with_a_reply_and_opens_the_customers_screenshot(page, live_server, screenshot):
    maria = SenderIdentity(IdentityKind.EMAIL, "maria@example.org", "Maria Lopez")
    screenshot_of_error = png(40, 30)
    ticket = ingest(make_inbound(sender=maria, subject="The checkout fails", attachments=(
        Attachment("error.png", "image/png", screenshot_of_error),))).ticket.number

    page.goto(f"{live_server}/tickets/{ticket}")
    # The customer's screenshot opens in the browser, as an image.
    link = page.locator("#messages article.inbound .attachments a", has_text="error.png")
    image = page.context.request.get(live_server + link.get_attribute("href"))
    assert image.body() == screenshot_of_error and image.headers["content-type"] == "image/png"

    page.fill("form.reply textarea", "Here is the corrected invoice.")
    page.set_input_files("form.reply input[type=file]", files=[
        {"name": "Rechnung März.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 corrected"},
        {"name": "steps.png", "mimeType": "image/png", "buffer": png(8, 8)},
    ])
    page.click("form.reply button[type=submit]")

    sent = page.locator("#messages article.outbound").last
    expect(sent.locator(".body")).to_have_text("Here is the corrected invoice.")
    expect(sent.locator(".attachments a")).to_have_text(["Rechnung März.pdf", "steps.png"])
    pdf = page.context.request.get(live_server + sent.locator(".attachments a").first.get_attribute("href"))
    assert pdf.body() == b"%PDF-1.4 corrected" and pdf.headers["content-disposition"].startswith("attachment")
    screenshot(page, "reply-with-files")

    db.session.rollback()  # a new snapshot, which holds what the server committed
    reply = db.session.scalars(sa.select(Message).where(Message.direction == Direction.OUTBOUND)).one()
    assert [row.filename for row in reply.attachments] == ["Rechnung März.pdf", "steps.png"]


def test_a_file_over_the_limit_is_refused_before_the_upload_and_the_text_stays(page, live_server, screenshot):
    ticket = ingest(make_inbound(subject="Logs please")).ticket.number
    page.goto(f"{live_server}/tickets/{ticket}")
    page.fill("form.reply textarea", "Here is the whole log.")
    page.set_input_files("form.reply input[type=file]", files=[
        {"name": "server.log", "mimeType": "text/plain", "buffer": b"x" * (FILE_LIMIT + 1)}])

    expect(page.locator("#files-refused")).to_have_text(
        f"server.log is {FILE_LIMIT + 1} bytes, over the {FILE_LIMIT} bytes limit for a file.")
    page.evaluate("window.stayedOnPage = true")
    page.click("form.reply button[type=submit]")
    expect(page.locator("#files-refused")).to_contain_text("over the")
    expect(page.locator("form.reply textarea")).to_have_value("Here is the whole log.")
    assert page.evaluate("window.stayedOnPage") is True  # nothing was sent
    screenshot(page, "file-refused")

    # A smaller file goes.
    page.set_input_files("form.reply input[type=file]", files=[
        {"name": "server.log", "mimeType": "text/plain", "buffer": b"x" * 1000}])
    expect(page.locator("#files-refused")).to_have_text("")
    page.click("form.reply button[type=submit]")
    expect(page.locator("#messages article.outbound .attachments a")).to_have_text(["server.log"])


def html_email_with_inline_image(image: bytes, remote_pixel: str) -> bytes:
    mail = email.message.EmailMessage()
    mail["From"] = "Maria Lopez <maria@example.org>"
    mail["To"] = "support@example.com"
    mail["Subject"] = "The checkout page is blank"
    mail["Message-ID"] = "<formatted-1@example.org>"
    mail.set_content("See the screenshot.")
    mail.add_alternative(
        '<p>See the <b>screenshot</b>:</p><img src="cid:shot.1@example.org" alt="screenshot">'
        f'<img src="{remote_pixel}" alt="pixel"><script>parent.document.title = "pwned"</script>',
        subtype="html")
    mail.get_payload()[1].add_related(image, maintype="image", subtype="png", cid="<shot.1@example.org>")
    return bytes(mail)


class CountingSite:
    """A web server elsewhere (another port) that counts what it is asked for: the sender's tracking pixel."""

    def __init__(self):
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                self.wfile.write(png(1, 1))

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_formatted_email_shows_its_inline_screenshot_and_never_fetches_a_remote_image(
        page, live_server, screenshot):
    elsewhere = CountingSite()
    try:
        ticket = take_in_email(html_email_with_inline_image(png(60, 40), f"{elsewhere.url}/pixel.png"),
                               "test").result.ticket.number
        page.goto(f"{live_server}/tickets/{ticket}")
        article = page.locator("#messages article.inbound").first
        expect(article.locator(".body")).to_have_text("See the screenshot.")
        article.locator("details.formatted summary").click()

        frame = article.frame_locator("iframe.formatted-body")
        expect(frame.locator("b")).to_have_text("screenshot")
        inline = frame.locator('img[alt="screenshot"]')
        expect(inline).to_have_js_property("complete", True)
        assert inline.evaluate("image => image.naturalWidth") == 60
        remote = frame.locator('img[alt="pixel"]')
        expect(remote).to_have_js_property("complete", True)
        assert remote.evaluate("image => image.naturalWidth") == 0
        assert article.locator("iframe.formatted-body").evaluate("frame => frame.offsetHeight") > 40
        screenshot(page, "formatted")
        assert elsewhere.hits == [] and page.title() != "pwned"
    finally:
        elsewhere.close()
