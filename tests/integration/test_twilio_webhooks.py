"""Twilio's inbound webhooks through the app: signatures, dedupe, WhatsApp, MMS media, STOP/START, identity."""

import logging

import pytest
import sqlalchemy as sa
from werkzeug.datastructures import MultiDict

from channels.messages import ChannelName, IdentityKind, SenderIdentity
from helpdesk.customers import find_identity, resolve_customer
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Attachment, Customer, Message, QuarantinedMessage, TicketEvent
from helpdesk.outbound import ReplyRefused, reply
from tests.factories import make_agent, make_inbound
from tests.fakes.twilio_emulator import new_sid, running_twilio_emulator, twilio_signature

pytestmark = pytest.mark.integration

#: The address Twilio calls, behind a reverse proxy: not the Host the test client sends (localhost).
PUBLIC_URL = "https://helpdesk.example.com"
SMS_PATH = "/channels/twilio/sms"


@pytest.fixture
def twilio(app, monkeypatch):
    with running_twilio_emulator() as emulator:
        for key, value in emulator.config(PUBLIC_URL).items():
            monkeypatch.setitem(app.config, key, value)
        yield emulator


def sms_form(twilio, **overrides):
    form = {"MessageSid": new_sid("SM"), "SmsSid": "", "AccountSid": twilio.account_sid, "From": "+46701234567",
            "To": "+15005550006", "Body": "My parcel never came", "NumMedia": "0", "ApiVersion": "2010-04-01"}
    form.update(overrides)
    return form


def post_signed(client, twilio, form, path=SMS_PATH, *, signed_url=None, signature=None, order=None):
    """POST `form` to `path` signed as Twilio signs it for `signed_url` (the public URL + path by default)."""
    if signature is None:
        signature = twilio_signature(twilio.auth_token, signed_url or PUBLIC_URL + path, form)
    items = list(form.items()) if order is None else order(list(form.items()))
    headers = {} if signature == "" else {"X-Twilio-Signature": signature}
    return client.post(path, data=MultiDict(items), headers=headers)


def count(model) -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def stored_messages() -> list[Message]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(Message).order_by(Message.id)))


def test_a_signed_text_is_stored_and_answered_with_empty_twiml(client, twilio):
    form = sms_form(twilio)
    response = post_signed(client, twilio, form)
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert response.get_data(as_text=True).endswith("<Response />")
    [message] = stored_messages()
    assert (message.channel, message.address, message.text) == (ChannelName.SMS, "+46701234567",
                                                                 "My parcel never came")
    assert (message.dedupe_key, message.external_id) == (f"sms:{form['MessageSid']}", form["MessageSid"])
    assert message.ticket.channel is ChannelName.SMS


@pytest.mark.parametrize("forgery", ["wrong token", "other url", "tampered body", "added parameter",
                                     "no header", "empty header", "unknown account"])
def test_a_forged_or_unsigned_webhook_is_refused_logged_and_stores_nothing(client, twilio, forgery, caplog):
    form = sms_form(twilio)
    signature = None
    signed_url = None
    if forgery == "wrong token":
        signature = twilio_signature("not-the-token", PUBLIC_URL + SMS_PATH, form)
    elif forgery == "other url":
        signed_url = "http://localhost" + SMS_PATH  # the Host header's URL, not the one Twilio calls
    elif forgery == "tampered body":
        signature = twilio_signature(twilio.auth_token, PUBLIC_URL + SMS_PATH, form)
        form["Body"] = "Send the refund to account 1234"
    elif forgery == "added parameter":
        signature = twilio_signature(twilio.auth_token, PUBLIC_URL + SMS_PATH, form)
        form["NumMedia"], form["MediaUrl0"] = "1", "https://api.twilio.com/evil"
    elif forgery in ("no header", "empty header"):
        signature = ""
    elif forgery == "unknown account":
        form["AccountSid"] = "AC" + "0" * 32
    with caplog.at_level(logging.WARNING, logger="channels.sms.twilio"):
        if forgery == "empty header":
            response = client.post(SMS_PATH, data=form, headers={"X-Twilio-Signature": ""})
        else:
            response = post_signed(client, twilio, form, signed_url=signed_url, signature=signature)
    assert response.status_code == 403
    assert any("refused a Twilio webhook" in record.getMessage() for record in caplog.records)
    assert count(Message) == 0 and count(Customer) == 0 and count(QuarantinedMessage) == 0


