"""With Redis as the Socket.IO message queue, an event published by another process reaches agents."""

import os
import queue
import subprocess

import pytest
import socketio

from helpdesk.extensions import db
from tests.conftest import TEST_PASSWORD
from tests.factories import make_agent
from tests.servers import REPO_ROOT, flask_command, free_port, login_session, running_server

pytestmark = [pytest.mark.integration, pytest.mark.redis]

RAW_EMAIL = (
    b"From: Maria Lopez <maria@example.org>\r\nTo: support@example.com\r\nSubject: Printer on fire\r\n"
    b"Message-ID: <fire-1@example.org>\r\n\r\nIt is really on fire.\r\n"
)


@pytest.fixture
def redis_url():
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set")
    return url


def test_a_ticket_ingested_by_another_process_reaches_an_agent_on_the_web_process(app, app_config, redis_url,
                                                                                tmp_path):
    agent = make_agent(email="watcher@example.com")
    db.session.commit()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": redis_url,
        "SECRET_KEY": app_config["SECRET_KEY"],
        "HELPDESK_INSTANCE_PATH": str(tmp_path / "instance"),
        "HELPDESK_PUBLIC_URL": base_url,
    }
    with running_server(env, port, "--without-jobs", log_path=tmp_path / "server.log"):
        http = login_session(base_url, agent.email, TEST_PASSWORD)
        received = queue.Queue()
        client = socketio.Client(reconnection=False)
        client.on("ticket.created", received.put, namespace="/agents")
        cookie = "; ".join(f"{name}={value}" for name, value in http.cookies.items())
        client.connect(base_url, namespaces=["/agents"], transports=["websocket"],
                       headers={"Cookie": cookie, "User-Agent": http.headers["User-Agent"]}, wait_timeout=10)
        try:
            # Pipe-mode intake is a separate process, as it is when a mail server delivers to a command.
            intake = subprocess.run(flask_command("helpdesk", "ingest-email", "-"), input=RAW_EMAIL, cwd=REPO_ROOT,
                                    env={**os.environ, **env}, capture_output=True, timeout=60)
            assert intake.returncode == 0, intake.stderr.decode()
            event = received.get(timeout=15)
        finally:
            client.disconnect()
    assert event["ticket"] == 1001
    assert event["subject"] == "Printer on fire"


def test_an_anonymous_socket_is_refused(app, app_config, redis_url, tmp_path):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {"DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "REDIS_URL": redis_url,
           "SECRET_KEY": app_config["SECRET_KEY"], "HELPDESK_INSTANCE_PATH": str(tmp_path / "instance"),
           "HELPDESK_PUBLIC_URL": base_url}
    with running_server(env, port, "--without-jobs", log_path=tmp_path / "server.log"):
        client = socketio.Client(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            client.connect(base_url, namespaces=["/agents"], transports=["websocket"], wait_timeout=10)
