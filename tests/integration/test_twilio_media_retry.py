"""Media of a text that could not be fetched: the text is stored at once, the file is fetched again later by the
retry_media job through the real twilio HTTP client against the emulator, with backoff, until it is stored, fails
for good, or the attempts run out."""

import datetime as dt

import pytest
import sqlalchemy as sa
from werkzeug.datastructures import MultiDict

from helpdesk.attachments import attachment_path
from helpdesk.extensions import db, socketio
from helpdesk.jobs import JOBS, PERIODIC
from helpdesk.models import Attachment, Message, TicketEvent
from helpdesk.models.base import utcnow
from helpdesk.realtime import AGENT_NAMESPACE
from helpdesk.sms import _claim_due_media
from helpdesk.twilio_accounts import TwilioAccountInput, save_twilio_account
from tests.conftest import clear_g
from tests.fakes.twilio_emulator import new_sid, running_twilio_emulator, twilio_signature

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("forget_kept_twilio_accounts")]

PUBLIC_URL = "https://helpdesk.example.com"
SMS_PATH = "/channels/twilio/sms"
PHOTO = b"\xff\xd8\xff\xe0 a photo of the damaged parcel"


@pytest.fixture
def twilio(app, monkeypatch):
    with running_twilio_emulator() as emulator:
        for key, value in emulator.config(PUBLIC_URL).items():
            monkeypatch.setitem(app.config, key, value)
        monkeypatch.setitem(app.config, "TWILIO_MEDIA_RETRY_SECONDS", 60)
        monkeypatch.setitem(app.config, "TWILIO_MEDIA_RETRY_ATTEMPTS", 8)
        yield emulator


def retry_media() -> int:
    return JOBS["retry_media"]()


def text_with_media(client, twilio, url, content_type="image/jpeg", body="Here is the damage") -> Message:
    """Post a signed MMS with one media file; return the stored message, checked to be there at once."""
    form = {"MessageSid": new_sid("MM"), "AccountSid": twilio.account_sid, "From": "+46701234567",
            "To": "+15005550006", "Body": body, "NumMedia": "1", "MediaUrl0": url, "MediaContentType0": content_type}
    signature = twilio_signature(twilio.auth_token, PUBLIC_URL + SMS_PATH, form)
    response = client.post(SMS_PATH, data=MultiDict(form), headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    db.session.rollback()
    message = db.session.scalars(sa.select(Message).where(Message.external_id == form["MessageSid"])).one()
    assert message.text == body  # stored at once, whatever became of the media
    return message


def the_attachment() -> Attachment:
    db.session.rollback()
    return db.session.scalars(sa.select(Attachment)).one()


def make_due() -> None:
    attachment = the_attachment()
    attachment.next_fetch_at = utcnow() - dt.timedelta(seconds=1)
    db.session.commit()


def seconds_until_retry(attachment: Attachment) -> float:
    return (attachment.next_fetch_at - utcnow()).total_seconds()


def events(kind: str) -> list[TicketEvent]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(TicketEvent).where(TicketEvent.kind == kind).order_by(TicketEvent.id)))


def test_the_retry_job_runs_periodically():
    assert "retry_media" in PERIODIC and PERIODIC["retry_media"] <= 300


