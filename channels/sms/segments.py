"""How many SMS segments a text takes: GSM-7 when every character fits, UCS-2 otherwise.

    count_segments("Hello")        # -> SegmentCount(encoding="GSM-7", units=5, segments=1, ...)
    count_segments("Shalom שלום")   # -> UCS-2, 11 units, 1 segment
    count_segments("😀" * 36)       # -> UCS-2, 72 units, 2 segments (emoji are two UTF-16 units)

Pure, so the composer's script (static/sms_counter.js) can mirror it rule for rule.
"""

from __future__ import annotations

import dataclasses
import enum


class Encoding(enum.StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


#: The GSM 03.38 default alphabet (the escape code 0x1B left out: it is not a character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The extension table: each is sent as ESC plus a code, so it takes two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

#: Units in a message that fits in one segment, and per segment once it is split (the rest of each
#: 140-byte segment carries the concatenation header).
SINGLE_SEGMENT_UNITS = {Encoding.GSM7: 160, Encoding.UCS2: 70}
MULTI_SEGMENT_UNITS = {Encoding.GSM7: 153, Encoding.UCS2: 67}

#: Twilio refuses a longer body outright (error 21617).
MAX_CHARACTERS = 1600
#: Our limit for one SMS reply. Twilio accepts up to 1600 characters, but each segment is billed and
#: carriers may not reassemble long concatenations; 10 segments is 1530 GSM-7 or 670 UCS-2 characters.
MAX_SEGMENTS = 10


@dataclasses.dataclass(frozen=True)
class SegmentCount:
    encoding: Encoding
    #: Characters as people count them (code points).
    characters: int
    #: Septets for GSM-7 (extension characters count two), UTF-16 code units for UCS-2.
    units: int
    segments: int
    #: Units each segment holds at this length: 160 or 153 (GSM-7), 70 or 67 (UCS-2).
    units_per_segment: int
    #: The distinct characters that forced UCS-2, in order of appearance (empty for GSM-7).
    non_gsm_characters: tuple[str, ...] = ()


def sms_body(text: str) -> str:
    """Return `text` as it is sent: browsers submit CRLF line ends, a text needs only LF."""
    return (text or "").replace("\r\n", "\n")


def non_gsm_characters(text: str) -> tuple[str, ...]:
    """Return the distinct characters of `text` outside the GSM-7 alphabet, in order of appearance."""
    return tuple(dict.fromkeys(ch for ch in text if ch not in GSM7_BASIC and ch not in GSM7_EXTENSION))


def count_segments(text: str) -> SegmentCount:
    """Count the encoding, units and segments `text` takes as one SMS."""
    text = sms_body(text)
    outside = non_gsm_characters(text)
    if outside:
        encoding = Encoding.UCS2
        # A character beyond the Basic Multilingual Plane (most emoji) is a surrogate pair: two units.
        costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    else:
        encoding = Encoding.GSM7
        costs = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    units = sum(costs)
    if units <= SINGLE_SEGMENT_UNITS[encoding]:
        return SegmentCount(encoding, len(text), units, 1 if text else 0, SINGLE_SEGMENT_UNITS[encoding], outside)
    per_segment = MULTI_SEGMENT_UNITS[encoding]
    # Filled greedily, and an escape pair or a surrogate pair is never split across two segments, so a
    # segment may end one unit short: the count can exceed ceil(units / per_segment).
    segments, used = 1, 0
    for cost in costs:
        if used + cost > per_segment:
            segments, used = segments + 1, 0
        used += cost
    return SegmentCount(encoding, len(text), units, segments, per_segment, outside)
