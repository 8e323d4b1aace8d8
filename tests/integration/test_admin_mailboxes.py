"""Admins configure mailboxes: who may, the password kept secret, health shown, backoff cleared on save."""

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from helpdesk.extensions import db
from helpdesk.mailboxes import configured_mailboxes, mailbox_settings
from helpdesk.models import ChannelAccount, MailboxCursor, QuarantinedMessage
from helpdesk.models.base import utcnow

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-imap-passw0rd"
PAGES = ["/admin/mailboxes", "/admin/mailboxes/new", "/admin/mailboxes/{account_id}"]


def mailbox_form(**overrides) -> dict:
    form = {
        "name": "Support inbox",
        "host": "imap.example.com",
        "port": "993",
        "security": "tls",
        "user": "support@example.com",
        "password": PASSWORD,
        "folder": "INBOX",
        "move_to": "Handled",
        "is_enabled": "y",
    }
    form.update(overrides)
    return {key: value for key, value in form.items() if value is not None}


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def make_mailbox(**settings) -> ChannelAccount:
    account = ChannelAccount(
        channel="email", name="Sales",
        settings={"host": "imap.example.com", "port": 993, "security": "tls", "user": "sales@example.com",
                  "folder": "INBOX", **settings},
        secrets={"password": PASSWORD},
    )
    db.session.add(account)
    db.session.commit()
    return account


def raw_secrets(account_id: int) -> str:
    return db.session.execute(
        sa.text("SELECT secrets FROM channel_account WHERE id = :id"), {"id": account_id}
    ).scalar_one()


def raw_settings(account_id: int) -> str:
    value = db.session.execute(
        sa.text("SELECT settings FROM channel_account WHERE id = :id"), {"id": account_id}
    ).scalar_one()
    return value if isinstance(value, str) else json.dumps(value)


@pytest.mark.parametrize("role", ["agent", "lead"])
@pytest.mark.parametrize("path", PAGES)
def test_mailbox_pages_are_forbidden_to_agents_and_leads(client, login_as, role, path):
    account = make_mailbox()
    login_as(role)
    assert client.get(path.format(account_id=account.id)).status_code == 403


@pytest.mark.parametrize("role", ["agent", "lead"])
def test_non_admins_cannot_create_or_change_mailboxes(client, login_as, post, role):
    account = make_mailbox()
    login_as(role)
    assert post("/admin/mailboxes/new", **mailbox_form()).status_code == 403
    assert post(f"/admin/mailboxes/{account.id}", **mailbox_form(host="evil.example.net")).status_code == 403
    assert count(ChannelAccount) == 1
    assert db.session.get(ChannelAccount, account.id).settings["host"] == "imap.example.com"


@pytest.mark.parametrize("path", PAGES)
def test_mailbox_pages_open_for_admins(client, admin, path):
    account = make_mailbox()
    assert client.get(path.format(account_id=account.id)).status_code == 200


def test_the_admin_menu_links_mailboxes_and_templates(client, admin):
    page = client.get("/inbox").get_data(as_text=True)
    assert 'href="/admin/mailboxes"' in page and 'href="/admin/templates"' in page


def test_an_admin_adds_a_mailbox_that_the_poller_then_uses(client, admin, post):
    response = post("/admin/mailboxes/new", **mailbox_form())
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/mailboxes"
    account = db.session.scalar(sa.select(ChannelAccount).where(ChannelAccount.name == "Support inbox"))
    settings = mailbox_settings(account)
    assert (settings.host, settings.port, settings.security, settings.user, settings.password, settings.folder,
            settings.move_to) == ("imap.example.com", 993, "tls", "support@example.com", PASSWORD, "INBOX", "Handled")
    assert [mailbox.name for mailbox in configured_mailboxes()] == ["Support inbox"]
    assert "support@example.com@imap.example.com:993" in client.get("/admin/mailboxes").get_data(as_text=True)


def test_the_password_is_stored_encrypted_and_never_shown(client, admin, post):
    post("/admin/mailboxes/new", **mailbox_form())
    account = db.session.scalar(sa.select(ChannelAccount))
    assert account.secrets == {"password": PASSWORD}
    assert PASSWORD not in raw_secrets(account.id)
    assert PASSWORD not in raw_settings(account.id) and "password" not in account.settings
    for path in ("/admin/mailboxes", f"/admin/mailboxes/{account.id}"):
        assert PASSWORD not in client.get(path).get_data(as_text=True)
    # Nor when the form comes back with an error.
    refused = post(f"/admin/mailboxes/{account.id}", **mailbox_form(port="70000")).get_data(as_text=True)
    assert PASSWORD not in refused


def test_an_empty_password_on_edit_keeps_the_stored_one_and_a_new_one_replaces_it(admin, post):
    account = make_mailbox()
    assert post(f"/admin/mailboxes/{account.id}", **mailbox_form(name="Sales", password="")).status_code == 302
    db.session.expire_all()
    assert db.session.get(ChannelAccount, account.id).secrets == {"password": PASSWORD}
    assert post(f"/admin/mailboxes/{account.id}", **mailbox_form(name="Sales", password="another-one")).status_code == 302
    db.session.expire_all()
    stored = db.session.get(ChannelAccount, account.id)
    assert stored.secrets == {"password": "another-one"}
    assert "another-one" not in raw_secrets(account.id)


