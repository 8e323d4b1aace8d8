"""Start the helpdesk as a real server process for tests that need one."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import requests

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def flask_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "wsgi", *args]


def wait_until_answers(url: str, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def running_server(env: dict[str, str], port: int, *extra: str, log_path: pathlib.Path):
    """Run `helpdesk serve` on `port` with `env`, its output going to `log_path`; stop it afterwards."""
    with open(log_path, "w") as log:
        # Output goes to a file, not a pipe: a pipe nobody reads fills up and blocks the server.
        process = subprocess.Popen(
            flask_command("helpdesk", "serve", "--port", str(port), *extra),
            cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            try:
                wait_until_answers(f"http://127.0.0.1:{port}/login", process)
            except (RuntimeError, TimeoutError) as error:
                raise RuntimeError(f"{error}; server output:\n{log_path.read_text()}") from None
            yield process
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """Ask a test's child process to stop, and kill it if it will not."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def login_session(base_url: str, email: str, password: str, user_agent: str = "helpdesk-tests") -> requests.Session:
    """Log in through the real form and return the HTTP session holding the cookie."""
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    page = session.get(f"{base_url}/login", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = session.post(f"{base_url}/login", data={"email": email, "password": password, "csrf_token": token},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    return session


def wait_for_text(external_id: str, timeout: float = 10.0):
    """Return the message a served helpdesk stored for Twilio's `external_id`, waiting for its ingest job.

    A served helpdesk answers a text's webhook once the form is kept, and stores the message just after. This
    also waits for the job to delete the kept form: on SQLite, a test that reads and then writes fails at once
    ("database is locked") if the server wrote in between.
    """
    import sqlalchemy as sa

    from helpdesk.extensions import db
    from helpdesk.models import InboundQueueItem, Message

    deadline = time.monotonic() + timeout
    while True:
        db.session.rollback()  # see what the server committed
        waiting = db.session.scalar(sa.select(sa.func.count()).select_from(InboundQueueItem))
        message = db.session.scalars(sa.select(Message).where(Message.external_id == external_id)).one_or_none()
        if message is not None and not waiting:
            return message
        if time.monotonic() > deadline:
            raise AssertionError(f"the server stored no message for {external_id} within {timeout} s")
        time.sleep(0.02)
