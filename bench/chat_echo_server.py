"""The floor for bench/chat_load.py: a bare Flask-SocketIO server with the chat's shape and none of its work.

    .venv/bin/python -m gunicorn -w 1 --threads 600 --pythonpath bench 'chat_echo_server:create_echo_app()'

`/chat` acknowledges each visitor's message at once, with a made-up id, after broadcasting it as
"message.created" {message_id} to the room every `/agents` connection joins: the same order of emits as the
helpdesk's (agents first, then the acknowledgement), with no database, no login and no rate limit behind it.
Served with the same gunicorn settings and the same Socket.IO mode (threading, simple-websocket) as the app.
"""

from __future__ import annotations

import itertools
import os
import threading

from flask import Flask
from flask_socketio import Namespace, SocketIO, emit, join_room

AGENTS_ROOM = "agents"


class EchoChat(Namespace):
    """Visitors: acknowledge every message and tell the agents about it."""

    def __init__(self, namespace: str, socketio: SocketIO):
        super().__init__(namespace)
        self._socketio = socketio
        # Ids unique across the processes of one run (BENCH_ECHO_PROCESS numbers them from 0).
        self._ids = itertools.count(1 + int(os.environ.get("BENCH_ECHO_PROCESS", "0")) * 1_000_000_000)
        self._lock = threading.Lock()

    def on_connect(self, auth=None):
        emit("session", {"visitor_id": "echo", "token": "", "verified": False})

    def on_message(self, data=None):
        with self._lock:
            message_id = next(self._ids)
        client_id = data.get("client_id") if isinstance(data, dict) else None
        self._socketio.emit("message.created", {"message_id": message_id, "channel": "chat"},
                            namespace="/agents", to=AGENTS_ROOM)
        return {"ok": True, "client_id": client_id, "id": message_id, "seq": message_id}


class EchoAgents(Namespace):
    """Agents: anyone may connect, and joins the room every message is broadcast to."""

    def on_connect(self, auth=None):
        join_room(AGENTS_ROOM)


def create_echo_app() -> Flask:
    """Build the echo app; BENCH_ECHO_ORIGINS (comma-separated) lists the origins it admits.

    BENCH_ECHO_MESSAGE_QUEUE (a Redis URL) and BENCH_ECHO_PROCESS (0, 1, ...) run it as several processes.
    """
    app = Flask(__name__)
    origins = [item.strip() for item in os.environ.get("BENCH_ECHO_ORIGINS", "").split(",") if item.strip()]
    # Several processes carry their broadcasts to each other's agents through a message queue, as the app does.
    socketio = SocketIO(app, async_mode="threading", cors_allowed_origins=origins or [], manage_session=False,
                        message_queue=os.environ.get("BENCH_ECHO_MESSAGE_QUEUE") or None)
    socketio.on_namespace(EchoChat("/chat", socketio))
    socketio.on_namespace(EchoAgents("/agents"))

    @app.get("/health")
    def health():
        """Answer once the server is up."""
        return "ok"

    return app
