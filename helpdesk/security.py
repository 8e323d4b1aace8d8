"""Passwords, API tokens and secrets at rest."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app

_password_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters

API_TOKEN_PREFIX = "hd_"


def hash_password(password: str) -> str:
    return _password_hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Tell whether `password` matches; a missing or malformed hash never matches."""
    if not password_hash:
        # Still spend the time of a real check, so response time does not reveal unknown accounts.
        _password_hasher.hash(password)
        return False
    try:
        return _password_hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _password_hasher.check_needs_rehash(password_hash)


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_api_token(token: str) -> str:
    # Tokens are long and random, so a fast hash is enough; it lets us look them up by hash.
    return hashlib.sha256(token.encode()).hexdigest()


def _fernet_from(secret: str) -> Fernet:
    try:
        return Fernet(secret.encode())
    except ValueError:
        # Not a Fernet key: derive one, so any long random string works as the configured key.
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()))


def secret_box() -> MultiFernet:
    """Return the cipher for secrets at rest; the first configured key encrypts, all decrypt."""
    configured = current_app.config.get("HELPDESK_ENCRYPTION_KEY") or (
        "derived-from-secret-key:" + current_app.config["SECRET_KEY"]
    )
    return MultiFernet([_fernet_from(key.strip()) for key in configured.split(",") if key.strip()])


class EncryptedJSON(sa.types.TypeDecorator):
    """A JSON value stored encrypted (Fernet), decrypted only when read in an app context."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return secret_box().encrypt(json.dumps(value).encode()).decode()

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        try:
            return json.loads(secret_box().decrypt(value.encode()))
        except InvalidToken:
            raise RuntimeError(
                "stored channel secrets cannot be decrypted: HELPDESK_ENCRYPTION_KEY or SECRET_KEY changed"
            ) from None
