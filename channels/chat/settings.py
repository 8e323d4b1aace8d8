"""What admins set for the chat widget, and what visitors type before chatting; pure, so tested with no server.

    parse_origins("https://shop.example.com, https://www.example.com/")  # -> normalized origins, or SettingsInvalid
    normalize_color("#1F6FEB")                                          # -> "#1f6feb"
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from typing import Any

from channels.chat.contact import FieldInvalid
from channels.chat.namespace import normalize_origin

MAX_ORIGINS = 50
MAX_GREETING = 500
MAX_OFFLINE_MESSAGE = 500

DEFAULT_COLOR = "#1f6feb"
DEFAULT_GREETING = "Hi! How can we help you today?"
DEFAULT_OFFLINE_MESSAGE = (
    "No one is online right now. Leave your email address with your message and we will answer you by email."
)

_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")


class SettingsInvalid(FieldInvalid):
    """A setting cannot be saved; `field` names the form field at fault."""


@dataclasses.dataclass(frozen=True)
class WidgetAppearance:
    """What the widget shows: its colour, texts, and what it asks before the chat starts."""

    primary_color: str = DEFAULT_COLOR
    greeting: str = DEFAULT_GREETING
    #: The pre-chat form asks for the visitor's name and/or email address before the first message.
    ask_name: bool = False
    ask_email: bool = False
    offline_message: str = DEFAULT_OFFLINE_MESSAGE

    @classmethod
    def from_saved(cls, saved: dict[str, Any] | None) -> WidgetAppearance:
        """Read the stored JSON, keeping the default for anything missing or no longer valid."""
        saved = saved or {}
        defaults = cls()
        try:
            color = normalize_color(saved.get("primary_color") or defaults.primary_color)
        except SettingsInvalid:
            color = defaults.primary_color
        greeting = saved.get("greeting")
        offline = saved.get("offline_message")
        return cls(
            primary_color=color,
            greeting=greeting[:MAX_GREETING] if isinstance(greeting, str) else defaults.greeting,
            ask_name=saved.get("ask_name") is True,
            ask_email=saved.get("ask_email") is True,
            offline_message=offline[:MAX_OFFLINE_MESSAGE] if isinstance(offline, str) and offline.strip()
            else defaults.offline_message,
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_origins(raw: str | None) -> tuple[str, ...]:
    """Return the origins in `raw` (separated by commas, spaces or lines), normalized, without repeats."""
    items = [item for item in re.split(r"[\s,]+", raw or "") if item]
    origins: list[str] = []
    for item in items:
        origin = _origin_of(item)
        if origin not in origins:
            origins.append(origin)
    if len(origins) > MAX_ORIGINS:
        raise SettingsInvalid("allowed_origins", f"At most {MAX_ORIGINS} origins can be listed.")
    return tuple(origins)


def _origin_of(item: str) -> str:
    example = "such as https://shop.example.com"
    try:
        parts = urllib.parse.urlsplit(item)
    except ValueError:
        raise SettingsInvalid("allowed_origins", f"{item!r} is not an origin {example}.") from None
    if "*" in item:
        raise SettingsInvalid("allowed_origins", f"{item!r}: wildcards are not allowed; list each site {example}.")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsInvalid("allowed_origins", f"{item!r} is not an origin {example} (scheme and host).")
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise SettingsInvalid("allowed_origins",
                              f"{item!r} has more than an origin: give only the scheme, host and port, {example}.")
    origin = normalize_origin(item)
    if origin is None:
        raise SettingsInvalid("allowed_origins", f"{item!r} is not an origin {example}.")
    return origin


def normalize_color(raw: str | None) -> str:
    """Return a hex colour as #rrggbb in lower case; raise SettingsInvalid for anything else."""
    value = (raw or "").strip()
    if not _HEX_COLOR.fullmatch(value):
        raise SettingsInvalid("primary_color", f"{value!r} is not a hex colour such as #1f6feb.")
    value = value.lower()
    if len(value) == 4:
        value = "#" + "".join(char * 2 for char in value[1:])
    return value


def clean_text(field: str, raw: str | None, limit: int) -> str:
    """Return `raw` stripped, with Windows line ends made plain; raise SettingsInvalid if longer than `limit`."""
    value = (raw or "").replace("\r\n", "\n").strip()
    if len(value) > limit:
        raise SettingsInvalid(field, f"At most {limit} characters (this is {len(value)}).")
    return value
