"""Normalize the ways a customer can be addressed, so one person is found once."""

from __future__ import annotations

import email.utils

import phonenumbers


class InvalidIdentity(ValueError):
    """An address or number that cannot identify anyone."""


def normalize_email(address: str) -> str:
    """Return the bare address, lower-cased; raise InvalidIdentity if it is not one."""
    _, bare = email.utils.parseaddr(address or "")
    bare = bare.strip().lower()
    local, at, domain = bare.rpartition("@")
    if not at or not local or "." not in domain or " " in bare:
        raise InvalidIdentity(f"not an email address: {address!r}")
    return bare


def normalize_phone(number: str, default_region: str | None = None) -> str:
    """Return the number in E.164; raise InvalidIdentity if it is not a possible number."""
    raw = (number or "").strip()
    if raw.startswith("whatsapp:"):
        raw = raw.removeprefix("whatsapp:")
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as error:
        raise InvalidIdentity(f"not a phone number: {number!r} ({error})") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidIdentity(f"not a possible phone number: {number!r}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_visitor_id(visitor_id: str) -> str:
    """Return a chat visitor id as stored; raise InvalidIdentity if empty or absurd."""
    value = (visitor_id or "").strip()
    if not value or len(value) > 200:
        raise InvalidIdentity("a chat visitor id must be 1 to 200 characters")
    return value
