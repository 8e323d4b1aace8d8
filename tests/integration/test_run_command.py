"""The README's `make run` path starts a server that answers, with demo data an agent can log in to."""

import os
import shutil
import subprocess
import time

import pytest
import requests

from helpdesk.demo import DEMO_PASSWORD
from tests.servers import REPO_ROOT, flask_command, free_port, login_session, stop_process

pytestmark = pytest.mark.integration

#: The `flask --app wsgi ...` steps of `make run`, in order, without the serve options.
RUN_STEPS = (("db", "upgrade"), ("helpdesk", "seed-demo"), ("helpdesk", "serve"))


def embedded_env(instance_path) -> dict[str, str]:
    """The environment of a fresh checkout: no database or Redis configured, one instance folder."""
    env = {
        name: value for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY") and not name.startswith(("HELPDESK_", "FLASK_"))
    }
    env["HELPDESK_INSTANCE_PATH"] = str(instance_path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for_login_page(url: str, process: subprocess.Popen, log_path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}; output:\n{log_path.read_text()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer 200 within {timeout} s; output:\n{log_path.read_text()}")


def test_make_run_upgrades_the_database_then_seeds_demo_data_then_serves():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry_run = subprocess.run(["make", "-n", "run"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
                             check=False)
    assert dry_run.returncode == 0, dry_run.stderr
    flask_lines = [line for line in dry_run.stdout.splitlines() if "flask --app wsgi" in line]
    steps = [tuple(line.split("flask --app wsgi", 1)[1].split()[:2]) for line in flask_lines]
    assert steps == list(RUN_STEPS)


def test_the_run_command_serves_the_demo_inbox_on_an_empty_instance(tmp_path):
    instance = tmp_path / "instance"
    env = embedded_env(instance)
    for step in RUN_STEPS[:-1]:
        done = subprocess.run(flask_command(*step), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL, check=False)
        assert done.returncode == 0, f"{' '.join(step)} failed:\n{done.stdout}\n{done.stderr}"
    assert (instance / "helpdesk.sqlite3").exists()
    assert (instance / "secret_key").exists()

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        # Output goes to a file: a pipe nobody reads while the server runs would fill up and block it.
        process = subprocess.Popen(flask_command(*RUN_STEPS[-1], "--port", str(port)), cwd=REPO_ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for_login_page(f"{base_url}/login", process, log_path)
        output = log_path.read_text()
        assert f"{base_url}/" in output
        assert "admin@example.com" in output and DEMO_PASSWORD in output

        session = login_session(base_url, "admin@example.com", DEMO_PASSWORD)
        inbox = session.get(f"{base_url}/inbox", timeout=10)
        assert inbox.status_code == 200
        assert "Invoice shows the wrong VAT" in inbox.text
        assert "#1001" in inbox.text
    finally:
        stop_process(process)
        print(log_path.read_text())  # pytest shows it only when the test failed
