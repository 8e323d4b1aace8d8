"""The chat widget's admin page: who may use it, what it validates, and that saved settings take effect at once."""

import re

import pytest
import socketio as socketio_client
import sqlalchemy as sa

from channels.chat.namespace import CHAT_NAMESPACE
from channels.chat.tokens import identity_hash
from channels.messages import ChannelName, IdentityKind, SenderIdentity
from helpdesk.chat import chat_identity_secret, forget_cached_chat_settings, saved_chat_settings
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import ChannelAccount
from tests.admin_forms import form_with
from tests.conftest import TEST_PASSWORD
from tests.factories import make_agent, make_inbound
from tests.integration.chat_client import SHOP, configure_chat, session_of
from tests.servers import free_port, login_session, running_server

pytestmark = pytest.mark.integration

BLOG = "https://blog.example.org"


@pytest.fixture(autouse=True)
def fresh_settings(app, monkeypatch):
    """Start from the environment's defaults (the shop allowed) and forget what a test saved."""
    configure_chat(app, monkeypatch)
    yield
    forget_cached_chat_settings()


def settings_form(**overrides) -> dict:
    defaults = {"allowed_origins": f"{BLOG}\nhttps://www.example.org/", "primary_color": "#C0FFEE",
            "greeting": "Hello from Acme!", "ask_name": "y", "ask_email": "y",
            "offline_message": "We are asleep. Leave your address and we will write back."}
    return form_with(defaults, overrides)


@pytest.mark.parametrize("role, status", [("agent", 403), ("lead", 403), ("admin", 200)])
def test_only_admins_see_the_chat_settings(client, login_as, role, status):
    login_as(role)
    assert client.get("/admin/chat").status_code == status


def test_signed_out_visitors_are_sent_to_the_login_page(client):
    response = client.get("/admin/chat")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_the_page_shows_the_embed_snippet_and_how_to_sign_users(client, login_as):
    login_as("admin")
    page = client.get("/admin/chat").get_data(as_text=True)
    assert '&lt;script src="http://localhost/widget.js" async&gt;&lt;/script&gt;' in page
    assert "data-user-id" in page and "data-user-hash" in page
    assert "hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()" in page
    assert SHOP in page  # the environment's list, while nothing is saved


def test_saving_stores_normalized_settings_and_the_widget_gets_them(client, login_as, post, visit):
    login_as("admin")
    response = post("/admin/chat", **settings_form())
    assert response.status_code == 302
    account = db.session.scalars(sa.select(ChannelAccount).where(ChannelAccount.channel == ChannelName.CHAT)).one()
    assert account.settings["allowed_origins"] == [BLOG, "https://www.example.org"]
    assert account.settings["primary_color"] == "#c0ffee"

    settings = session_of(visit(origin=BLOG))["settings"]
    assert settings["primary_color"] == "#c0ffee"
    assert settings["greeting"] == "Hello from Acme!"
    assert settings["ask_name"] is True and settings["ask_email"] is True
    assert settings["offline_message"] == "We are asleep. Leave your address and we will write back."
    assert settings["max_upload_bytes"] > 0 and ".png" in settings["upload_types"]


def test_saved_origins_replace_the_environments_at_once(client, login_as, post, visit):
    assert visit(origin=SHOP).is_connected(CHAT_NAMESPACE)
    assert not visit(origin=BLOG).is_connected(CHAT_NAMESPACE)
    login_as("admin")
    post("/admin/chat", **settings_form())
    assert visit(origin=BLOG).is_connected(CHAT_NAMESPACE)
    assert not visit(origin=SHOP).is_connected(CHAT_NAMESPACE)
    # Emptied again: the environment's list applies.
    post("/admin/chat", **settings_form(allowed_origins=""))
    assert visit(origin=SHOP).is_connected(CHAT_NAMESPACE)


@pytest.mark.parametrize("field, value, message", [
    ("allowed_origins", "https://shop.example.com/checkout", "more than an origin"),
    ("allowed_origins", "shop.example.com", "not an origin"),
    ("primary_color", "blue", "is not a hex colour"),
    ("primary_color", "#fff;}*{display:none", "is not a hex colour"),
    ("greeting", "x" * 501, "At most 500 characters"),
    ("offline_message", "y" * 501, "At most 500 characters"),
])
def test_invalid_settings_are_refused_naming_the_problem_and_nothing_stored_changes(
    client, login_as, post, field, value, message
):
    login_as("admin")
    assert post("/admin/chat", **settings_form()).status_code == 302
    response = post("/admin/chat", **settings_form(**{field: value, "greeting": "Changed?"}
                                                   if field != "greeting" else {field: value}))
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    forget_cached_chat_settings()
    saved = saved_chat_settings()
    assert saved.appearance.greeting == "Hello from Acme!"
    assert saved.allowed_origins == (BLOG, "https://www.example.org")


