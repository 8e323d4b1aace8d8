"""A text's webhook keeps the form and answers; the ingest_texts job stores it: order, leases, crashes, requeue."""

import datetime as dt
import threading
import time

import pytest
import sqlalchemy as sa

from channels.messages import ChannelName
from helpdesk import tasks
from helpdesk.extensions import db
from helpdesk.jobs import JOBS, PERIODIC
from helpdesk.models import InboundQueueItem, Message, QuarantinedMessage
from helpdesk.models.base import utcnow
from helpdesk.sms import INBOUND_LEASE, _claim_queued_texts, ingest_queued_texts, ingest_webhook_payload
from tests.integration import test_twilio_webhooks
from tests.integration.test_twilio_webhooks import count, post_signed, sms_form, stored_messages

pytestmark = pytest.mark.integration

#: The emulator, configured as in the webhook tests (their public URL, their signing).
twilio = test_twilio_webhooks.twilio


@pytest.fixture
def jobs_started(monkeypatch):
    """Record the jobs the app asks to run instead of running them, so the queue can be looked at."""
    started = []
    monkeypatch.setattr(tasks, "enqueue", started.append)
    return started


def queued() -> list[InboundQueueItem]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(InboundQueueItem).order_by(InboundQueueItem.id)))


def test_the_webhook_answers_once_the_form_is_kept_and_the_job_stores_it(client, twilio, jobs_started):
    form = sms_form(twilio, Body="Where is my order?")
    response = post_signed(client, twilio, form)
    assert response.status_code == 200 and response.get_data(as_text=True).endswith("<Response />")
    assert jobs_started == ["ingest_texts"]
    [item] = queued()
    assert item.dedupe_key == f"sms:{form['MessageSid']}" and item.source == "twilio"
    assert b"Where+is+my+order" in item.payload
    received_at = item.received_at
    assert count(Message) == 0  # answered before anything was ingested

    assert JOBS["ingest_texts"]() == 1
    [message] = stored_messages()
    assert (message.text, message.external_id) == ("Where is my order?", form["MessageSid"])
    # The message keeps the time the webhook came, not the time the job ran.
    assert abs(message.created_at - received_at) < dt.timedelta(milliseconds=1)
    assert queued() == []
    assert JOBS["ingest_texts"]() == 0


def test_a_redelivery_while_the_first_copy_waits_is_kept_once(client, twilio, jobs_started):
    form = sms_form(twilio)
    for _ in range(3):
        assert post_signed(client, twilio, form).status_code == 200
    assert len(queued()) == 1
    ingest_queued_texts()
    assert len(stored_messages()) == 1


def test_texts_are_stored_in_the_order_they_came(client, twilio, jobs_started):
    bodies = [f"part {number}" for number in range(1, 8)]
    for body in bodies:
        post_signed(client, twilio, sms_form(twilio, Body=body))
    assert ingest_queued_texts() == len(bodies)
    messages = stored_messages()
    assert [message.text for message in messages] == bodies
    assert len({message.ticket_id for message in messages}) == 1


