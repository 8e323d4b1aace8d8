"""Texts out through the real twilio client against the emulator: retries, refusals, status reports, limits."""

import datetime as dt

import pytest
import sqlalchemy as sa
from flask import Flask
from twilio.request_validator import RequestValidator

from channels.base import ChannelRegistry
from channels.local import LocalLogChannel
from channels.messages import ChannelName, DeliveryStatus, IdentityKind, OutboundMessage, SenderIdentity
from channels.sms.twilio import TwilioChannel
from helpdesk import init_channels
from helpdesk.customers import find_identity
from helpdesk.extensions import db, socketio
from helpdesk.ingest import ingest
from helpdesk.models import Message, OutboxItem, OutboxState, TicketEvent
from helpdesk.models.base import utcnow
from helpdesk.outbound import ReplyRefused, deliver_due, reply
from helpdesk.realtime import AGENT_NAMESPACE
from tests.conftest import clear_g
from tests.factories import make_agent, make_inbound
from tests.fakes.twilio_emulator import running_twilio_emulator

pytestmark = pytest.mark.integration

PUBLIC_URL = "https://helpdesk.example.com"
MARIA = "+46701234567"


@pytest.fixture
def twilio(app, monkeypatch):
    with running_twilio_emulator() as emulator:
        for key, value in emulator.config(PUBLIC_URL).items():
            monkeypatch.setitem(app.config, key, value)
        yield emulator


@pytest.fixture
def registry(twilio):
    channels = [TwilioChannel(name, twilio.settings(PUBLIC_URL)) for name in (ChannelName.SMS, ChannelName.WHATSAPP)]
    registry = ChannelRegistry()
    for channel in channels:
        registry.register(channel)
    yield registry
    for channel in channels:
        channel.close()


@pytest.fixture
def agent():
    agent = make_agent()
    db.session.commit()
    return agent


def text_ticket(channel="sms", phone=MARIA, received_at=None):
    """Open a ticket from a text by `phone`, received now or at `received_at`."""
    return ingest(make_inbound(channel=channel, sender=SenderIdentity(IdentityKind.PHONE, phone),
                               received_at=received_at)).ticket


def fresh(message) -> Message:
    db.session.rollback()
    return db.session.get(Message, message.id)


def outbox_item(message) -> OutboxItem:
    db.session.rollback()
    return db.session.scalars(sa.select(OutboxItem).where(OutboxItem.message_id == message.id)).one()


def make_due(message) -> None:
    item = outbox_item(message)
    item.next_attempt_at = utcnow() - dt.timedelta(seconds=1)
    db.session.commit()


def post_report(client, twilio, sid, status, error_code=None):
    """Deliver Twilio's status callback for `sid` to the app, signed as Twilio signs it."""
    created = twilio.messages[sid]
    url = created.form["StatusCallback"]
    params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
              "AccountSid": twilio.account_sid, "To": created.form["To"], "From": created.form.get("From", "")}
    if error_code:
        params["ErrorCode"] = str(error_code)
    signature = RequestValidator(twilio.auth_token).compute_signature(url, params)
    return client.post(url.removeprefix(PUBLIC_URL), data=params, headers={"X-Twilio-Signature": signature})


def test_a_reply_is_created_at_twilio_and_its_sid_becomes_the_external_id(twilio, registry, agent):
    message = reply(text_ticket(), agent, "Your parcel is at the depot.")
    our_ref = message.external_id
    assert deliver_due(registry) == 1

    [created] = twilio.created
    assert created.form["To"] == MARIA and created.form["From"] == "+15005550006"
    assert created.form["Body"] == "Your parcel is at the depot."
    assert created.form["StatusCallback"] == f"{PUBLIC_URL}/channels/twilio/status?ref={our_ref}"
    assert all(request.authorized for request in twilio.requests)
    stored = fresh(message)
    assert stored.external_id == created.sid
    assert stored.delivery_status is DeliveryStatus.QUEUED
    assert outbox_item(message).state is OutboxState.SENT


def test_browser_line_ends_go_out_as_plain_newlines(twilio, registry, agent):
    reply(text_ticket(), agent, "Line one\r\nLine two")
    deliver_due(registry)
    assert twilio.created[0].form["Body"] == "Line one\nLine two"


