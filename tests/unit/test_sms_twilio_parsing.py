"""Twilio webhooks without I/O: the test signer against Twilio's own vectors, inbound and status parsing."""

import json
import pathlib
import urllib.parse

import pytest
from twilio.request_validator import RequestValidator

from channels.messages import ChannelName, DeliveryStatus, IdentityKind
from channels.sms.twilio import (
    InvalidWebhook,
    Keyword,
    TwilioSettings,
    describe_error,
    is_allowed_media_type,
    keyword_of,
    parse_inbound,
    parse_status,
)
from tests.fakes.twilio_emulator import twilio_signature

CORPUS = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "twilio-request-validator"


def signature_vectors():
    path = CORPUS / "request_validator_vectors.json"
    if not path.is_file():
        pytest.skip(f"the shared Twilio vectors are not next to the repository ({CORPUS})")
    return [vector for vector in json.loads(path.read_text()) if "params" in vector]


def test_the_test_signer_reproduces_twilios_published_signatures():
    vectors = signature_vectors()
    assert len(vectors) == 3
    for vector in vectors:
        params = [tuple(pair) for pair in vector["params"]]
        url = vector["url"]
        if "default_port" in vector["name"]:
            # Twilio sometimes signs with the default port spelled out; the validator tries both forms.
            parts = urllib.parse.urlsplit(url)
            port = 443 if parts.scheme == "https" else 80
            url = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))
        assert twilio_signature(vector["auth_token"], url, params) == vector["signature"], vector["name"]


def test_the_test_signer_and_twilios_validator_agree_on_every_vector():
    for vector in signature_vectors():
        validator = RequestValidator(vector["auth_token"])
        params = _multidict(vector["params"])
        assert validator.validate(vector["url"], params, vector["signature"]) is vector["expect_valid"]
        reordered = _multidict(list(reversed(vector["params"])))
        assert validator.validate(vector["url"], reordered, twilio_signature(vector["auth_token"], vector["url"],
                                                                             [tuple(p) for p in vector["params"]]))


def test_a_signature_covers_the_query_string_and_every_parameter():
    token, url = "12345", "https://helpdesk.example.com/channels/twilio/sms?foo=1&bar=2"
    params = {"From": "+14158675309", "Body": "Hello"}
    signature = twilio_signature(token, url, params)
    validator = RequestValidator(token)
    assert validator.validate(url, params, signature)
    assert not validator.validate("https://helpdesk.example.com/channels/twilio/sms", params, signature)
    assert not validator.validate(url, {**params, "Body": "Hellp"}, signature)
    assert not validator.validate(url, params, twilio_signature("54321", url, params))


def _multidict(pairs):
    from werkzeug.datastructures import MultiDict

    return MultiDict([tuple(pair) for pair in pairs])


def inbound_form(**overrides):
    form = {"MessageSid": "SM0123456789abcdef0123456789abcdef", "AccountSid": "AC1", "From": "+46 70 123 45 67",
            "To": "+15005550006", "Body": "My parcel never came", "NumMedia": "0"}
    form.update(overrides)
    return form


def test_an_inbound_sms_becomes_a_normalized_message_that_joins_the_open_conversation():
    inbound, media = parse_inbound(inbound_form())
    message = inbound.message
    assert message.channel is ChannelName.SMS
    assert (message.sender.kind, message.sender.value) == (IdentityKind.PHONE, "+46701234567")
    assert message.dedupe_key == "sms:SM0123456789abcdef0123456789abcdef"
    assert message.external_id == "SM0123456789abcdef0123456789abcdef"
    assert message.text == "My parcel never came"
    assert message.thread.join_open_ticket_on_channel
    assert (inbound.account_sid, inbound.keyword, media) == ("AC1", None, [])


def test_a_whatsapp_message_is_recognized_by_its_address_and_keeps_the_profile_name():
    inbound, _ = parse_inbound(inbound_form(From="whatsapp:+46701234567", To="whatsapp:+14155238886",
                                            ProfileName="Maria"))
    assert inbound.message.channel is ChannelName.WHATSAPP
    assert inbound.message.sender.value == "+46701234567"
    assert inbound.message.sender.display_name == "Maria"
    assert inbound.message.dedupe_key.startswith("whatsapp:SM")


