"""The language a customer writes in, among the languages the helpdesk serves. Pure: no database, no Flask.

Detection uses lingua, restricted to the configured languages (fewer candidates: fewer mistakes, less
memory). Text too short to tell, or too close between two languages, gives None rather than a guess.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from lingua import IsoCode639_1, LanguageDetector, LanguageDetectorBuilder

from channels.html import html_to_text
from channels.messages import InboundMessage

#: What HELPDESK_LANGUAGES means when it is not set.
DEFAULT_LANGUAGES = ("en", "de", "fr", "sv", "es", "da", "nl")
#: Fewer letters than this (after links, addresses and numbers are removed) is too little to tell.
MIN_LETTERS = 10
#: Only the start of a long message is read: it says as much, and detection time grows with length.
MAX_CHARS = 2000
#: How far apart the two likeliest languages must be (0 to 1) before one is named.
MIN_RELATIVE_DISTANCE = 0.1

_NOISE = re.compile(r"https?://\S+|www\.\S+|\S+@\S+|[\d_]+")
_LETTER = re.compile(r"[^\W\d_]")


#: ISO 639-2's code for "undetermined": detection ran and could not tell (see InboundMessage.language).
UNDETERMINED = "und"


class UnknownLanguage(ValueError):
    """A configured language code that is not an ISO 639-1 code the detector knows."""


def parse_languages(value: str | Iterable[str]) -> tuple[str, ...]:
    """Return ISO 639-1 codes from "en,de, fr" or a list: lower-case, sorted, each once; check each."""
    items = value.split(",") if isinstance(value, str) else list(value)
    codes = sorted({item.strip().lower() for item in items if item.strip()})
    for code in codes:
        if not _is_known(code):
            raise UnknownLanguage(f"{code!r} is not an ISO 639-1 language code the detector knows")
    return tuple(codes)


def detect_language(text: str, languages: Iterable[str]) -> str | None:
    """Return the ISO 639-1 code of the language of `text` among `languages`, or None when unsure."""
    codes = parse_languages(languages)
    if not codes:
        return None
    sample = _NOISE.sub(" ", (text or "")[:MAX_CHARS])
    if len(_LETTER.findall(sample)) < MIN_LETTERS:
        return None
    language = _detector(codes).detect_language_of(sample)
    return None if language is None else language.iso_code_639_1.name.lower()


def new_part_of(inbound: InboundMessage) -> str:
    """Return the new part of a customer's message: the reply without quoted history, else all its text."""
    # Quoted history would let an old message's words decide (a rule's keyword, the language).
    return inbound.reply_text or inbound.text or (html_to_text(inbound.html) if inbound.html else "")


def language_of(subject: str | None, body: str, languages: Iterable[str]) -> str | None:
    """Return the language of a message with this subject and body among `languages`, or None when unsure."""
    # The body says more than a subject line; the subject helps a one-line message.
    return detect_language(body, languages) or detect_language(f"{subject or ''}\n{body}", languages)


@functools.lru_cache(maxsize=8)
def _detector(codes: tuple[str, ...]) -> LanguageDetector:
    """Build one detector per language set; its models load on first use and stay for the process."""
    return (
        LanguageDetectorBuilder.from_iso_codes_639_1(*(IsoCode639_1.from_str(code) for code in codes))
        .with_minimum_relative_distance(MIN_RELATIVE_DISTANCE)
        .build()
    )


@functools.cache
def _is_known(code: str) -> bool:
    if not re.fullmatch(r"[a-z]{2}", code):
        return False
    try:
        IsoCode639_1.from_str(code)
    except ValueError:
        return False
    return True
