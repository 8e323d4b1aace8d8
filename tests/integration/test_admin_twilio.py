"""Admins configure Twilio accounts in the UI: who may, validation naming the field, the auth token kept secret,
and an account saved there used at once (webhook signatures, media downloads, sending), the environment's
TWILIO_* account applying when none is saved."""

import pathlib
import re
import time

import pytest
import sqlalchemy as sa
from werkzeug.datastructures import MultiDict

from channels.messages import ChannelName, DeliveryStatus
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import ChannelAccount, Message, OutboxItem, OutboxState
from helpdesk.models.base import utcnow
from helpdesk.outbound import deliver_due, reply
from helpdesk.twilio_accounts import TwilioAccountInput, save_twilio_account, saved_accounts
from tests.admin_forms import form_with
from tests.conftest import TEST_PASSWORD
from tests.factories import make_agent, make_inbound
from tests.fakes.twilio_emulator import new_sid, running_twilio_emulator, twilio_signature
from tests.servers import free_port, login_session, running_server, wait_for_text

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("forget_kept_twilio_accounts")]

PUBLIC_URL = "https://helpdesk.example.com"
SMS_PATH = "/channels/twilio/sms"
MARIA = "+46701234567"
PAGES = ["/admin/channels/twilio", "/admin/channels/twilio/new", "/admin/channels/twilio/{account_id}"]
NO_ENVIRONMENT_ACCOUNT = {"TWILIO_ACCOUNT_SID": None, "TWILIO_AUTH_TOKEN": None, "TWILIO_FROM_NUMBER": None,
                          "TWILIO_MESSAGING_SERVICE_SID": None, "TWILIO_WHATSAPP_FROM": None}


@pytest.fixture
def twilio(app, monkeypatch):
    """The emulator, with no TWILIO_* account configured: only what admins save is used."""
    with running_twilio_emulator() as emulator:
        for key, value in {**NO_ENVIRONMENT_ACCOUNT, "TWILIO_API_BASE_URL": emulator.base_url,
                           "HELPDESK_PUBLIC_URL": PUBLIC_URL}.items():
            monkeypatch.setitem(app.config, key, value)
        yield emulator


def account_form(twilio=None, **overrides) -> dict:
    defaults = {
        "name": "Support line",
        "account_sid": twilio.account_sid if twilio else "AC" + "a1" * 16,
        "auth_token": twilio.auth_token if twilio else "f" * 32,
        "from_number": "+1 500-555-0006",
        "messaging_service_sid": "",
        "whatsapp_from": "whatsapp:+14155238886",
        "is_enabled": "y",
    }
    return form_with(defaults, overrides)


def stored_account(name: str = "Support line") -> ChannelAccount:
    db.session.rollback()
    return db.session.scalars(sa.select(ChannelAccount).where(ChannelAccount.name == name)).one()


def make_account(twilio=None, **overrides) -> ChannelAccount:
    form = account_form(twilio, **overrides)
    account = save_twilio_account(None, TwilioAccountInput(
        name=form["name"], account_sid=form["account_sid"], auth_token=form["auth_token"],
        from_number=form.get("from_number"), whatsapp_from=form.get("whatsapp_from"),
        is_enabled=form.get("is_enabled") == "y"))
    db.session.commit()
    return account


def raw_secrets(account_id: int) -> str:
    return db.session.execute(sa.text("SELECT secrets FROM channel_account WHERE id = :id"),
                              {"id": account_id}).scalar_one()


def count_accounts() -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count()).select_from(ChannelAccount))


def post_text(client, twilio, **extra):
    """POST a text to the webhook, signed with `twilio`'s auth token as Twilio signs it."""
    form = {"MessageSid": new_sid("SM"), "AccountSid": twilio.account_sid, "From": MARIA, "To": "+15005550006",
            "Body": "My parcel never came", "NumMedia": "0", **extra}
    signature = twilio_signature(twilio.auth_token, PUBLIC_URL + SMS_PATH, form)
    return client.post(SMS_PATH, data=MultiDict(form), headers={"X-Twilio-Signature": signature}), form


# --- who may ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["agent", "lead"])
@pytest.mark.parametrize("path", PAGES)
def test_twilio_pages_are_forbidden_to_agents_and_leads(client, login_as, role, path):
    account = make_account()
    login_as(role)
    assert client.get(path.format(account_id=account.id)).status_code == 403


@pytest.mark.parametrize("role", ["agent", "lead"])
def test_agents_and_leads_cannot_add_or_change_twilio_accounts(client, login_as, post, role):
    account = make_account()
    login_as(role)
    assert post("/admin/channels/twilio/new", **account_form(name="Sneaky")).status_code == 403
    assert post(f"/admin/channels/twilio/{account.id}", **account_form(from_number="+14155550100")).status_code == 403
    assert count_accounts() == 1
    assert stored_account().settings["from_number"] == "+15005550006"


