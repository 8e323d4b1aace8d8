"""The chat benchmark (bench/chat_load.py) still runs: its echo floor answers, and a tiny run against the app."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import is_postgres
from tests.servers import REPO_ROOT

pytestmark = pytest.mark.integration


def load_bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_echo_floor_broadcasts_a_visitors_message_to_the_agents_and_acknowledges_it():
    echo = load_bench_module("chat_echo_server")
    app = echo.create_echo_app()
    socketio = app.extensions["socketio"]
    agent = socketio.test_client(app, namespace="/agents")
    visitor = socketio.test_client(app, namespace="/chat")

    first = visitor.emit("message", {"client_id": "a", "text": "hello"}, namespace="/chat", callback=True)
    second = visitor.emit("message", {"client_id": "b", "text": "again"}, namespace="/chat", callback=True)

    assert first == {"ok": True, "client_id": "a", "id": 1, "seq": 1}
    assert second["id"] == 2
    received = [(packet["name"], packet["args"][0]["message_id"]) for packet in agent.get_received("/agents")]
    assert received == [("message.created", 1), ("message.created", 2)]


def test_a_tiny_run_against_the_app_measures_every_message_at_every_agent(tmp_path):
    figures_path = tmp_path / "figures.json"
    command = [sys.executable, "bench/chat_load.py", "--only", "app", "--visitors", "5", "--agents", "2",
               "--warmup", "1", "--duration", "3", "--interval", "0.5", "1", "--ack-timeout", "5",
               "--json", str(figures_path)]
    if is_postgres():
        command += ["--database-url", os.environ["DATABASE_URL"]]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr

    figures = json.loads(figures_path.read_text())["helpdesk"]
    assert figures["connections"] == 7
    assert figures["acked"] > 0
    assert figures["errors"] == {} and figures["unacked"] == 0
    # Every acknowledged message reached both agents, matched by the id the visitor was acknowledged with.
    assert figures["deliveries"] == 2 * figures["acked"]
    assert figures["missing_deliveries"] == 0
    assert 0 < figures["ack"]["p50"] <= figures["ack"]["p99"] < 5
    assert figures["rss_connected_kib"] > figures["rss_before_kib"]
    assert "p99 to agents" in completed.stdout