@pytest.mark.parametrize("status", [500, 429])
def test_a_server_error_or_rate_limit_is_retried_later_and_the_text_is_created_once(twilio, registry, agent,
                                                                                     status):
    message = reply(text_ticket(), agent, "Hello again")
    twilio.fail_next(status)
    assert deliver_due(registry) == 1
    item = outbox_item(message)
    assert item.state is OutboxState.PENDING and item.next_attempt_at > utcnow()
    expected = {500: "20500: Internal Server Error", 429: "20429: Too many requests"}[status]
    assert fresh(message).delivery_error == expected
    assert fresh(message).delivery_status is DeliveryStatus.PENDING
    assert deliver_due(registry) == 0  # backing off
    make_due(message)
    assert deliver_due(registry) == 1
    assert len(twilio.creates()) == 2 and len(twilio.created) == 1
    stored = fresh(message)
    assert (stored.delivery_status, stored.delivery_error) == (DeliveryStatus.QUEUED, None)
    assert stored.external_id == twilio.created[0].sid
    make_due(message)
    assert deliver_due(registry) == 0  # sent: never again


def test_an_invalid_number_fails_for_good_with_twilios_code_and_meaning(twilio, registry, agent):
    ticket = text_ticket()
    message = reply(ticket, agent, "Hello")
    twilio.fail_next(400, code=21211, message="The 'To' number +46701234567 is not a valid phone number.")
    deliver_due(registry)
    stored = fresh(message)
    assert stored.delivery_status is DeliveryStatus.FAILED
    assert stored.delivery_error.startswith("21211: Invalid 'To' phone number")
    assert "+46701234567 is not a valid phone number" in stored.delivery_error
    assert outbox_item(message).state is OutboxState.FAILED
    event = db.session.scalars(sa.select(TicketEvent).where(TicketEvent.kind == "delivery.failed")).one()
    assert "21211" in event.reason
    make_due(message)
    assert deliver_due(registry) == 0 and twilio.created == []


def test_an_unreachable_twilio_is_retried(twilio, registry, agent):
    message = reply(text_ticket(), agent, "Hello")
    twilio.stop()
    try:
        deliver_due(registry)
    finally:
        twilio.start()  # same port
    assert outbox_item(message).state is OutboxState.PENDING
    assert "Twilio unreachable" in fresh(message).delivery_error
    make_due(message)
    deliver_due(registry)
    assert len(twilio.created) == 1 and fresh(message).delivery_status is DeliveryStatus.QUEUED


def test_a_lost_answer_is_never_sent_again_and_the_next_status_report_settles_it(twilio, agent, client):
    channel = TwilioChannel(ChannelName.SMS, twilio.settings(PUBLIC_URL, timeout=0.5))
    registry = ChannelRegistry()
    registry.register(channel)
    try:
        message = reply(text_ticket(), agent, "Your refund is on its way.")
        twilio.delay_next(1.5)  # Twilio accepts it, but its answer comes after the client gave up
        deliver_due(registry)
        stored = fresh(message)
        assert stored.delivery_status is DeliveryStatus.FAILED
        assert stored.delivery_error.startswith("outcome unknown")
        make_due(message)
        assert deliver_due(registry) == 0  # not retried: it may well have gone out
        [created] = twilio.created

        assert post_report(client, twilio, created.sid, "delivered").status_code == 204
        stored = fresh(message)
        assert (stored.delivery_status, stored.delivery_error) == (DeliveryStatus.DELIVERED, None)
        assert stored.external_id == created.sid
        assert outbox_item(message).state is OutboxState.SENT
        kinds = db.session.scalars(sa.select(TicketEvent.kind)).all()
        assert "delivery.confirmed" in kinds
        assert len(twilio.creates()) == 1
    finally:
        twilio.join_callbacks()
        channel.close()


def test_a_report_for_a_send_the_worker_never_recorded_settles_it(twilio, agent, client, app, monkeypatch):
    # A worker claimed the reply and Twilio accepted it, then the worker died before recording the SID.
    monkeypatch.setitem(app.config, "TWILIO_STATUS_WAIT_SECONDS", 0.3)
    message = reply(text_ticket(), agent, "Hello")
    channel = TwilioChannel(ChannelName.SMS, twilio.settings(PUBLIC_URL))
    try:
        result = channel.send(OutboundMessage(ChannelName.SMS, MARIA, "Hello", external_id=message.external_id))
    finally:
        channel.close()
    item = outbox_item(message)
    item.state, item.claimed_at, item.attempts = OutboxState.SENDING, utcnow(), 1
    db.session.commit()

    assert post_report(client, twilio, result.provider_id, "sent").status_code == 204
    stored = fresh(message)
    assert (stored.external_id, stored.delivery_status) == (result.provider_id, DeliveryStatus.SENT)
    assert outbox_item(message).state is OutboxState.SENT  # the lease will not hand it to another worker


