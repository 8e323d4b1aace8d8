"""Talking to the visitors' `/chat` Socket.IO namespace through the test client, as the widget does."""

from __future__ import annotations

from channels.chat.namespace import CHAT_NAMESPACE
from helpdesk.chat import forget_cached_chat_settings
from helpdesk.extensions import socketio
from tests.conftest import clear_g

#: The shop that embeds the widget in these tests.
SHOP = "https://shop.example.com"


def configure_chat(app, monkeypatch, allowed_origins: str = SHOP) -> None:
    """Let `allowed_origins` embed the widget, with fresh rate limits and no chat settings cached."""
    monkeypatch.setitem(app.config, "HELPDESK_CHAT_ALLOWED_ORIGINS", allowed_origins)
    socketio.server.namespace_handlers[CHAT_NAMESPACE].reset_limits()
    forget_cached_chat_settings()


def open_chat(app, origin: str | None = SHOP, **auth):
    """A visitor's connection to the chat namespace from a page on `origin` (no Origin header when None)."""
    clear_g()
    headers = {"Origin": origin} if origin else {}
    return socketio.test_client(app, namespace=CHAT_NAMESPACE, headers=headers, auth=auth or None)


def received(connection, name: str | None = None, namespace: str = CHAT_NAMESPACE) -> list:
    """The events `connection` got since last asked, as (name, payload) pairs, only those called `name` if given."""
    packets = connection.get_received(namespace)
    return [(p["name"], p["args"][0]) for p in packets if name is None or p["name"] == name]


def session_of(connection) -> dict:
    """The one `session` event the namespace sent on connect."""
    [(_, session)] = received(connection, "session")
    return session


def ask(connection, event: str, data: dict | None = None):
    """Emit `event` on the chat namespace and return the server's acknowledgement."""
    clear_g()
    return connection.emit(event, data if data is not None else {}, namespace=CHAT_NAMESPACE, callback=True)


def say(connection, text: str, client_id: str = "c-1"):
    """Send a chat message as the widget does; returns the acknowledgement."""
    return ask(connection, "message", {"client_id": client_id, "text": text})