def test_media_failing_at_first_is_fetched_again_and_stored(client, twilio, app, login_as):
    url = twilio.add_media(PHOTO, "image/jpeg")
    twilio.fail_media(url, 503)
    message = text_with_media(client, twilio, url)

    attachment = the_attachment()
    assert (attachment.size, attachment.storage_path, attachment.source_url) == (0, None, url)
    assert "HTTP 503" in attachment.refused_reason and "trying again (attempt 1 of 8)" in attachment.refused_reason
    assert attachment.fetch_attempts == 1 and 55 < seconds_until_retry(attachment) <= 60
    [refused] = events("attachment.refused")
    assert refused.data["will_retry"] is True and refused.data["media_url"] == url

    assert retry_media() == 0  # not due yet
    make_due()
    login_as()
    clear_g()
    socket = socketio.test_client(app, namespace=AGENT_NAMESPACE, flask_test_client=client)
    try:
        socket.get_received(AGENT_NAMESPACE)
        assert retry_media() == 1
        updates = [e["args"][0] for e in socket.get_received(AGENT_NAMESPACE) if e["name"] == "message.updated"]
    finally:
        socket.disconnect(namespace=AGENT_NAMESPACE)

    attachment = the_attachment()
    assert (attachment.refused_reason, attachment.next_fetch_at, attachment.fetch_attempts) == (None, None, 2)
    assert (attachment.filename, attachment.content_type, attachment.size) == ("media-1.jpg", "image/jpeg",
                                                                               len(PHOTO))
    assert attachment_path(attachment).read_bytes() == PHOTO
    [fetched] = events("attachment.fetched")
    assert fetched.data["attachment_id"] == attachment.id and "attempt 2" in fetched.reason
    assert {"ticket": message.ticket.number, "message_id": message.id} in updates
    downloads = twilio.media_downloads()
    assert len(downloads) == 2 and all(download.authorized for download in downloads)
    assert retry_media() == 0


def test_each_retry_waits_twice_as_long_until_the_file_comes(client, twilio, app, monkeypatch):
    monkeypatch.setitem(app.config, "TWILIO_MEDIA_RETRY_SECONDS", 10)
    url = twilio.add_media(PHOTO, "image/jpeg")
    twilio.fail_media(url, 500, 429, 502)
    text_with_media(client, twilio, url)
    waits = [seconds_until_retry(the_attachment())]
    for expected_reason in ("HTTP 429", "HTTP 502"):
        make_due()
        assert retry_media() == 1
        attachment = the_attachment()
        assert expected_reason in attachment.refused_reason
        waits.append(seconds_until_retry(attachment))
    assert [round(wait, -1) for wait in waits] == [10, 20, 40]
    make_due()
    assert retry_media() == 1
    attachment = the_attachment()
    assert attachment.refused_reason is None and attachment.fetch_attempts == 4
    assert attachment_path(attachment).read_bytes() == PHOTO


def test_an_unreachable_twilio_is_tried_again(client, twilio):
    url = twilio.add_media(PHOTO, "image/jpeg")
    twilio.fail_media(url, 500)
    text_with_media(client, twilio, url)
    make_due()
    twilio.stop()
    try:
        assert retry_media() == 1
    finally:
        twilio.start()  # same port
    attachment = the_attachment()
    assert "ConnectionError" in attachment.refused_reason and attachment.next_fetch_at is not None
    make_due()
    assert retry_media() == 1
    assert attachment_path(the_attachment()).read_bytes() == PHOTO


def test_media_gone_at_first_is_never_tried_again(client, twilio):
    url = twilio.add_media(PHOTO, "image/jpeg")
    twilio.fail_media(url, 404)
    text_with_media(client, twilio, url)
    attachment = the_attachment()
    assert "HTTP 404" in attachment.refused_reason and "trying again" not in attachment.refused_reason
    assert (attachment.source_url, attachment.next_fetch_at, attachment.fetch_attempts) == (url, None, 1)
    assert events("attachment.refused")[0].data["will_retry"] is False
    assert retry_media() == 0
    assert len(twilio.media_downloads()) == 1


