"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from channels.chat.namespace import CHAT_NAMESPACE
from tests.fakes.dovecot import running_dovecot
from tests.integration.chat_client import SHOP, open_chat


@pytest.fixture
def visit(app):
    """Open chat connections as visitors (from the shop's pages unless `origin` says otherwise); close them after."""
    opened = []

    def visit(origin=SHOP, **auth):
        connection = open_chat(app, origin, **auth)
        opened.append(connection)
        return connection

    yield visit
    for connection in opened:
        if connection.is_connected(CHAT_NAMESPACE):
            connection.disconnect(namespace=CHAT_NAMESPACE)


@pytest.fixture
def forget_kept_twilio_accounts(app):
    """Each process keeps the saved Twilio accounts a few seconds; a test starts and ends with none kept."""
    app.extensions.pop("helpdesk.twilio_accounts", None)
    yield
    app.extensions.pop("helpdesk.twilio_accounts", None)


@pytest.fixture(scope="module")
def dovecot_server():
    """A Dovecot of the module's own (tests/fakes/dovecot.py)."""
    with running_dovecot() as server:
        yield server


@pytest.fixture
def mailbox(dovecot_server):
    """A fresh, empty mailbox on the module's Dovecot (started again if a test left it stopped)."""
    if not dovecot_server.is_running:
        dovecot_server.start()
    return dovecot_server.new_account()
