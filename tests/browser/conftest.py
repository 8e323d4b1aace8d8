"""A real Chromium (Debian's) driven by Playwright, against the app served on a loopback port."""

from __future__ import annotations

import contextlib
import html
import http.server
import itertools
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading

import pytest

from tests.conftest import TEST_PASSWORD
from tests.servers import REPO_ROOT, free_port, login_session, running_server, stop_process

CHROMIUM = os.environ.get("HELPDESK_CHROMIUM", "/usr/bin/chromium")
# Headless flags for this environment: no sandbox as root, and no background calls to the outside network.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: How long `expect(...)` waits for a condition: live updates cross the server (and Redis) on a machine that may
#: be busy; a condition that holds returns at once, so only a failing test waits this long.
EXPECT_TIMEOUT_MS = 15_000
#: Every test signs its agents in from 127.0.0.1, and with REDIS_URL the login limiter's counts live in Redis,
#: shared by all the servers of the run: the production limit would refuse the run's later sign-ins.
TEST_LOGIN_RATE_LIMIT = "1000 per minute"
#: Screenshots of each browser test are kept here as artifacts of the run.
ARTIFACTS = REPO_ROOT / "test-artifacts"


def log_in(page, base_url: str, email: str, password: str = TEST_PASSWORD) -> None:
    """Sign in through the login form and wait for the inbox."""
    page.goto(f"{base_url}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")
    page.wait_for_url("**/inbox")