def test_twilio_pages_need_a_login(client):
    for path in PAGES:
        response = client.get(path.format(account_id=1))
        assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_only_admins_see_the_twilio_link(client, login_as, auth):
    login_as("lead")
    assert "/admin/channels/twilio" not in client.get("/inbox").get_data(as_text=True)
    auth.logout()
    login_as("admin")
    assert "/admin/channels/twilio" in client.get("/inbox").get_data(as_text=True)


# --- saving -----------------------------------------------------------------------------------------


def test_an_admin_adds_an_account_and_the_auth_token_is_never_shown_back(client, admin, post):
    token = "0123456789abcdef" * 2
    response = post("/admin/channels/twilio/new", **account_form(auth_token=token, account_sid="AC" + "AB12" * 8))
    assert response.status_code == 302, response.get_data(as_text=True)

    account = stored_account()
    assert account.channel is ChannelName.SMS and account.is_enabled
    assert account.settings == {"provider": "twilio", "account_sid": "AC" + "ab12" * 8, "from_number": "+15005550006",
                                "messaging_service_sid": None, "whatsapp_from": "+14155238886"}
    assert account.secrets == {"auth_token": token}
    assert token not in raw_secrets(account.id)  # encrypted at rest
    listing = client.get("/admin/channels/twilio").get_data(as_text=True)
    assert "Support line" in listing and "AC" + "ab12" * 8 in listing and token not in listing
    assert "go out through <strong>Support line</strong>" in listing
    edit = client.get(f"/admin/channels/twilio/{account.id}").get_data(as_text=True)
    assert "+15005550006" in edit and token not in edit and "leave empty to keep the stored one" in edit


@pytest.mark.parametrize(("field", "value", "complaint"), [
    ("account_sid", "SK" + "0" * 32, "An account SID is AC followed by 32 hexadecimal characters"),
    ("account_sid", "", "This field is required"),
    ("auth_token", "", "A new account needs its auth token"),
    ("auth_token", "has spaces in it, clearly", "no spaces"),
    ("from_number", "0701234567", "international format"),
    ("from_number", "+1 555", "not a valid phone number"),
    ("whatsapp_from", "whatsapp:+99 123", "not a phone number in international format"),
    ("messaging_service_sid", "MG123", "A Messaging Service SID is MG followed by 32 hexadecimal characters"),
    ("name", "", "This field is required"),
])
def test_a_bad_field_is_named_and_nothing_is_stored(client, admin, post, field, value, complaint):
    secret = "a-secret-token-that-must-not-leak"
    form = account_form(**{"auth_token": secret, field: value})
    response = post("/admin/channels/twilio/new", **form)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert complaint in page
    assert f'id="{field}"' in page.split(complaint)[0].rsplit("<label", 1)[-1]  # shown under its own field
    assert secret not in page
    assert count_accounts() == 0


def test_an_account_needs_some_sender(client, admin, post):
    response = post("/admin/channels/twilio/new", **account_form(from_number="", whatsapp_from=""))
    assert response.status_code == 400
    assert "Give a sending number, a Messaging Service SID or a WhatsApp sender" in response.get_data(as_text=True)
    assert post("/admin/channels/twilio/new", **account_form(
        from_number="", whatsapp_from="", messaging_service_sid="MG" + "c3" * 16)).status_code == 302
    assert stored_account().settings["messaging_service_sid"] == "MG" + "c3" * 16


def test_names_and_account_sids_are_not_shared(client, admin, post):
    make_account(name="Support line")
    page = post("/admin/channels/twilio/new", **account_form(account_sid="AC" + "b2" * 16)).get_data(as_text=True)
    assert "Another channel account already uses this name." in page
    page = post("/admin/channels/twilio/new", **account_form(name="Second line")).get_data(as_text=True)
    assert "The account &#39;Support line&#39; already has this account SID." in page
    assert count_accounts() == 1


def test_an_empty_token_on_edit_keeps_the_stored_one_and_a_new_one_replaces_it(client, admin, post):
    account = make_account(auth_token="1" * 32)
    response = post(f"/admin/channels/twilio/{account.id}",
                    **account_form(auth_token="", from_number="+14155550100", is_enabled=None))
    assert response.status_code == 302
    account = stored_account()
    assert account.secrets == {"auth_token": "1" * 32}
    assert (account.settings["from_number"], account.is_enabled) == ("+14155550100", False)

    assert post(f"/admin/channels/twilio/{account.id}", **account_form(auth_token="2" * 32)).status_code == 302
    assert stored_account().secrets == {"auth_token": "2" * 32}