def test_status_reports_move_forward_and_never_back(twilio, registry, agent, client, login_as, app):
    message = reply(text_ticket(), agent, "Hello")
    deliver_due(registry)
    sid = twilio.created[0].sid
    login_as()
    clear_g()
    socket = socketio.test_client(app, namespace=AGENT_NAMESPACE, flask_test_client=client)
    try:
        socket.get_received(AGENT_NAMESPACE)
        for status, expected in [("sent", DeliveryStatus.SENT), ("delivered", DeliveryStatus.DELIVERED),
                                 ("sent", DeliveryStatus.DELIVERED), ("queued", DeliveryStatus.DELIVERED),
                                 ("undelivered", DeliveryStatus.DELIVERED)]:
            assert post_report(client, twilio, sid, status).status_code == 204
            assert fresh(message).delivery_status is expected, status
        events = [e for e in socket.get_received(AGENT_NAMESPACE) if e["name"] == "message.updated"]
    finally:
        socket.disconnect(namespace=AGENT_NAMESPACE)
    assert [e["args"][0]["delivery_status"] for e in events] == ["sent", "delivered"]
    assert events[0]["args"][0]["message_id"] == message.id


@pytest.mark.parametrize(("code", "text"), [
    (30003, "30003: Unreachable destination handset"),
    (30007, "30007: Carrier violation: message filtered"),
    (30008, "30008: Unknown error"),
])
def test_an_undelivered_report_shows_twilios_code_and_its_meaning(twilio, registry, agent, client, code, text):
    message = reply(text_ticket(), agent, "Hello")
    deliver_due(registry)
    sid = twilio.created[0].sid
    post_report(client, twilio, sid, "sent")
    post_report(client, twilio, sid, "undelivered", error_code=code)
    stored = fresh(message)
    assert (stored.delivery_status, stored.delivery_error) == (DeliveryStatus.UNDELIVERED, text)
    event = db.session.scalars(sa.select(TicketEvent).where(TicketEvent.kind == "delivery.failed")).one()
    assert event.reason == text


def test_twilio_reporting_an_unsubscribed_number_marks_it_opted_out(twilio, registry, agent, client):
    ticket = text_ticket()
    reply(ticket, agent, "Hello")
    deliver_due(registry)
    post_report(client, twilio, twilio.created[0].sid, "failed", error_code=21610)
    db.session.rollback()
    assert find_identity(IdentityKind.PHONE, MARIA).opted_out_at is not None
    with pytest.raises(ReplyRefused, match="opted out"):
        reply(ticket, agent, "Hello?")


def test_a_report_for_an_unknown_message_is_accepted_and_ignored(twilio, client):
    params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered", "AccountSid": twilio.account_sid}
    url = f"{PUBLIC_URL}/channels/twilio/status"
    signature = RequestValidator(twilio.auth_token).compute_signature(url, params)
    assert client.post("/channels/twilio/status", data=params,
                       headers={"X-Twilio-Signature": signature}).status_code == 204


def test_a_forged_status_report_is_refused(twilio, registry, agent, client):
    message = reply(text_ticket(), agent, "Hello")
    deliver_due(registry)
    params = {"MessageSid": twilio.created[0].sid, "MessageStatus": "delivered", "AccountSid": twilio.account_sid}
    forged = RequestValidator("guessed").compute_signature(f"{PUBLIC_URL}/channels/twilio/status", params)
    assert client.post("/channels/twilio/status", data=params,
                       headers={"X-Twilio-Signature": forged}).status_code == 403
    assert fresh(message).delivery_status is DeliveryStatus.QUEUED


def test_a_whatsapp_reply_goes_out_with_whatsapp_addresses(twilio, registry, agent):
    ticket = text_ticket(channel="whatsapp")
    reply(ticket, agent, "Hola! 👋")
    deliver_due(registry)
    [created] = twilio.created
    assert (created.form["To"], created.form["From"]) == (f"whatsapp:{MARIA}", "whatsapp:+14155238886")


@pytest.mark.parametrize(("hours_ago", "allowed"), [(1, True), (23, True), (25, False), (24 * 7, False)])
def test_a_whatsapp_reply_is_refused_more_than_24_hours_after_the_customers_last_message(agent, hours_ago,
                                                                                          allowed):
    ticket = text_ticket(channel="whatsapp", received_at=utcnow() - dt.timedelta(hours=hours_ago))
    if allowed:
        assert reply(ticket, agent, "Thanks for waiting").delivery_status is DeliveryStatus.PENDING
    else:
        with pytest.raises(ReplyRefused, match="only within 24 hours .* template message"):
            reply(ticket, agent, "Thanks for waiting")
        assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 0


def test_an_internal_note_on_a_closed_whatsapp_window_is_still_allowed(agent):
    ticket = text_ticket(channel="whatsapp", received_at=utcnow() - dt.timedelta(days=3))
    assert reply(ticket, agent, "Ask a lead about a template", is_public=False).is_public is False


