"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from channels.chat.namespace import CHAT_NAMESPACE
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