def test_a_bad_edit_changes_nothing(client, admin, post):
    account = make_account(auth_token="1" * 32)
    response = post(f"/admin/channels/twilio/{account.id}",
                    **account_form(name="Renamed", auth_token="3" * 32, from_number="not a number"))
    assert response.status_code == 400
    assert "3" * 32 not in response.get_data(as_text=True)
    account = stored_account()
    assert account.secrets == {"auth_token": "1" * 32}
    assert account.settings["from_number"] == "+15005550006"


def test_another_kind_of_account_cannot_be_edited_here(client, admin):
    other = ChannelAccount(channel=ChannelName.EMAIL, name="Mailbox", settings={}, secrets={"password": "x"})
    db.session.add(other)
    db.session.commit()
    assert client.get(f"/admin/channels/twilio/{other.id}").status_code == 404
    assert client.get("/admin/channels/twilio/9999").status_code == 404


# --- used at once -----------------------------------------------------------------------------------


def test_an_account_saved_in_the_ui_receives_fetches_media_and_sends_with_no_restart(client, twilio, admin, post,
                                                                                   auth):
    # Before: no account, so a correctly signed webhook is refused.
    assert post_text(client, twilio)[0].status_code == 403
    assert post("/admin/channels/twilio/new", **account_form(twilio)).status_code == 302

    photo = b"\xff\xd8\xff\xe0 photo"
    response, form = post_text(client, twilio, NumMedia="1", MediaUrl0=twilio.add_media(photo, "image/jpeg"),
                               MediaContentType0="image/jpeg")
    assert response.status_code == 200
    db.session.rollback()
    inbound = db.session.scalars(sa.select(Message).where(Message.external_id == form["MessageSid"])).one()
    assert [(a.size, a.refused_reason) for a in inbound.attachments] == [(len(photo), None)]

    ticket_number = inbound.ticket.number
    token = auth.csrf_token(f"/tickets/{ticket_number}")
    client.post(f"/tickets/{ticket_number}/reply", data={"text": "A new one ships today.", "csrf_token": token})
    [created] = twilio.created  # sent by the job the reply queued (inline in tests)
    assert (created.form["To"], created.form["From"]) == (MARIA, "+15005550006")
    assert created.form["StatusCallback"].startswith(f"{PUBLIC_URL}/channels/twilio/status?ref=")
    assert all(request.authorized for request in twilio.requests)  # the token saved in the UI

    # Twilio's delivery report, to the URL the emulator was given (the public one), through the test client.
    params = {"MessageSid": created.sid, "MessageStatus": "delivered", "AccountSid": twilio.account_sid}
    url = created.form["StatusCallback"]
    response = client.post(url.removeprefix(PUBLIC_URL), data=params,
                           headers={"X-Twilio-Signature": twilio_signature(twilio.auth_token, url, params)})
    assert response.status_code == 204
    db.session.rollback()
    outgoing = db.session.scalars(sa.select(Message).where(Message.external_id == created.sid)).one()
    assert outgoing.delivery_status is DeliveryStatus.DELIVERED


def test_the_environment_account_applies_until_an_admin_saves_one(client, app, monkeypatch):
    with running_twilio_emulator() as from_environment, running_twilio_emulator() as from_ui:
        for key, value in {**from_environment.config(PUBLIC_URL), "TWILIO_WHATSAPP_FROM": None}.items():
            monkeypatch.setitem(app.config, key, value)
        monkeypatch.setitem(app.config, "TWILIO_API_BASE_URL", None)
        registry = app.extensions["helpdesk.channels"]
        agent = make_agent()
        db.session.commit()

        def send_reply(api):
            monkeypatch.setitem(app.config, "TWILIO_API_BASE_URL", api.base_url)
            ticket = ingest(make_inbound(channel="sms")).ticket
            message = reply(ticket, agent, "Hello")
            deliver_due(registry)
            db.session.rollback()
            return db.session.get(Message, message.id)

        assert send_reply(from_environment).external_id == from_environment.created[-1].sid
        make_account(from_ui)
        assert send_reply(from_ui).external_id == from_ui.created[-1].sid
        assert len(from_environment.created) == 1
        # Webhooks signed by either account are accepted: the environment's account still applies to its SID.
        for account in (from_environment, from_ui):
            assert post_text(client, account)[0].status_code == 200

        account = stored_account()
        account.is_enabled = False
        db.session.commit()
        assert send_reply(from_environment).external_id == from_environment.created[-1].sid
        assert len(from_environment.created) == 2 and len(from_ui.created) == 1
        assert post_text(client, from_ui)[0].status_code == 403  # disabled: its webhooks are refused


