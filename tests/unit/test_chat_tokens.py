"""Chat visitor tokens, identity verification, origin checks and rate buckets: pure, no server."""

import pytest

from channels.chat.namespace import TokenBucket, is_origin_allowed, normalize_origin
from channels.chat.tokens import (
    VisitorTokens,
    derive_identity_secret,
    identity_hash,
    new_visitor_id,
    verify_identity,
)
from channels.messages import IdentityKind, SenderIdentity

SECRET = "site-identity-secret"


@pytest.fixture
def tokens():
    return VisitorTokens("test-secret-key")


def test_a_token_carries_its_visitor_id(tokens):
    assert tokens.read(tokens.issue("v_abc")) == ("v_abc", None)


def test_a_returning_visitor_keeps_their_id_and_token(tokens):
    first = tokens.open_session(None)
    again = tokens.open_session(first.token)
    assert first.is_new and not again.is_new
    assert again.visitor_id == first.visitor_id
    assert again.token == first.token


@pytest.mark.parametrize("forged", [
    "not-a-token", "", None, 42, {"v": "v_x"}, "x" * 2000,
])
def test_anything_but_a_token_gets_a_new_identity(tokens, forged):
    session = tokens.open_session(forged)
    assert session.is_new
    assert session.visitor_id.startswith("v_")


def test_a_tampered_token_is_refused(tokens):
    token = tokens.issue("v_victim")
    payload, _, signature = token.rpartition(".")
    other = tokens.issue("v_attacker").rpartition(".")[0]
    assert tokens.read(f"{other}.{signature}") is None
    assert tokens.read(f"{payload}.{signature[:-2]}AA") is None
    assert tokens.open_session(f"{other}.{signature}").visitor_id not in ("v_victim", "v_attacker")


def test_a_token_signed_with_another_key_is_refused(tokens):
    assert tokens.read(VisitorTokens("another-key").issue("v_abc")) is None


def test_visitor_ids_are_random():
    assert len({new_visitor_id() for _ in range(100)}) == 100


@pytest.mark.parametrize("user_id, kind, value", [
    ("Alice@Example.com", IdentityKind.EMAIL, "alice@example.com"),
    ("+46 70 123 45 67", IdentityKind.PHONE, "+46701234567"),
])
def test_a_valid_hmac_proves_an_email_or_phone(user_id, kind, value):
    assert verify_identity(SECRET, user_id, identity_hash(SECRET, user_id)) == SenderIdentity(kind, value)


@pytest.mark.parametrize("user_id, user_hash", [
    ("alice@example.com", identity_hash("wrong secret", "alice@example.com")),
    ("alice@example.com", identity_hash(SECRET, "mallory@example.com")),
    ("alice@example.com", ""),
    ("alice@example.com", None),
    (None, identity_hash(SECRET, "None")),
    ("", identity_hash(SECRET, "")),
    ("not an address", identity_hash(SECRET, "not an address")),
])
def test_an_invalid_hmac_or_id_is_ignored(user_id, user_hash):
    assert verify_identity(SECRET, user_id, user_hash) is None


def test_no_secret_verifies_nobody():
    assert verify_identity(None, "alice@example.com", identity_hash("", "alice@example.com")) is None


def test_the_default_identity_secret_is_derived_not_the_secret_key():
    derived = derive_identity_secret("the secret key")
    assert derived != "the secret key"
    assert derived == derive_identity_secret("the secret key") != derive_identity_secret("another key")


def test_an_anonymous_visitor_who_logs_in_keeps_the_conversation(tokens):
    anonymous = tokens.open_session(None)
    alice = SenderIdentity(IdentityKind.EMAIL, "alice@example.com")
    logged_in = tokens.open_session(anonymous.token, alice)
    assert logged_in.visitor_id == anonymous.visitor_id and not logged_in.is_new
    assert logged_in.verified == alice
    assert "alice" not in logged_in.token  # bound by a fingerprint, not by the address
    assert tokens.open_session(logged_in.token, alice).visitor_id == anonymous.visitor_id


def test_a_token_bound_to_one_user_is_not_reused_by_another_or_after_logout(tokens):
    alice = SenderIdentity(IdentityKind.EMAIL, "alice@example.com")
    bob = SenderIdentity(IdentityKind.EMAIL, "bob@example.com")
    alices = tokens.open_session(None, alice)
    assert tokens.open_session(alices.token, bob).visitor_id != alices.visitor_id
    assert tokens.open_session(alices.token, None).visitor_id != alices.visitor_id


@pytest.mark.parametrize("origin, expected", [
    ("https://Shop.Example.com", "https://shop.example.com"),
    ("https://shop.example.com:443/", "https://shop.example.com"),
    ("http://localhost:8080", "http://localhost:8080"),
    ("null", None),
    ("file:///index.html", None),
    ("https://", None),
    ("http://host:99999", None),
])
def test_origins_are_compared_normalized(origin, expected):
    assert normalize_origin(origin) == expected


@pytest.mark.parametrize("origin, allowed", [
    ("https://shop.example.com", True),
    ("https://SHOP.example.com:443", True),
    ("http://shop.example.com", False),
    ("https://shop.example.com.evil.test", False),
    ("https://evil.test", False),
    ("null", False),
    (None, True),
])
def test_only_listed_origins_may_chat(origin, allowed):
    assert is_origin_allowed(origin, ["https://shop.example.com/", "http://localhost:5000"]) is allowed


def test_a_token_bucket_allows_a_burst_then_refills():
    now = [0.0]
    bucket = TokenBucket(rate=1.0, burst=3, clock=lambda: now[0])
    assert [bucket.take("a") for _ in range(4)] == [True, True, True, False]
    assert bucket.take("b")
    now[0] = 1.0
    assert bucket.take("a") and not bucket.take("a")


def test_a_token_bucket_forgets_idle_keys():
    now = [0.0]
    bucket = TokenBucket(rate=1.0, burst=1, clock=lambda: now[0], max_keys=10)
    for n in range(10):
        bucket.take(str(n))
    now[0] = 5.0
    bucket.take("new")
    assert len(bucket._buckets) == 1


def test_a_clock_reading_older_than_the_bucket_is_not_charged_for_the_time_between():
    # Threads read the clock and take the lock in either order; a late, older reading must not turn the
    # time difference into a debt of tokens.
    readings = iter([10.0, 7.0, 10.0])
    bucket = TokenBucket(rate=1.0, burst=3, clock=lambda: next(readings))
    assert bucket.take("a")  # at 10: two tokens left
    assert bucket.take("a")  # an older reading (7) still finds one of those two
    assert bucket.take("a")  # and the last one is there at 10