@pytest.mark.parametrize("failure", ["gone", "too large", "forbidden type"])
def test_a_retry_meeting_a_permanent_error_stops_at_once_with_a_note(client, twilio, app, monkeypatch, failure):
    served = (b"<script>alert(1)</script>", "text/html") if failure == "forbidden type" else (PHOTO, "image/jpeg")
    url = twilio.add_media(*served)
    twilio.fail_media(url, 500, *([404] if failure == "gone" else []))
    text_with_media(client, twilio, url, content_type="image/jpeg")
    if failure == "too large":
        monkeypatch.setitem(app.config, "TWILIO_MEDIA_MAX_BYTES", 10)
    make_due()
    assert retry_media() == 1

    attachment = the_attachment()
    expected = {"gone": "HTTP 404", "too large": "10-byte limit", "forbidden type": "text/html is not accepted"}
    assert expected[failure] in attachment.refused_reason
    assert "not tried again" in attachment.refused_reason
    assert (attachment.next_fetch_at, attachment.storage_path, attachment.size) == (None, None, 0)
    given_up = [event for event in events("attachment.refused") if event.data.get("gave_up")]
    assert len(given_up) == 1 and expected[failure] in given_up[0].reason
    assert retry_media() == 0
    assert len(twilio.media_downloads()) == 2


def test_retries_give_up_after_the_configured_attempts_with_a_note(client, twilio, app, monkeypatch):
    monkeypatch.setitem(app.config, "TWILIO_MEDIA_RETRY_ATTEMPTS", 3)
    url = twilio.add_media(PHOTO, "image/jpeg")
    twilio.fail_media(url, 500, 500, 500, 500)
    message = text_with_media(client, twilio, url)
    assert "attempt 1 of 3" in the_attachment().refused_reason
    make_due()
    assert retry_media() == 1
    assert "attempt 2 of 3" in the_attachment().refused_reason
    make_due()
    assert retry_media() == 1

    attachment = the_attachment()
    assert attachment.refused_reason.endswith("gave up after 3 attempts")
    assert (attachment.next_fetch_at, attachment.fetch_attempts) == (None, 3)
    [note] = [event for event in events("attachment.refused") if event.data.get("gave_up")]
    assert note.ticket_id == message.ticket_id and "gave up after 3 attempts" in note.reason
    assert retry_media() == 0
    assert len(twilio.media_downloads()) == 3
    assert message.text == "Here is the damage"


def test_a_retry_holds_the_file_so_a_second_worker_leaves_it_alone(client, twilio):
    url = twilio.add_media(PHOTO, "image/jpeg")
    twilio.fail_media(url, 500)
    text_with_media(client, twilio, url)
    make_due()
    [claimed] = _claim_due_media(10)
    assert claimed.attempt == 2 and claimed.url == url
    assert _claim_due_media(10) == []  # claimed: not due for anyone else until the lease lapses
    assert the_attachment().next_fetch_at > utcnow() + dt.timedelta(minutes=4)


def test_a_retry_uses_the_account_saved_in_the_admin_pages(client, twilio, app, monkeypatch):
    save_twilio_account(None, TwilioAccountInput(name="Support line", account_sid=twilio.account_sid,
                                                 auth_token=twilio.auth_token, from_number="+15005550006"))
    db.session.commit()
    for key in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.setitem(app.config, key, None)  # only the saved account is left
    url = twilio.add_media(PHOTO, "image/jpeg")
    twilio.fail_media(url, 500)
    text_with_media(client, twilio, url)
    make_due()
    assert retry_media() == 1
    assert attachment_path(the_attachment()).read_bytes() == PHOTO
    assert all(download.authorized for download in twilio.media_downloads())


def test_a_retry_with_no_account_for_the_media_waits_for_one(client, twilio, app, monkeypatch):
    url = twilio.add_media(PHOTO, "image/jpeg")
    twilio.fail_media(url, 500)
    text_with_media(client, twilio, url)
    monkeypatch.setitem(app.config, "TWILIO_AUTH_TOKEN", None)  # the account went away meanwhile
    make_due()
    assert retry_media() == 1
    attachment = the_attachment()
    assert f"no enabled Twilio account {twilio.account_sid}" in attachment.refused_reason
    assert attachment.next_fetch_at is not None and len(twilio.media_downloads()) == 1