def test_an_admin_edits_a_mailbox(admin, post):
    account = make_mailbox()
    response = post(f"/admin/mailboxes/{account.id}", **mailbox_form(
        name="Sales (Dovecot)", host="mail.example.org", port="", security="starttls", user="sales",
        password="", folder="Support", move_to="", is_enabled=None))
    assert response.status_code == 302
    db.session.expire_all()
    stored = db.session.get(ChannelAccount, account.id)
    assert (stored.name, stored.is_enabled) == ("Sales (Dovecot)", False)
    assert stored.settings == {"host": "mail.example.org", "port": None, "security": "starttls", "user": "sales",
                               "folder": "Support", "move_to": None}
    assert configured_mailboxes() == []  # disabled


def test_the_edit_form_shows_the_stored_settings(client, admin):
    account = make_mailbox(folder="Support", move_to="Done")
    page = client.get(f"/admin/mailboxes/{account.id}").get_data(as_text=True)
    for value in ('value="Sales"', 'value="imap.example.com"', 'value="993"', 'value="sales@example.com"',
                  'value="Support"', 'value="Done"'):
        assert value in page


@pytest.mark.parametrize("field, value, message", [
    ("port", "0", "between 1 and 65535"),
    ("port", "65536", "between 1 and 65535"),
    ("port", "imap", "Not a valid integer"),
    ("host", "", "This field is required"),
    ("host", "imaps://imap.example.com", "host name alone"),
    ("security", "ssl3", "Not a valid choice"),
    ("user", "", "This field is required"),
    ("name", "", "This field is required"),
])
@pytest.mark.parametrize("editing", [False, True])
def test_invalid_settings_are_refused_and_nothing_is_written(admin, post, field, value, message, editing):
    account = make_mailbox()
    path = f"/admin/mailboxes/{account.id}" if editing else "/admin/mailboxes/new"
    response = post(path, **mailbox_form(**{field: value}))
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    db.session.expire_all()
    assert count(ChannelAccount) == 1
    assert db.session.get(ChannelAccount, account.id).settings["host"] == "imap.example.com"


def test_a_new_mailbox_needs_a_password_and_a_free_name(admin, post):
    make_mailbox()
    no_password = post("/admin/mailboxes/new", **mailbox_form(password=""))
    assert no_password.status_code == 400 and "needs its password" in no_password.get_data(as_text=True)
    taken = post("/admin/mailboxes/new", **mailbox_form(name="Sales"))
    assert taken.status_code == 400 and "already uses this name" in taken.get_data(as_text=True)
    assert count(ChannelAccount) == 1


def test_the_list_shows_health_backoff_and_the_quarantine_waiting(client, admin):
    account = make_mailbox()
    since = utcnow() - dt.timedelta(hours=2)
    account.unhealthy_since = since
    account.last_error = "LOGIN failed: authentication refused"
    db.session.add(MailboxCursor(account_id=account.id, folder="INBOX", consecutive_failures=6,
                                 next_attempt_at=utcnow() + dt.timedelta(minutes=30),
                                 last_polled_at=utcnow() - dt.timedelta(days=1)))
    db.session.add(QuarantinedMessage(channel="email", source="imap:Sales", raw=b"x", error="no From header"))
    db.session.commit()
    page = client.get("/admin/mailboxes").get_data(as_text=True)
    assert f"Unhealthy since <time datetime=\"{since.isoformat()}\"" in page
    assert "LOGIN failed: authentication refused" in page
    assert "<td>6</td>" in page
    assert "backing off until" in page
    assert "1 quarantined message" in page


def test_saving_a_mailbox_clears_its_unhealthy_state_and_backoff(admin, post):
    account = make_mailbox()
    account.unhealthy_since = utcnow()
    account.last_error = "LOGIN failed"
    db.session.add(MailboxCursor(account_id=account.id, folder="INBOX", consecutive_failures=9, uid_validity=7,
                                 last_uid=42, next_attempt_at=utcnow() + dt.timedelta(hours=1)))
    db.session.commit()
    response = post(f"/admin/mailboxes/{account.id}", **mailbox_form(
        name="Sales", user="sales@example.com", password="the fixed password"))
    assert response.status_code == 302
    db.session.expire_all()
    stored = db.session.get(ChannelAccount, account.id)
    cursor = db.session.scalar(sa.select(MailboxCursor))
    assert (stored.unhealthy_since, stored.last_error) == (None, None)
    assert (cursor.consecutive_failures, cursor.next_attempt_at) == (0, None)
    assert (cursor.uid_validity, cursor.last_uid) == (7, 42)  # same server and login: the cursor stands


def test_moving_a_mailbox_to_another_server_reads_its_folder_again(admin, post):
    account = make_mailbox()
    db.session.add(MailboxCursor(account_id=account.id, folder="INBOX", uid_validity=7, last_uid=42))
    db.session.commit()
    post(f"/admin/mailboxes/{account.id}", **mailbox_form(name="Sales", host="new.example.com", password=""))
    db.session.expire_all()
    cursor = db.session.scalar(sa.select(MailboxCursor))
    assert (cursor.uid_validity, cursor.last_uid) == (None, 0)


def test_the_configured_imap_url_mailbox_is_listed_but_not_editable(client, admin):
    account = make_mailbox(source="HELPDESK_IMAP_URL")
    assert "HELPDESK_IMAP_URL" in client.get("/admin/mailboxes").get_data(as_text=True)
    assert client.get(f"/admin/mailboxes/{account.id}").status_code == 404


def test_editing_an_unknown_mailbox_is_404(client, admin):
    assert client.get("/admin/mailboxes/999999").status_code == 404