def test_the_signature_covers_the_query_string_twilio_called(client, twilio):
    path = SMS_PATH + "?account=support&lang=sv"
    form = sms_form(twilio)
    assert post_signed(client, twilio, form, path=path, signed_url=PUBLIC_URL + SMS_PATH).status_code == 403
    assert post_signed(client, twilio, form, path=path).status_code == 200
    assert count(Message) == 1


def test_parameters_in_any_order_validate(client, twilio):
    form = sms_form(twilio, Body="Order does not matter", ProfileName="", NumSegments="1")
    response = post_signed(client, twilio, form, order=lambda items: list(reversed(items)))
    assert response.status_code == 200
    assert [m.text for m in stored_messages()] == ["Order does not matter"]


def test_the_same_message_sid_posted_three_times_is_stored_once(client, twilio):
    form = sms_form(twilio)
    for _ in range(3):
        assert post_signed(client, twilio, form).status_code == 200
    [message] = stored_messages()
    assert message.dedupe_key == f"sms:{form['MessageSid']}"


@pytest.mark.parametrize("path", [SMS_PATH, "/channels/twilio/whatsapp"])
def test_a_whatsapp_message_is_stored_on_the_whatsapp_channel(client, twilio, path):
    form = sms_form(twilio, From="whatsapp:+46701234567", To="whatsapp:+14155238886", ProfileName="Maria Lopez",
                    WaId="46701234567")
    assert post_signed(client, twilio, form, path=path).status_code == 200
    [message] = stored_messages()
    assert (message.channel, message.address) == (ChannelName.WHATSAPP, "+46701234567")
    assert message.dedupe_key == f"whatsapp:{form['MessageSid']}"
    assert message.author_customer.display_name == "Maria Lopez"


def test_texts_from_one_number_join_the_open_sms_ticket(client, twilio):
    post_signed(client, twilio, sms_form(twilio, Body="Hi"))
    post_signed(client, twilio, sms_form(twilio, Body="Anyone there?"))
    first, second = stored_messages()
    assert first.ticket_id == second.ticket_id


def test_mms_media_is_downloaded_with_the_account_credentials(client, twilio):
    photo = b"\xff\xd8\xff\xe0 a small jpeg"
    form = sms_form(twilio, Body="Here is the damage", NumMedia="1", MediaUrl0=twilio.add_media(photo, "image/jpeg"),
                    MediaContentType0="image/jpeg")
    assert post_signed(client, twilio, form).status_code == 200
    [message] = stored_messages()
    [attachment] = message.attachments
    assert (attachment.filename, attachment.content_type, attachment.size) == ("media-1.jpg", "image/jpeg",
                                                                               len(photo))
    assert attachment.refused_reason is None
    downloads = [r for r in twilio.requests if r.method == "GET"]
    assert len(downloads) == 1 and downloads[0].authorized


def test_media_that_cannot_be_fetched_leaves_a_note_and_the_text_is_stored(client, twilio, app, monkeypatch):
    monkeypatch.setitem(app.config, "TWILIO_MEDIA_MAX_BYTES", 1000)
    good = twilio.add_media(b"%PDF-1.4 invoice", "application/pdf")
    missing = twilio.add_media(b"", "image/png").rsplit("/", 1)[0] + "/ME" + "0" * 32
    too_big = twilio.add_media(b"x" * 5000, "video/mp4")
    html = twilio.add_media(b"<script>alert(1)</script>", "text/html")
    elsewhere = "https://attacker.example.com/steal-credentials"
    form = sms_form(twilio, Body="See attached", NumMedia="5")
    for index, (url, kind) in enumerate([(good, "application/pdf"), (missing, "image/png"), (too_big, "video/mp4"),
                                         (html, "text/html"), (elsewhere, "image/jpeg")]):
        form[f"MediaUrl{index}"], form[f"MediaContentType{index}"] = url, kind
    assert post_signed(client, twilio, form).status_code == 200

    [message] = stored_messages()
    assert message.text == "See attached"
    by_name = {a.filename: a for a in message.attachments}
    assert by_name["media-1.pdf"].refused_reason is None and by_name["media-1.pdf"].size == 16
    assert "HTTP 404" in by_name["media-2.png"].refused_reason
    assert "1000-byte limit" in by_name["media-3.mp4"].refused_reason
    assert "text/html is not accepted" in by_name["media-4.html"].refused_reason
    assert "not a Twilio media URL" in by_name["media-5.jpg"].refused_reason
    events = db.session.scalars(sa.select(TicketEvent).where(TicketEvent.kind == "attachment.refused")).all()
    assert {event.data["media_url"] for event in events} == {missing, too_big, html, elsewhere}
    # Credentials only ever went to the Twilio API host (the emulator), never elsewhere.
    assert all(r.authorized for r in twilio.requests)


