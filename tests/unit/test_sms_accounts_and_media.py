"""Pure parts of Twilio accounts and media retries: backoff, error classes, URLs, numbers, the routing channel."""

import datetime as dt

import pytest

from channels.messages import ChannelName, DeliveryResult, DeliveryStatus, OutboundMessage
from channels.sms.twilio import (
    NoSendingAccount,
    TwilioAccountChannel,
    TwilioChannel,
    TwilioSettings,
    is_temporary_media_status,
    media_account_sid,
)
from helpdesk.sms import MAX_MEDIA_RETRY_DELAY, media_retry_delay
from helpdesk.twilio_accounts import e164_or_error

ACCOUNT = "AC" + "0123456789abcdef" * 2

pytestmark = pytest.mark.usefixtures("no_app")


@pytest.fixture
def no_app():
    """Pure code under test: skip the app context and the table clean-up after each test."""


@pytest.mark.parametrize(("failed", "seconds"), [(1, 60), (2, 120), (3, 240), (6, 1920), (0, 60)])
def test_media_retries_wait_longer_after_each_failure(failed, seconds):
    assert media_retry_delay(failed, 60) == dt.timedelta(seconds=seconds)


def test_the_wait_between_media_retries_is_capped():
    assert media_retry_delay(40, 60) == MAX_MEDIA_RETRY_DELAY == dt.timedelta(hours=6)


@pytest.mark.parametrize(("status", "temporary"), [(500, True), (502, True), (503, True), (429, True), (401, True),
                                                   (404, False), (403, False), (400, False), (410, False)])
def test_media_download_statuses_worth_retrying(status, temporary):
    assert is_temporary_media_status(status) is temporary


@pytest.mark.parametrize(("url", "sid"), [
    (f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Messages/MM1/Media/ME1", ACCOUNT),
    ("https://api.twilio.com/2010-04-01/Accounts/ACnothex/Messages/MM1/Media/ME1", None),
    ("https://attacker.example.com/steal", None),
])
def test_the_account_of_a_media_url(url, sid):
    assert media_account_sid(url) == sid


@pytest.mark.parametrize(("raw", "stored"), [
    ("+1 500-555-0006", "+15005550006"),
    ("whatsapp:+14155238886", "+14155238886"),
    ("+46 70 123 45 67", "+46701234567"),
    ("", None),
])
def test_sender_numbers_are_stored_in_e164(raw, stored):
    errors = {}
    assert e164_or_error(raw, errors, "from_number") == stored
    assert errors == {}


@pytest.mark.parametrize(("raw", "complaint"), [
    ("0701234567", "international format"),
    ("+1 555", "not a valid phone number"),
    ("call us", "international format"),
])
def test_a_bad_sender_number_is_named_with_the_reason(raw, complaint):
    errors = {}
    assert e164_or_error(raw, errors, "whatsapp_from") is None
    assert complaint in errors["whatsapp_from"]


class RecordingChannel:
    def __init__(self, name):
        self.name = name
        self.sent = []

    def send(self, message):
        self.sent.append(message)
        return DeliveryResult(DeliveryStatus.SENT, provider_id="local-1")


def test_the_routing_channel_logs_locally_with_no_account_and_waits_on_a_disabled_one():
    local = RecordingChannel(ChannelName.SMS)
    answers = [None, NoSendingAccount("the Twilio account 'Main' that sends SMS replies is disabled")]

    def settings_for(channel):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    channel = TwilioAccountChannel(ChannelName.SMS, settings_for, fallback=local)
    message = OutboundMessage(ChannelName.SMS, "+46701234567", "Hello")
    assert channel.send(message).provider_id == "local-1" and local.sent == [message]
    result = channel.send(message)
    assert (result.status, result.is_temporary) == (DeliveryStatus.FAILED, True)
    assert "is disabled" in result.error and len(local.sent) == 1


def test_the_routing_channel_keeps_one_client_per_account_and_closes_old_ones():
    channel = TwilioAccountChannel(ChannelName.SMS, lambda name: None, fallback=RecordingChannel(ChannelName.SMS))
    first = TwilioSettings(ACCOUNT, "token-one", from_number="+15005550006")
    assert channel.channel_for(first) is channel.channel_for(first)
    assert isinstance(channel.channel_for(first), TwilioChannel)
    changed = TwilioSettings(ACCOUNT, "token-two", from_number="+15005550006")
    assert channel.channel_for(changed) is not channel.channel_for(first)
    for index in range(TwilioAccountChannel.MAX_CLIENTS + 2):
        channel.channel_for(TwilioSettings(ACCOUNT, f"token-{index}", from_number="+15005550006"))
    assert len(channel._channels) == TwilioAccountChannel.MAX_CLIENTS
    channel.close()
    assert channel._channels == {}
