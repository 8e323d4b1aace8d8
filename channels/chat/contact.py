"""What a visitor types about themselves (name, email) before or during a chat; pure.

    parse_contact(name="Ada", email="Ada@Example.com")   # -> ContactDetails(name="Ada", email="ada@example.com")
"""

from __future__ import annotations

import dataclasses
import re

from channels.identities import InvalidIdentity, normalize_email

MAX_NAME = 200
MAX_EMAIL = 254

# A visitor's address, as typed: one plain address, no display name or list (normalize_email accepts those).
_PLAIN_EMAIL = re.compile(r"[^\s<>(),;:\"\[\]@]+@[^\s<>(),;:\"\[\]@]+\.[^\s<>(),;:\"\[\]@]+")


class FieldInvalid(ValueError):
    """A value typed into a form field cannot be used; `field` names the field and the message says why."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class ContactInvalid(FieldInvalid):
    """What a visitor typed as their name or email cannot be used; the message is for the visitor."""


@dataclasses.dataclass(frozen=True)
class ContactDetails:
    """The name and email a visitor typed (never verified: not an identity, only where to write back)."""

    name: str | None = None
    email: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "email": self.email}


def parse_email(raw: object) -> str:
    """Return a visitor-typed email address normalized; raise ContactInvalid if it is not one plain address."""
    value = raw.strip() if isinstance(raw, str) else ""
    if not value or len(value) > MAX_EMAIL or not _PLAIN_EMAIL.fullmatch(value):
        raise ContactInvalid("email", "Enter a valid email address, such as name@example.com.")
    try:
        return normalize_email(value)
    except InvalidIdentity:
        raise ContactInvalid("email", "Enter a valid email address, such as name@example.com.") from None


def parse_contact(name: object = None, email: object = None, *, email_required: bool = False) -> ContactDetails:
    """Return the visitor's name and email as given (both optional unless `email_required`)."""
    clean_name = " ".join(name.split()) if isinstance(name, str) else ""
    if len(clean_name) > MAX_NAME:
        raise ContactInvalid("name", f"A name can be at most {MAX_NAME} characters long.")
    has_email = isinstance(email, str) and email.strip()
    if not has_email:
        if email_required:
            raise ContactInvalid("email", "Enter your email address, so we can answer you.")
        return ContactDetails(clean_name or None, None)
    return ContactDetails(clean_name or None, parse_email(email))