def test_stop_opts_the_number_out_and_replies_are_refused_until_start(client, twilio):
    agent = make_agent()
    db.session.commit()
    post_signed(client, twilio, sms_form(twilio, Body="Where is my order?"))
    [message] = stored_messages()
    ticket = message.ticket

    post_signed(client, twilio, sms_form(twilio, Body="STOP"))
    db.session.rollback()
    identity = find_identity(IdentityKind.PHONE, "+46701234567")
    assert identity.opted_out_at is not None
    with pytest.raises(ReplyRefused, match="texted STOP .* until the customer texts START"):
        reply(ticket, agent, "Your order ships tomorrow.")

    post_signed(client, twilio, sms_form(twilio, Body="start"))
    db.session.rollback()
    assert find_identity(IdentityKind.PHONE, "+46701234567").opted_out_at is None
    sent = reply(ticket, agent, "Your order ships tomorrow.")
    assert sent.delivery_status is not None
    kinds = db.session.scalars(sa.select(TicketEvent.kind).where(TicketEvent.ticket_id == ticket.id)).all()
    assert "customer.opted_out" in kinds and "customer.opted_in" in kinds


def test_a_redelivered_stop_is_applied_once_and_help_changes_nothing(client, twilio):
    stop = sms_form(twilio, Body="Stop")
    for _ in range(2):
        post_signed(client, twilio, stop)
    post_signed(client, twilio, sms_form(twilio, Body="HELP"))
    db.session.rollback()
    events = db.session.scalars(sa.select(TicketEvent).where(TicketEvent.kind == "customer.opted_out")).all()
    assert len(events) == 1
    assert find_identity(IdentityKind.PHONE, "+46701234567").opted_out_at is not None
    assert [m.text for m in stored_messages()] == ["Stop", "HELP"]


def test_the_ticket_page_shows_an_opted_out_number(client, twilio, login_as):
    login_as()
    post_signed(client, twilio, sms_form(twilio, Body="Hello"))
    post_signed(client, twilio, sms_form(twilio, Body="STOP"))
    [message, _] = stored_messages()
    html = client.get(f"/tickets/{message.ticket.number}").get_data(as_text=True)
    assert "opted out" in html and "+46701234567" in html


def test_a_number_known_from_email_resolves_to_the_same_customer(client, twilio):
    known = resolve_customer(SenderIdentity(IdentityKind.EMAIL, "maria@example.org", "Maria Lopez"),
                             (SenderIdentity(IdentityKind.PHONE, "+46701234567"),))
    db.session.commit()
    known_id = known.id
    post_signed(client, twilio, sms_form(twilio, From="+46701234567"))
    [message] = stored_messages()
    assert message.author_customer_id == known_id
    assert count(Customer) == 1


def test_a_signed_webhook_from_a_short_code_is_quarantined_not_lost(client, twilio):
    response = post_signed(client, twilio, sms_form(twilio, From="TWILIO", Body="Your code is 1234"))
    assert response.status_code == 200
    assert count(Message) == 0
    [row] = db.session.scalars(sa.select(QuarantinedMessage)).all()
    assert row.source == "twilio webhook" and b"Your+code+is+1234" in row.raw


def test_the_webhooks_are_rate_limited(client, twilio, app, monkeypatch):
    monkeypatch.setitem(app.config, "TWILIO_WEBHOOK_RATE_LIMIT", "2 per minute")
    statuses = [post_signed(client, twilio, sms_form(twilio)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_with_no_twilio_account_every_webhook_is_refused(client):
    form = {"MessageSid": new_sid("SM"), "AccountSid": "AC1", "From": "+46701234567", "Body": "hi"}
    response = client.post(SMS_PATH, data=form, headers={"X-Twilio-Signature": twilio_signature("x", "y", form)})
    assert response.status_code == 403
    assert count(Message) == 0


def test_a_text_from_a_number_known_by_email_opens_a_text_ticket_for_the_same_customer(client, twilio):
    ingest(make_inbound(sender=SenderIdentity(IdentityKind.EMAIL, "maria@example.org"),
                        other_identities=(SenderIdentity(IdentityKind.PHONE, "+46701234567"),)))
    post_signed(client, twilio, sms_form(twilio))
    email, sms = stored_messages()
    assert email.author_customer_id == sms.author_customer_id
    assert email.ticket_id != sms.ticket_id
    assert count(Attachment) == 0
