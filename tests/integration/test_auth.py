"""Signing in and out, CSRF, the login rate limit, login-required pages, and the profile's API tokens."""

import hashlib
import re
from urllib.parse import urlencode

import limits
import pytest
import sqlalchemy as sa

from helpdesk.agents import create_api_token
from helpdesk.extensions import db
from helpdesk.ingest import ingest
from helpdesk.models import Agent, ApiToken, Customer, Message, Ticket
from helpdesk.security import verify_password
from tests.conftest import TEST_PASSWORD
from tests.factories import make_agent, make_inbound

pytestmark = pytest.mark.integration

CSRF_MESSAGE = "The form expired or was not sent from this site"


@pytest.fixture
def agent():
    agent = make_agent(email="maria@example.com")
    db.session.commit()
    return agent


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def session_agent_id(client) -> str | None:
    with client.session_transaction() as session:
        return session.get("_user_id")


def post_login(client, auth, email, password, path="/login"):
    token = auth.csrf_token("/login")
    return client.post(path, data={"email": email, "password": password, "csrf_token": token})


def test_the_right_password_signs_in_with_a_protected_session_cookie(client, auth, agent):
    response = auth.login("maria@example.com")
    assert response.status_code == 302
    assert response.headers["Location"] == "/inbox"
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("session="))
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert session_agent_id(client) == str(agent.id)
    assert client.get("/inbox").status_code == 200
    assert db.session.get(Agent, agent.id).last_login_at is not None


@pytest.mark.parametrize(
    "email, password",
    [
        ("maria@example.com", "wrong password here"),
        ("nobody@example.com", TEST_PASSWORD),
    ],
)
def test_wrong_credentials_get_401_with_the_form_and_no_session(client, auth, agent, email, password):
    response = post_login(client, auth, email, password)
    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert "Wrong email or password." in page
    assert 'name="password"' in page
    assert session_agent_id(client) is None
    assert client.get("/inbox").status_code == 302


def test_an_inactive_agent_cannot_sign_in(client, auth, agent):
    agent.is_active = False
    db.session.commit()
    response = post_login(client, auth, "maria@example.com", TEST_PASSWORD)
    assert response.status_code == 401
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert session_agent_id(client) is None


def test_a_deactivated_agent_is_signed_out_at_the_next_request(client, auth, agent):
    auth.login("maria@example.com")
    assert client.get("/inbox").status_code == 200
    agent.is_active = False
    db.session.commit()
    response = client.get("/inbox")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


@pytest.mark.parametrize("target", ["/tickets/1001", "/inbox?view=pending"])
def test_next_is_followed_when_it_is_a_local_path(client, auth, agent, target):
    response = post_login(
        client, auth, "maria@example.com", TEST_PASSWORD, path="/login?" + urlencode({"next": target})
    )
    assert response.status_code == 302
    assert response.headers["Location"] == target