def test_media_is_fetched_by_the_job_not_while_twilio_waits(client, twilio, jobs_started):
    url = twilio.add_media(b"\xff\xd8\xff\xe0 a small jpeg", "image/jpeg")
    form = sms_form(twilio, NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")
    assert post_signed(client, twilio, form).status_code == 200
    assert twilio.media_downloads() == []
    ingest_queued_texts()
    assert len(twilio.media_downloads()) == 1
    [message] = stored_messages()
    assert [attachment.filename for attachment in message.attachments] == ["media-1.jpg"]


def test_texts_taken_by_a_worker_that_died_are_stored_once_its_lease_ends(client, twilio, jobs_started):
    forms = [sms_form(twilio, Body=f"text {number}") for number in range(3)]
    for form in forms:
        post_signed(client, twilio, form)
    # A worker claims the batch and stores the first text, then dies before it deletes the rows.
    claimed = _claim_queued_texts(10)
    assert len(claimed) == 3
    ingest_webhook_payload(claimed[0][1], received_at=claimed[0][2])
    assert ingest_queued_texts() == 0  # still leased to the dead worker
    db.session.execute(sa.update(InboundQueueItem).values(claimed_until=utcnow() - dt.timedelta(seconds=1)))
    db.session.commit()

    assert ingest_queued_texts() == 3
    assert sorted(message.text for message in stored_messages()) == ["text 0", "text 1", "text 2"]
    assert queued() == []
    assert INBOUND_LEASE >= dt.timedelta(minutes=1)


def test_a_form_that_makes_no_message_is_quarantined_and_leaves_the_queue(client, twilio, jobs_started):
    post_signed(client, twilio, sms_form(twilio, From="TWILIO", Body="Your code is 1234"))
    assert len(queued()) == 1
    ingest_queued_texts()
    assert queued() == [] and count(Message) == 0
    [row] = db.session.scalars(sa.select(QuarantinedMessage)).all()
    assert row.source == "twilio webhook" and "Your+code+is+1234" in row.raw.decode()


def test_a_text_that_fails_to_store_is_quarantined_and_requeue_stores_it(client, twilio, jobs_started, runner,
                                                                          monkeypatch):
    import helpdesk.sms

    def broken(message):
        raise RuntimeError("database on fire")

    form = sms_form(twilio, From="whatsapp:+46701234567", To="whatsapp:+14155238886", Body="Hola")
    post_signed(client, twilio, form)
    monkeypatch.setattr(helpdesk.sms, "ingest", broken)
    ingest_queued_texts()
    assert queued() == [] and count(Message) == 0
    [row] = db.session.scalars(sa.select(QuarantinedMessage)).all()
    assert row.channel is ChannelName.WHATSAPP and "database on fire" in row.error
    monkeypatch.undo()

    result = runner.invoke(args=["helpdesk", "requeue-quarantined"])
    assert "1 ingested, 0 still quarantined" in result.output, result.output
    [message] = stored_messages()
    assert (message.channel, message.text, message.external_id) == (ChannelName.WHATSAPP, "Hola",
                                                                     form["MessageSid"])


def test_the_job_also_runs_periodically_for_what_a_dead_worker_left():
    assert "ingest_texts" in PERIODIC and PERIODIC["ingest_texts"] <= 60


def test_jobs_asked_for_while_one_runs_make_one_more_run_not_a_thread_each(app, monkeypatch):
    runs = []
    first_run_started, release = threading.Event(), threading.Event()

    def slow_job():
        runs.append(time.monotonic())
        first_run_started.set()
        release.wait(5)

    monkeypatch.setitem(JOBS, "slow_job", slow_job)
    tasks._run_in_thread(app, "slow_job")
    assert first_run_started.wait(5)
    for _ in range(20):  # twenty webhooks while the first run goes on
        tasks._run_in_thread(app, "slow_job")
    release.set()
    deadline = time.monotonic() + 5
    while "slow_job" in app.extensions["helpdesk.job_threads"][0] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(runs) == 2  # the first, and one more for everything asked for meanwhile

    tasks._run_in_thread(app, "slow_job")  # asked for after it settled: a new run
    deadline = time.monotonic() + 5
    while len(runs) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(runs) == 3


def test_admins_see_texts_waiting_and_a_warning_when_no_worker_stores_them(client, twilio, jobs_started, login_as):
    login_as("admin")
    assert "waiting to be stored" not in client.get("/admin/channels/twilio").get_data(as_text=True)
    for _ in range(2):
        post_signed(client, twilio, sms_form(twilio))
    page = client.get("/admin/channels/twilio").get_data(as_text=True)
    assert "2 received\n  texts waiting to be stored" in page and "No worker is storing them" not in page

    db.session.execute(sa.update(InboundQueueItem).values(received_at=utcnow() - INBOUND_LEASE * 2))
    db.session.commit()
    page = client.get("/admin/channels/twilio").get_data(as_text=True)
    assert "No worker is storing them" in page
    ingest_queued_texts()
    assert "waiting to be stored" not in client.get("/admin/channels/twilio").get_data(as_text=True)
