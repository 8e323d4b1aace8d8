"""Shared fixtures: one app per run on a real database (SQLite file or PostgreSQL), emptied after each test."""

from __future__ import annotations

import os
import pathlib

import pytest
import sqlalchemy as sa
from flask import g, request_started

from helpdesk import create_app
from helpdesk.extensions import db, limiter
from tests.factories import make_agent

STRICT = os.environ.get("HELPDESK_STRICT_TESTS") == "1"
#: Markers whose tests must run in the strict (CI) pass: skipping them there is a failure.
MUST_RUN_MARKERS = ("integration", "browser", "postgres", "redis")
TEST_PASSWORD = "correct horse battery"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under HELPDESK_STRICT_TESTS=1 a skipped integration or browser test fails the run."""
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and any(item.get_closest_marker(name) for name in MUST_RUN_MARKERS):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under HELPDESK_STRICT_TESTS=1, which forbids it: {reason}"


def is_postgres() -> bool:
    return (os.environ.get("DATABASE_URL") or "").startswith(("postgres://", "postgresql"))


def _empty_postgres(url: str) -> None:
    from helpdesk.config import _normalize_database_url

    engine = sa.create_engine(_normalize_database_url(url))
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """A fresh, empty database for this run: PostgreSQL from DATABASE_URL, else an SQLite file."""
    url = os.environ.get("DATABASE_URL")
    if url and is_postgres():
        _empty_postgres(url)
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'helpdesk-test.sqlite3'}"


@pytest.fixture(scope="session")
def app_config(database_url, tmp_path_factory) -> dict:
    instance = tmp_path_factory.mktemp("instance")
    return {
        "TESTING": True,
        "INSTANCE_PATH": str(instance),
        "SECRET_KEY": "test-secret-key-not-for-production",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "HELPDESK_JOBS_MODE": "inline",
        # The test app keeps realtime events in-process so the Socket.IO test client sees them at once;
        # tests of the Redis fan-out and of Celery start their own processes with REDIS_URL.
        "REDIS_URL": None,
        "HELPDESK_OUTGOING_FOLDER": str(instance / "outgoing"),
        "HELPDESK_ATTACHMENT_FOLDER": str(instance / "attachments"),
        "RATELIMIT_STORAGE_URI": "memory://",
        "HELPDESK_PUBLIC_URL": "http://localhost",
    }


@pytest.fixture(scope="session")
def app(app_config):
    """The app, with the schema built by the real migrations."""
    from flask_migrate import upgrade

    from helpdesk.config import _normalize_database_url

    app_config = {**app_config, "SQLALCHEMY_DATABASE_URI": _normalize_database_url(app_config["SQLALCHEMY_DATABASE_URI"])}
    application = create_app(app_config)
    with application.app_context():
        upgrade()
    yield application
    with application.app_context():
        db.engine.dispose()


def _empty_tables() -> None:
    tables = [table for table in reversed(db.metadata.sorted_tables)]
    if db.engine.dialect.name == "postgresql":
        names = ", ".join(f'"{table.name}"' for table in tables)
        db.session.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    else:
        for table in tables:
            db.session.execute(table.delete())
    db.session.execute(sa.text("INSERT INTO ticket_counter (id, next_number) VALUES (1, 1001)"))
    db.session.commit()


def clear_g(*args, **extra) -> None:
    """Empty `g`, as a fresh request in production would find it."""
    for name in list(g):
        g.pop(name)


@pytest.fixture(autouse=True)
def _app_context(request, app):
    """Give every test an app context and an empty database afterwards.

    Requests made during a test share the test's app context, so each starts with `g` emptied:
    otherwise Flask-Login's cached user and Flask-WTF's cached CSRF token would carry over from one
    request, or one client, to the next.
    """
    if "no_app" in request.fixturenames:
        yield
        return
    with app.app_context():
        limiter.reset()
        request_started.connect(clear_g, app)
        try:
            yield
        finally:
            request_started.disconnect(clear_g, app)
            db.session.rollback()
            _empty_tables()
            db.session.remove()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class AuthActions:
    """Log in and out through the real login form."""

    def __init__(self, client):
        self.client = client

    def login(self, email: str, password: str = TEST_PASSWORD):
        page = self.client.get("/login")
        token = _csrf_from(page.get_data(as_text=True))
        return self.client.post("/login", data={"email": email, "password": password, "csrf_token": token})

    def logout(self):
        token = self.csrf_token("/profile")
        return self.client.post("/logout", data={"csrf_token": token})

    def csrf_token(self, path: str = "/inbox") -> str:
        return _csrf_from(self.client.get(path).get_data(as_text=True))


def _csrf_from(html: str) -> str:
    import re

    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def post(client, auth):
    """POST a form to `path` with a valid CSRF token, as the browser would."""

    def post(path, **data):
        return client.post(path, data={**data, "csrf_token": auth.csrf_token("/profile")})

    return post


@pytest.fixture
def login_as(auth):
    """Create an agent with `role` and log them in; returns the agent."""

    def login(role: str = "agent", **overrides):
        agent = make_agent(role=role, password=TEST_PASSWORD, **overrides)
        db.session.commit()
        response = auth.login(agent.email)
        assert response.status_code == 302, response.get_data(as_text=True)
        return agent

    return login


@pytest.fixture
def admin(login_as):
    """An admin, logged in."""
    return login_as("admin", email="boss@example.com", name="Boss")


@pytest.fixture
def repo_root() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parent.parent