@pytest.mark.parametrize(
    "target",
    [
        "//evil.com",
        "https://evil.com",
        "/\\evil.com",
        "/\t/evil.com",
        "/\n/evil.com",
        "javascript:alert(1)",
        "evil.com",
    ],
)
def test_next_never_leaves_the_site(client, auth, agent, target):
    response = post_login(
        client, auth, "maria@example.com", TEST_PASSWORD, path="/login?" + urlencode({"next": target})
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/inbox"


def test_anonymous_visitors_are_sent_to_login_with_the_page_they_wanted(client):
    response = client.get("/inbox?view=pending")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?" + urlencode({"next": "/inbox?view=pending"})


def test_logout_needs_a_post_with_a_csrf_token(client, auth, agent):
    auth.login("maria@example.com")
    assert client.get("/logout").status_code == 405
    refused = client.post("/logout")
    assert refused.status_code == 400
    assert CSRF_MESSAGE in refused.get_data(as_text=True)
    assert client.get("/inbox").status_code == 200

    response = auth.logout()
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert session_agent_id(client) is None
    assert client.get("/inbox").status_code == 302


@pytest.mark.parametrize("role", ["agent", "admin"])
def test_passwords_are_stored_as_argon2id_hashes(role):
    agent = make_agent(role=role, password="a secret long enough")
    db.session.commit()
    stored = db.session.scalar(sa.select(Agent.password_hash).where(Agent.id == agent.id))
    assert stored.startswith("$argon2id$")
    assert "a secret long enough" not in stored
    assert verify_password(stored, "a secret long enough")


# --- CSRF --------------------------------------------------------------------------------------------


def test_a_login_without_csrf_token_is_refused_and_signs_nobody_in(client, agent):
    response = client.post("/login", data={"email": "maria@example.com", "password": TEST_PASSWORD})
    assert response.status_code == 400
    assert CSRF_MESSAGE in response.get_data(as_text=True)
    assert session_agent_id(client) is None
    assert db.session.get(Agent, agent.id).last_login_at is None


@pytest.mark.parametrize(
    "path, data",
    [
        ("/tickets/1001/reply", {"text": "We are on it."}),
        ("/tickets/1001/update", {"status": "solved"}),
        (
            "/admin/agents/new",
            {
                "email": "new@example.com",
                "name": "New",
                "role": "agent",
                "tier": "first_line",
                "capacity": "10",
                "is_active": "y",
                "password": "a long password",
            },
        ),
        ("/simulator", {"channel": "sms", "sender": "+46701234567", "text": "Hello"}),
        ("/profile/tokens", {"name": "script"}),
    ],
)
@pytest.mark.parametrize("token", [None, "not-a-real-token"])
def test_a_form_post_without_a_valid_csrf_token_is_refused_and_writes_nothing(
    client, login_as, path, data, token
):
    login_as("admin")
    ingest(make_inbound())
    tables = (Agent, ApiToken, Customer, Message, Ticket)
    before = [count(model) for model in tables]
    status = db.session.scalar(sa.select(Ticket.status))
    if token:
        data = {**data, "csrf_token": token}
    response = client.post(path, data=data)
    assert response.status_code == 400
    assert CSRF_MESSAGE in response.get_data(as_text=True)
    assert [count(model) for model in tables] == before
    assert db.session.scalar(sa.select(Ticket.status)) == status


# --- Rate limit --------------------------------------------------------------------------------------


def test_too_many_login_attempts_from_one_address_get_429(app, client, auth, agent):
    allowed = limits.parse(app.config["HELPDESK_LOGIN_RATE_LIMIT"]).amount
    for _ in range(allowed):
        assert post_login(client, auth, "maria@example.com", "wrong password here").status_code == 401
    # Even the right password is refused now, and a forged forwarding header does not help.
    token = auth.csrf_token("/login")
    refused = client.post(
        "/login",
        data={"email": "maria@example.com", "password": TEST_PASSWORD, "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert refused.status_code == 429
    assert session_agent_id(client) is None
    assert client.get("/login").status_code == 200  # only attempts are limited, not the form

    other = client.post(
        "/login",
        data={"email": "maria@example.com", "password": TEST_PASSWORD, "csrf_token": token},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert other.status_code == 302


# --- Login-required pages ----------------------------------------------------------------------------


@pytest.fixture
def ticket():
    return ingest(make_inbound()).ticket


@pytest.mark.parametrize(
    "path", ["/inbox", "/tickets/{number}", "/customers/{customer}", "/simulator", "/profile"]
)
def test_agent_pages_send_anonymous_visitors_to_login(client, ticket, path):
    path = path.format(number=ticket.number, customer=ticket.customer_id)
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?" + urlencode({"next": path})


@pytest.mark.parametrize(
    "path",
    [
        "/tickets/{number}/reply",
        "/tickets/{number}/update",
        "/simulator",
        "/profile/tokens",
        "/profile/password",
        "/profile/tokens/1/revoke",
    ],
)
def test_anonymous_form_posts_with_a_valid_csrf_token_are_sent_to_login_and_write_nothing(
    client, auth, ticket, path
):
    token = auth.csrf_token("/login")
    before = (count(Message), count(Ticket), count(ApiToken))
    response = client.post(
        path.format(number=ticket.number),
        data={
            "csrf_token": token,
            "text": "Hi",
            "status": "closed",
            "name": "x",
            "channel": "sms",
            "sender": "+46701234567",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    assert (count(Message), count(Ticket), count(ApiToken)) == before


@pytest.mark.parametrize("role", ["agent", "lead", "admin"])
def test_every_signed_in_role_sees_the_agent_pages(client, login_as, ticket, role):
    login_as(role)
    for path in (
        "/inbox",
        f"/tickets/{ticket.number}",
        f"/customers/{ticket.customer_id}",
        "/simulator",
        "/profile",
    ):
        assert client.get(path).status_code == 200, path


# --- Profile and API tokens --------------------------------------------------------------------------


def create_token_on_profile(client, auth, name="reporting script"):
    response = client.post("/profile/tokens", data={"name": name, "csrf_token": auth.csrf_token("/profile")})
    assert response.status_code == 200
    match = re.search(r'<code id="new-token">([^<]+)</code>', response.get_data(as_text=True))
    assert match, "the new token is not shown"
    return match.group(1)


def api_status(client, token) -> int:
    return client.get("/api/v1/tickets", headers={"Authorization": f"Bearer {token}"}).status_code


def test_a_token_made_on_the_profile_is_shown_once_and_stored_only_as_its_sha256(client, auth, login_as):
    agent = login_as()
    token = create_token_on_profile(client, auth)
    row = db.session.scalars(sa.select(ApiToken)).one()
    assert row.agent_id == agent.id and row.name == "reporting script"
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (row.token_hash, row.prefix)

    later = client.get("/profile").get_data(as_text=True)
    assert token not in later
    assert row.prefix in later
    assert api_status(client, token) == 200


def test_a_revoked_token_stops_working(client, auth, login_as):
    login_as()
    token = create_token_on_profile(client, auth)
    row = db.session.scalars(sa.select(ApiToken)).one()
    response = client.post(
        f"/profile/tokens/{row.id}/revoke", data={"csrf_token": auth.csrf_token("/profile")}
    )
    assert response.status_code == 302
    assert api_status(client, token) == 401
    assert "revoked" in client.get("/profile").get_data(as_text=True)


def test_an_agent_cannot_revoke_someone_elses_token(client, auth, login_as):
    other = make_agent(email="other@example.com")
    db.session.commit()
    others_token = create_api_token(other, "theirs")
    login_as()
    row = db.session.scalars(sa.select(ApiToken)).one()
    client.post(f"/profile/tokens/{row.id}/revoke", data={"csrf_token": auth.csrf_token("/profile")})
    db.session.refresh(row)
    assert row.revoked_at is None
    assert api_status(client, others_token) == 200
    assert "theirs" not in client.get("/profile").get_data(as_text=True)


def test_a_token_needs_a_name(client, auth, login_as):
    login_as()
    response = client.post(
        "/profile/tokens", data={"name": "", "csrf_token": auth.csrf_token("/profile")}, follow_redirects=True
    )
    assert "Give the token a name." in response.get_data(as_text=True)
    assert count(ApiToken) == 0


def test_changing_the_password_needs_the_current_one(client, auth, login_as):
    agent = login_as()
    old_hash = agent.password_hash
    wrong = client.post(
        "/profile/password",
        data={
            "current_password": "not my password",
            "new_password": "a brand new password",
            "csrf_token": auth.csrf_token("/profile"),
        },
        follow_redirects=True,
    )
    assert "The current password is wrong" in wrong.get_data(as_text=True)
    assert db.session.get(Agent, agent.id).password_hash == old_hash

    right = client.post(
        "/profile/password",
        data={
            "current_password": TEST_PASSWORD,
            "new_password": "a brand new password",
            "csrf_token": auth.csrf_token("/profile"),
        },
        follow_redirects=True,
    )
    assert "Password changed." in right.get_data(as_text=True)
    stored = db.session.get(Agent, agent.id).password_hash
    assert stored.startswith("$argon2id$") and verify_password(stored, "a brand new password")

    auth.logout()
    assert auth.login(agent.email, TEST_PASSWORD).status_code == 401
    assert auth.login(agent.email, "a brand new password").status_code == 302
