"""A real Chromium (Debian's) driven by Playwright, against the app served on a loopback port."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

from tests.servers import REPO_ROOT, free_port, running_server

CHROMIUM = os.environ.get("HELPDESK_CHROMIUM", "/usr/bin/chromium")
# Headless flags for this environment: no sandbox as root, and no background calls to the outside network.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: Screenshots of each browser test are kept here as artifacts of the run.
ARTIFACTS = REPO_ROOT / "test-artifacts"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser():
    if not (pathlib.Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (Debian package: chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def live_server(app, app_config, tmp_path):
    """The app served by `helpdesk serve` on its own port, sharing the test database."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "SECRET_KEY": app_config["SECRET_KEY"],
        "HELPDESK_INSTANCE_PATH": str(tmp_path / "instance"),
        "HELPDESK_PUBLIC_URL": base_url,
    }
    # With REDIS_URL in the environment (the CI's strict pass) the server's events go through Redis.
    with running_server(env, port, "--without-jobs", log_path=tmp_path / "server.log"):
        yield base_url


@pytest.fixture
def screenshot(request):
    """Save a screenshot of `page` under test-artifacts/, named after the test."""
    ARTIFACTS.mkdir(exist_ok=True)

    def take(page, label: str) -> pathlib.Path:
        path = ARTIFACTS / f"{request.node.name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
