"""Chat visitor tokens and identity verification; pure, so tested with no server.

A visitor token is a signed (not encrypted) string the widget keeps in the browser's localStorage. It carries a
random visitor id, so a returning visitor is recognized, and optionally a fingerprint of the verified user it
was issued to, so a browser shared by two logged-in users never shows one the other's conversation.

Identity verification, for sites that know their logged-in user: the site's server computes

    user_hash = HMAC-SHA256(HELPDESK_CHAT_IDENTITY_SECRET, user_id).hexdigest()

and passes `user_id` (an email address or a phone number) and `user_hash` to the widget. A valid pair adds that
email or phone identity to the visitor; an invalid one is ignored and the visitor stays anonymous.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeSerializer

from channels.identities import InvalidIdentity, normalize_email, normalize_phone
from channels.messages import IdentityKind, SenderIdentity

_TOKEN_SALT = "helpdesk.chat.visitor"
_IDENTITY_SALT = b"helpdesk.chat.identity"
_MAX_USER_ID = 254


def derive_identity_secret(secret_key: str) -> str:
    """Return the default identity secret: a key derived from SECRET_KEY, never SECRET_KEY itself."""
    return hmac.new(secret_key.encode(), _IDENTITY_SALT, hashlib.sha256).hexdigest()


def identity_hash(secret: str, user_id: str) -> str:
    """Return the `user_hash` a site computes for `user_id` (HMAC-SHA256, hex)."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def verify_identity(secret: str | None, user_id: object, user_hash: object) -> SenderIdentity | None:
    """Return the email or phone identity `user_id` names if `user_hash` proves it, else None."""
    if not secret or not isinstance(user_id, str) or not isinstance(user_hash, str):
        return None
    user_id = user_id.strip()
    if not user_id or len(user_id) > _MAX_USER_ID:
        return None
    # Compared in constant time; the site hashes exactly what it passes, so no normalization before this.
    if not hmac.compare_digest(identity_hash(secret, user_id), user_hash.strip().lower()):
        return None
    try:
        if "@" in user_id:
            return SenderIdentity(IdentityKind.EMAIL, normalize_email(user_id))
        return SenderIdentity(IdentityKind.PHONE, normalize_phone(user_id))
    except InvalidIdentity:
        return None


def new_visitor_id() -> str:
    return "v_" + secrets.token_urlsafe(18)


@dataclasses.dataclass(frozen=True)
class VisitorSession:
    """Who a chat connection is: the visitor id, the token the browser should keep, any verified identity."""

    visitor_id: str
    token: str
    #: A new visitor id was issued (no token, a tampered one, or one issued to another verified user).
    is_new: bool
    #: The email or phone identity proven by the site's HMAC, linked to the same customer at ingest.
    verified: SenderIdentity | None = None


class VisitorTokens:
    """Issue and check signed visitor tokens."""

    def __init__(self, secret_key: str):
        self._serializer = URLSafeSerializer(secret_key, salt=_TOKEN_SALT)

    def issue(self, visitor_id: str, bound_to: str | None = None) -> str:
        return self._serializer.dumps({"v": visitor_id, "u": bound_to})

    def read(self, token: object) -> tuple[str, str | None] | None:
        """Return (visitor id, user fingerprint or None) from a genuine token, or None."""
        if not isinstance(token, str) or not token or len(token) > 1000:
            return None
        try:
            claims = self._serializer.loads(token)
        except BadSignature:
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("v"), str) or not claims["v"]:
            return None
        bound_to = claims.get("u")
        return claims["v"], bound_to if isinstance(bound_to, str) else None

    def open_session(self, token: object, verified: SenderIdentity | None = None) -> VisitorSession:
        """Recognize the visitor behind `token`, or issue a new visitor id; see the module docstring."""
        fingerprint = _fingerprint(verified) if verified else None
        claims = self.read(token)
        if claims is not None:
            visitor_id, bound_to = claims
            if bound_to is None and fingerprint is None:
                return VisitorSession(visitor_id, token, False, None)
            if bound_to == fingerprint:
                return VisitorSession(visitor_id, token, False, verified)
            if bound_to is None:
                # An anonymous visitor who logged in keeps their conversation, now bound to that user.
                return VisitorSession(visitor_id, self.issue(visitor_id, fingerprint), False, verified)
            # Issued to another verified user (or to one who has since logged out): start afresh.
        visitor_id = new_visitor_id()
        return VisitorSession(visitor_id, self.issue(visitor_id, fingerprint), True, verified)


def _fingerprint(identity: SenderIdentity) -> str:
    # Tokens are readable by the page; a hash keeps the email or phone number out of them.
    return hashlib.sha256(f"{identity.kind}:{identity.value}".encode()).hexdigest()[:24]