def test_saving_without_a_csrf_token_is_refused(client, login_as):
    login_as("admin")
    response = client.post("/admin/chat", data=settings_form())
    assert response.status_code == 400
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ChannelAccount)) == 0


def test_a_generated_identity_secret_is_shown_once_stored_encrypted_and_verifies_users(
    app, client, login_as, post, visit
):
    login_as("admin")
    derived = chat_identity_secret(app.config)
    page = post("/admin/chat/identity-secret").get_data(as_text=True)
    secret = re.search(r'<code class="secret">([^<]+)</code>', page).group(1)
    assert secret != derived and len(secret) >= 40
    assert chat_identity_secret(app.config) == secret

    # Never shown again, and not readable in the database.
    assert secret not in client.get("/admin/chat").get_data(as_text=True)
    with db.engine.connect() as connection:
        raw = connection.execute(sa.text("SELECT secrets, settings FROM channel_account")).one()
    assert secret not in raw[0] and secret not in str(raw[1])

    # A site signing with the new secret links its user; the old (derived) one no longer does.
    alice = ingest(make_inbound(sender=SenderIdentity(IdentityKind.EMAIL, "alice@example.com"))).ticket.customer_id
    signed = visit(user_id="alice@example.com", user_hash=identity_hash(secret, "alice@example.com"))
    assert session_of(signed)["verified"] is True
    stale = visit(user_id="alice@example.com", user_hash=identity_hash(derived, "alice@example.com"))
    assert session_of(stale)["verified"] is False
    assert alice

    # Rotating gives another secret and keeps the other settings.
    post("/admin/chat", **settings_form())
    again = re.search(r'<code class="secret">([^<]+)</code>',
                      post("/admin/chat/identity-secret").get_data(as_text=True)).group(1)
    assert again != secret
    assert saved_chat_settings().allowed_origins == (BLOG, "https://www.example.org")


def test_rotating_the_secret_needs_an_admin_and_a_csrf_token(client, login_as, post):
    login_as("lead")
    assert post("/admin/chat/identity-secret").status_code == 403
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ChannelAccount)) == 0


def test_rotating_without_a_csrf_token_changes_nothing(client, login_as):
    login_as("admin")
    client.post("/admin/chat/identity-secret")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ChannelAccount)) == 0


def can_chat_from(base_url: str, origin: str) -> bool:
    """Open a real Socket.IO connection to /chat as a page on `origin` would; tell whether it was admitted."""
    # websocket-client sends an Origin of its own unless told which one.
    client = socketio_client.Client(reconnection=False, websocket_extra_options={"origin": origin})
    try:
        client.connect(base_url, namespaces=[CHAT_NAMESPACE], transports=["websocket"], wait_timeout=10)
    except socketio_client.exceptions.ConnectionError:
        return False
    connected = client.connected
    client.disconnect()
    return connected


def test_a_running_server_admits_the_origins_an_admin_saves_without_a_restart(app, app_config, tmp_path):
    admin = make_agent(role="admin")
    db.session.commit()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {"DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "SECRET_KEY": app_config["SECRET_KEY"],
           "HELPDESK_INSTANCE_PATH": str(tmp_path / "instance"), "HELPDESK_PUBLIC_URL": base_url,
           "HELPDESK_CHAT_ALLOWED_ORIGINS": SHOP}
    with running_server(env, port, "--without-jobs", log_path=tmp_path / "server.log"):
        assert can_chat_from(base_url, SHOP)
        assert not can_chat_from(base_url, BLOG)

        session = login_session(base_url, admin.email, TEST_PASSWORD)
        page = session.get(f"{base_url}/admin/chat", timeout=10).text
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        saved = session.post(f"{base_url}/admin/chat", data={**settings_form(), "csrf_token": token},
                             allow_redirects=False, timeout=10)
        assert saved.status_code == 302

        # Engine.IO's handshake and the namespace both read the saved list: no restart needed.
        assert can_chat_from(base_url, BLOG)
        assert not can_chat_from(base_url, SHOP)