class AgentOverHttp:
    """An agent acting on the served app with plain HTTP requests (faster than a second browser)."""

    def __init__(self, base_url: str, email: str, password: str = TEST_PASSWORD):
        self.base_url = base_url
        self.session = login_session(base_url, email, password)

    def post_form(self, path: str, **data) -> str:
        """Post a form like the browser does (CSRF token included); return where it redirected to."""
        page = self.session.get(f"{self.base_url}/profile", timeout=10).text
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        response = self.session.post(f"{self.base_url}{path}", data={**data, "csrf_token": token},
                                     allow_redirects=False, timeout=15)
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    def simulate(self, channel: str, sender: str, text: str, **extra) -> int:
        """Write as a customer through the channel simulator; return the ticket number."""
        location = self.post_form("/simulator", channel=channel, sender=sender, text=text, **extra)
        return int(re.search(r"/tickets/(\d+)", location).group(1))


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser():
    if not (pathlib.Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (Debian package: chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def served_app_env(app, app_config, tmp_path: pathlib.Path, base_url: str, **extra: str) -> dict[str, str]:
    """The environment of an app served at `base_url` on the test database and its files, with `extra` settings."""
    return {
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "SECRET_KEY": app_config["SECRET_KEY"],
        "HELPDESK_INSTANCE_PATH": str(tmp_path / "instance"),
        # The test's own files (stored by ingest in this process) are the served app's too.
        "HELPDESK_ATTACHMENT_FOLDER": app.config["HELPDESK_ATTACHMENT_FOLDER"],
        "HELPDESK_PUBLIC_URL": base_url,
        "HELPDESK_LOGIN_RATE_LIMIT": TEST_LOGIN_RATE_LIMIT,
        **extra,
    }


@contextlib.contextmanager
def serving(app, app_config, tmp_path: pathlib.Path, **extra: str):
    """Serve the app by `helpdesk serve` on its own port, sharing the test database, with `extra` settings."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = served_app_env(app, app_config, tmp_path, base_url, **extra)
    # With REDIS_URL in the environment (the CI's strict pass) the server's events go through Redis.
    with running_server(env, port, "--without-jobs", log_path=tmp_path / "server.log"):
        yield base_url


@pytest.fixture
def live_server(app, app_config, tmp_path):
    """The app served by `helpdesk serve` on its own port, sharing the test database."""
    with serving(app, app_config, tmp_path) as base_url:
        yield base_url


#: The host page's own styles, as hostile as a careless site's: they would wreck the widget if they reached it.
HOSTILE_CSS = """
html, body { font: italic 40px/3 "Comic Sans MS", cursive; color: #f0f; letter-spacing: 6px;
             text-transform: uppercase; text-align: right; visibility: visible; }
* { box-sizing: content-box !important; margin: 17px !important; }
button { width: 3px !important; height: 3px !important; padding: 0 !important; border: 9px dashed red !important;
         background: yellow !important; font-size: 2px !important; position: static !important; }
textarea, form, ul, li { display: none !important; }
"""


class HostSite:
    """A plain website on its own loopback port (so another origin than the helpdesk) that embeds the widget."""

    def __init__(self):
        self.pages: dict[str, bytes] = {}
        self._numbers = itertools.count(1)
        self.widget_base = ""
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = pages.get(self.path.split("?", 1)[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body or b"not found")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __call__(self, css: str = HOSTILE_CSS, body: str = "", **attributes: str) -> str:
        """Publish a page embedding the widget and return its URL.

        `body` is more HTML for the page; keyword arguments become attributes of the script tag:
        `data_user_id="a@b.c"` -> `data-user-id="a@b.c"`.
        """
        extra = "".join(
            f' {html.escape(name.replace("_", "-"))}="{html.escape(str(value))}"' for name, value in attributes.items()
        )
        path = f"/page-{next(self._numbers)}.html"
        self.pages[path] = (
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>Acme shop</title>"
            f"<style>{css}</style></head><body><h1>Acme shop</h1><p>Socks, and a lot of them.</p>{body}"
            f'<script src="{html.escape(self.widget_base)}/widget.js" async{extra}></script>'
            "</body></html>"
        ).encode()
        return f"{self.origin}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def host_site():
    """The host website's server, shared by the run; `host_page` publishes pages on it."""
    site = HostSite()
    yield site
    site.close()


@pytest.fixture
def chat_server(app, app_config, tmp_path, host_site):
    """Like `live_server`, with the host page's origin allowed to embed the chat; yields the helpdesk's URL."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = served_app_env(app, app_config, tmp_path, base_url, HELPDESK_CHAT_ALLOWED_ORIGINS=host_site.origin)
    # With Redis, replies are delivered by Celery (as in a deployment), so a worker runs beside the server.
    worker = outbox_worker(env, tmp_path / "worker.log") if os.environ.get("REDIS_URL") else contextlib.nullcontext()
    with running_server(env, port, "--without-jobs", log_path=tmp_path / "server.log"), worker:
        yield base_url


# --- the chat widget, as a visitor uses it ---

#: The widget's root element on the host page.
WIDGET = "[data-helpdesk-chat]"
#: Delivery to and from the widget crosses the server (and, with Redis, a worker): allow for a slow machine.
DELIVERY_TIMEOUT = 20_000


@pytest.fixture
def visitor(browser):
    """The visitor's browser context (its own storage: its own visitor token)."""
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    yield context
    context.close()


def open_widget(page, url: str) -> None:
    """Open the host page at `url` and the chat window on it."""
    from playwright.sync_api import expect

    page.goto(url)
    page.click(f"{WIDGET} .launcher")
    expect(page.locator(f"{WIDGET} .window")).to_have_class(re.compile(r"\bopen\b"))


def write(page, text: str) -> None:
    """Type a message in the widget and send it with Enter, as a visitor does."""
    page.fill(f"{WIDGET} .window form textarea", text)
    page.press(f"{WIDGET} .window form textarea", "Enter")


def acknowledged(page, text: str):
    """The visitor's message showing `text`, once the server has acknowledged it."""
    return page.locator(f"{WIDGET} .log li.visitor:not(.pending)").filter(has_text=text)


@contextlib.contextmanager
def outbox_worker(env: dict[str, str], log_path: pathlib.Path):
    """Run a Celery worker for the served app's jobs (replies to the visitor go out through it)."""
    command = [sys.executable, "-m", "celery", "-A", "wsgi:celery_app", "worker", "--pool=solo", "--concurrency=1",
               "--loglevel=INFO", "--without-heartbeat", "--without-gossip", "--without-mingle"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        stop_process(process)


@pytest.fixture
def host_page(host_site, chat_server):
    """Return a callable publishing a host page (another origin) that embeds `chat_server`'s widget.

    `host_page()` gives the page's URL; `host_page(data_user_id=..., data_user_hash=...)` adds script attributes,
    `host_page(css=..., body=...)` replaces the page's hostile styles and adds HTML to it.
    `host_page.origin` is the host site's origin.
    """
    host_site.widget_base = chat_server
    return host_site


@pytest.fixture
def screenshot(request):
    """Save a screenshot of `page` under test-artifacts/, named after the test."""
    ARTIFACTS.mkdir(exist_ok=True)

    def take(page, label: str) -> pathlib.Path:
        path = ARTIFACTS / f"{request.node.name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