def test_media_urls_and_types_are_listed_in_order_and_capped_at_ten():
    form = inbound_form(NumMedia="12", Body="")
    for index in range(12):
        form[f"MediaUrl{index}"] = f"https://api.twilio.com/media/{index}"
        form[f"MediaContentType{index}"] = "image/jpeg"
    _, media = parse_inbound(form)
    assert [item.index for item in media] == list(range(10))
    assert media[3].url == "https://api.twilio.com/media/3"


@pytest.mark.parametrize("form", [
    inbound_form(MessageSid="", SmsSid=""),
    inbound_form(From="TWILIO"),        # an alphanumeric sender cannot be answered
    inbound_form(From="12"),
])
def test_a_webhook_without_a_sid_or_a_phone_number_is_not_a_message(form):
    with pytest.raises(InvalidWebhook):
        parse_inbound(form)


@pytest.mark.parametrize(("body", "keyword"), [
    ("STOP", Keyword.STOP), (" stop ", Keyword.STOP), ("Stop.", Keyword.STOP), ("unsubscribe", Keyword.STOP),
    ("STOPALL", Keyword.STOP), ("cancel", Keyword.STOP), ("END", Keyword.STOP), ("quit", Keyword.STOP),
    ("START", Keyword.START), ("yes", Keyword.START), ("Unstop", Keyword.START),
    ("HELP", Keyword.HELP),
    ("please stop sending me the invoice twice", None), ("Stopped working", None), ("", None),
])
def test_only_a_message_that_is_a_keyword_opts_out_or_in(body, keyword):
    assert keyword_of(body) is keyword


def test_twilios_own_opt_out_type_wins_over_the_words():
    assert keyword_of("arrêt", "STOP") is Keyword.STOP


def test_a_status_report_maps_twilios_words_and_explains_the_error_code():
    report = parse_status({"MessageSid": "SMx", "MessageStatus": "undelivered", "ErrorCode": "30003",
                           "AccountSid": "AC1"}, ref="helpdesk-abc")
    assert report.status is DeliveryStatus.UNDELIVERED
    assert report.error == "30003: Unreachable destination handset"
    assert report.ref == "helpdesk-abc"
    assert parse_status({"MessageSid": "SMx", "MessageStatus": "read"}, None).status is DeliveryStatus.DELIVERED
    assert parse_status({"MessageSid": "SMx", "MessageStatus": "receiving"}, None) is None


@pytest.mark.parametrize(("code", "text"), [
    (30001, "30001: Queue overflow"),
    ("30005", "30005: Unknown destination handset"),
    (30006, "30006: Landline or unreachable carrier"),
    (30007, "30007: Carrier violation: message filtered"),
    (21610, "21610: Unsubscribed recipient (they replied STOP)"),
    (63016, "63016: WhatsApp: outside the 24-hour window, only a template message can be sent"),
    (39999, "39999: see Twilio's error reference"),
])
def test_common_error_codes_have_a_meaning(code, text):
    assert describe_error(code) == text


def test_media_types_outside_pictures_sound_video_pdf_and_cards_are_refused():
    assert is_allowed_media_type("image/jpeg") and is_allowed_media_type("audio/ogg; codecs=opus")
    assert is_allowed_media_type("application/pdf") and is_allowed_media_type("text/vcard")
    assert not is_allowed_media_type("image/svg+xml")
    assert not is_allowed_media_type("text/html")
    assert not is_allowed_media_type("application/x-msdownload")


def test_the_status_callback_names_our_message_so_a_report_can_find_it_before_its_sid_is_known():
    settings = TwilioSettings("AC1", "token", from_number="+15005550006", public_url="https://desk.example.com/")
    assert settings.status_callback_url("helpdesk-abc") == \
        "https://desk.example.com/channels/twilio/status?ref=helpdesk-abc"
    assert "token" not in repr(settings)