def test_replies_wait_while_the_only_account_is_disabled_and_are_logged_locally_with_none(twilio, app):
    agent = make_agent()
    db.session.commit()
    registry = app.extensions["helpdesk.channels"]
    outgoing = pathlib.Path(app.config["HELPDESK_OUTGOING_FOLDER"]) / "sms.log"
    before = outgoing.read_text() if outgoing.exists() else ""

    local = reply(ingest(make_inbound(channel="sms")).ticket, agent, "Logged locally")
    deliver_due(registry)
    db.session.rollback()
    assert db.session.get(Message, local.id).delivery_status is DeliveryStatus.SENT
    assert "Logged locally" in outgoing.read_text().removeprefix(before)

    make_account(twilio, is_enabled="")
    waiting = reply(ingest(make_inbound(channel="sms")).ticket, agent, "Waits")
    deliver_due(registry)
    db.session.rollback()
    item = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.message_id == waiting.id)).one()
    assert item.state is OutboxState.PENDING and item.next_attempt_at > utcnow()
    assert "'Support line' that sends SMS replies is disabled" in db.session.get(Message, waiting.id).delivery_error
    assert "Waits" not in outgoing.read_text() and twilio.created == []

    account = stored_account()
    account.is_enabled = True
    item = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.message_id == waiting.id)).one()
    item.next_attempt_at = utcnow()
    db.session.commit()
    deliver_due(registry)
    assert [created.form["Body"] for created in twilio.created] == ["Waits"]


@pytest.fixture
def served(app, app_config, tmp_path):
    """A helpdesk served on its own port with no Twilio account at all, and the emulator it will be told about."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with running_twilio_emulator() as twilio:
        env = {"DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "SECRET_KEY": app_config["SECRET_KEY"],
               "HELPDESK_INSTANCE_PATH": str(tmp_path / "instance"), "REDIS_URL": "", "HELPDESK_PUBLIC_URL": base_url,
               "TWILIO_API_BASE_URL": twilio.base_url, "TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": ""}
        with running_server(env, port, "--without-jobs", log_path=tmp_path / "server.log"):
            yield base_url, twilio
        twilio.join_callbacks()


def csrf_token(session, url: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', session.get(url, timeout=10).text).group(1)


def test_a_running_server_uses_the_account_saved_in_its_admin_pages_at_once(served):
    base_url, twilio = served
    make_agent(role="admin", email="root@example.com", password=TEST_PASSWORD)
    db.session.commit()
    admin = login_session(base_url, "root@example.com", TEST_PASSWORD)
    text = {"MessageSid": new_sid("SM"), "AccountSid": twilio.account_sid, "From": MARIA, "To": "+15005550006",
            "Body": "Where is my order?", "NumMedia": "0"}
    assert twilio.post_webhook(base_url + SMS_PATH, text).status_code == 403  # no account yet

    token = csrf_token(admin, f"{base_url}/admin/channels/twilio/new")
    response = admin.post(f"{base_url}/admin/channels/twilio/new", data={**account_form(twilio), "csrf_token": token},
                          allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    assert twilio.post_webhook(base_url + SMS_PATH, text).status_code == 200

    inbound = wait_for_text(text["MessageSid"])
    ticket_url = f"{base_url}/tickets/{inbound.ticket.number}"
    twilio.auto_report = ("sent", "delivered")
    admin.post(f"{ticket_url}/reply", data={"text": "It ships today.", "csrf_token": csrf_token(admin, ticket_url)},
               timeout=10)

    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline and status is not DeliveryStatus.DELIVERED:
        time.sleep(0.2)
        db.session.rollback()
        status = db.session.scalar(sa.select(Message.delivery_status).where(Message.text == "It ships today."))
    assert status is DeliveryStatus.DELIVERED
    twilio.join_callbacks()
    [created] = twilio.created
    assert (created.form["To"], created.form["From"], created.form["Body"]) == (MARIA, "+15005550006",
                                                                               "It ships today.")
    assert created.callbacks == [("sent", 204), ("delivered", 204)]  # signed with the saved token, accepted
    assert all(request.authorized for request in twilio.requests)


def test_saved_accounts_are_kept_briefly_and_a_change_made_here_is_seen_at_once(app, monkeypatch):
    monkeypatch.setitem(app.config, "TWILIO_ACCOUNTS_CACHE_SECONDS", 0.5)
    account = make_account()
    assert [saved.name for saved in saved_accounts()] == ["Support line"]
    # Another process renames it: this one keeps what it read until the cache time is over.
    db.session.execute(sa.text("UPDATE channel_account SET name = 'Renamed elsewhere' WHERE id = :id"),
                       {"id": account.id})
    db.session.commit()
    assert [saved.name for saved in saved_accounts()] == ["Support line"]
    time.sleep(0.6)
    assert [saved.name for saved in saved_accounts()] == ["Renamed elsewhere"]

    monkeypatch.setitem(app.config, "TWILIO_ACCOUNTS_CACHE_SECONDS", 3600)
    account = stored_account("Renamed elsewhere")
    account.is_enabled = False
    db.session.commit()
    assert [saved.is_enabled for saved in saved_accounts()] == [False]