@pytest.mark.parametrize(("channel", "text", "allowed"), [
    ("sms", "a" * 1530, True),                     # 10 GSM-7 segments
    ("sms", "a" * 1531, False),                    # 11
    ("sms", "ש" * 670, True),                      # 10 UCS-2 segments
    ("sms", "ש" * 671, False),
    ("sms", "€" * 760, True),                      # 1520 septets, 76 escape pairs per segment: 10 segments
    ("sms", "€" * 761, False),
    ("whatsapp", "ש" * 1600, True),                # WhatsApp has no segments, only Twilio's 1600 characters
    ("whatsapp", "a" * 1601, False),
])
def test_an_over_long_text_is_refused_with_the_count(agent, channel, text, allowed):
    ticket = text_ticket(channel=channel, received_at=utcnow())
    if allowed:
        reply(ticket, agent, text)
    else:
        with pytest.raises(ReplyRefused, match="segments|1600"):
            reply(ticket, agent, text)


def test_the_factory_sends_texts_through_twilio_only_when_an_account_is_configured(tmp_path, twilio):
    def registry_for(**config):
        flask_app = Flask("channels-test")
        flask_app.config.update(HELPDESK_OUTGOING_FOLDER=str(tmp_path), HELPDESK_SUPPORT_ADDRESS="s@example.com",
                                **config)
        init_channels(flask_app)
        return flask_app.extensions["helpdesk.channels"]

    def text(channel):
        return OutboundMessage(channel, MARIA, f"Hello on {channel}", external_id=f"helpdesk-{channel}")

    registry = registry_for()
    for channel in (ChannelName.SMS, ChannelName.WHATSAPP):
        result = registry.get(channel).send(text(channel))
        assert (result.status, result.provider_id) == (DeliveryStatus.SENT, f"helpdesk-{channel}")
        assert f"Hello on {channel}" in (tmp_path / f"{channel}.log").read_text()
    assert twilio.requests == []

    registry = registry_for(**{**twilio.config(PUBLIC_URL), "TWILIO_WHATSAPP_FROM": None})
    sms, whatsapp = registry.get(ChannelName.SMS), registry.get(ChannelName.WHATSAPP)
    try:
        result = sms.send(text(ChannelName.SMS))
        [created] = twilio.created
        assert (result.status, result.provider_id) == (DeliveryStatus.QUEUED, created.sid)
        assert created.form["From"] == "+15005550006"
        whatsapp.send(text(ChannelName.WHATSAPP))  # no WhatsApp sender: the local log again
        assert len(twilio.created) == 1
        assert (tmp_path / "whatsapp.log").read_text().count("Hello on whatsapp") == 2
        assert isinstance(registry.get(ChannelName.EMAIL), LocalLogChannel)
    finally:
        sms.close()
        whatsapp.close()


def test_the_ticket_page_shows_the_whatsapp_window_and_a_segment_counter_for_texts(client, login_as):
    login_as()
    open_window = text_ticket(channel="whatsapp", phone="+14155550100", received_at=utcnow() - dt.timedelta(hours=2))
    closed = text_ticket(channel="whatsapp", phone="+14155550101", received_at=utcnow() - dt.timedelta(hours=30))
    sms = text_ticket(channel="sms", phone="+14155550102")
    email = ingest(make_inbound()).ticket

    page = client.get(f"/tickets/{open_window.number}").get_data(as_text=True)
    assert "WhatsApp free-form replies are possible until" in page and 'data-text-channel="whatsapp"' in page
    page = client.get(f"/tickets/{closed.number}").get_data(as_text=True)
    assert "The WhatsApp 24-hour window is closed" in page
    page = client.get(f"/tickets/{sms.number}").get_data(as_text=True)
    assert 'data-text-channel="sms"' in page and 'data-max-segments="10"' in page and 'id="sms-counter"' in page
    assert "sms_counter.js" in page and "opted out" not in page
    page = client.get(f"/tickets/{email.number}").get_data(as_text=True)
    assert "data-text-channel" not in page and 'id="sms-counter"' not in page


def test_a_refused_text_reply_is_explained_to_the_agent(client, login_as, auth):
    login_as()
    ticket = text_ticket(channel="whatsapp", received_at=utcnow() - dt.timedelta(hours=25))
    token = auth.csrf_token(f"/tickets/{ticket.number}")
    response = client.post(f"/tickets/{ticket.number}/reply", data={"text": "Hello", "csrf_token": token},
                           follow_redirects=True)
    assert "Not sent: WhatsApp allows free-form replies only within 24 hours" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 0


def test_the_ticket_page_shows_the_delivery_status_with_twilios_error(twilio, registry, agent, client, login_as):
    ticket = text_ticket()
    reply(ticket, agent, "Hello")
    deliver_due(registry)
    post_report(client, twilio, twilio.created[0].sid, "undelivered", error_code=30003)
    login_as()
    page = client.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assert 'class="delivery delivery-undelivered"' in page
    assert "Delivery: 30003: Unreachable destination handset" in page
