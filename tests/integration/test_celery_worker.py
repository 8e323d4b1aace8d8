"""A real Celery worker, started the way a deployment starts it, delivers a committed reply."""

import os
import subprocess
import sys
import uuid

import pytest
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout

from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Message
from helpdesk.outbound import reply
from tests.conftest import is_postgres
from tests.factories import make_agent, make_inbound
from tests.servers import REPO_ROOT, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
def redis_url():
    url = os.environ.get("REDIS_URL")
    if not url or not is_postgres():
        pytest.skip("needs REDIS_URL and a PostgreSQL DATABASE_URL, which a worker process can share")
    return url


@pytest.fixture
def worker(app, app_config, database_url, redis_url, tmp_path):
    """Run `celery worker` on the test database and a queue of its own; yield (queue, outgoing folder, log)."""
    # A queue no other worker or leftover task shares, so this worker runs exactly the task sent here.
    queue = f"helpdesk-test-{uuid.uuid4().hex}"
    outgoing = tmp_path / "outgoing"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": app_config["SECRET_KEY"],
        "HELPDESK_INSTANCE_PATH": str(tmp_path / "instance"),
        "HELPDESK_OUTGOING_FOLDER": str(outgoing),
    }
    log_path = tmp_path / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "wsgi:celery_app", "worker", "--pool=solo",
               "--concurrency=1", "-Q", queue, "--loglevel=INFO", "--without-heartbeat", "--without-gossip",
               "--without-mingle"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        yield queue, outgoing, log_path
    finally:
        stop_process(process)


@pytest.fixture
def celery_client(redis_url):
    client = Celery("helpdesk-test-client", broker=redis_url, backend=redis_url)
    client.conf.broker_connection_retry_on_startup = True
    yield client
    client.close()


def test_a_worker_delivers_a_committed_reply_and_records_it_as_sent(worker, celery_client):
    queue, outgoing, log_path = worker
    agent = make_agent()
    db.session.commit()
    ticket = ingest(make_inbound(subject="Where is my parcel?")).ticket
    message_id = reply(ticket, agent, "It left our warehouse this morning.").id

    result = celery_client.send_task("helpdesk.deliver_outbox", queue=queue)
    try:
        handled = result.get(timeout=60)
    except CeleryTimeout:
        pytest.fail(f"the worker did not run the job within 60 s; its log:\n{log_path.read_text()}")
    finally:
        result.forget()

    assert handled == 1
    db.session.rollback()
    assert str(db.session.get(Message, message_id).delivery_status) == "sent"
    sent = list(outgoing.glob("*.eml"))
    assert len(sent) == 1
    mail = sent[0].read_text()
    assert "It left our warehouse this morning." in mail
    assert f"[#{ticket.number}]" in mail
    # The job is idempotent: running it again sends nothing more.
    again = celery_client.send_task("helpdesk.deliver_outbox", queue=queue)
    try:
        assert again.get(timeout=60) == 0
    finally:
        again.forget()
    assert len(list(outgoing.glob("*.eml"))) == 1
