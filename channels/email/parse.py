"""Raw RFC 5322 bytes to InboundMessage, with the standard `email` package (policy.default).

Two entry points:

- `parse_email(raw)` returns an InboundMessage or raises UnparseableEmail (no usable sender, empty
  input, an Outlook .msg file, or a message the standard library cannot take apart); the caller
  quarantines the bytes.
- `parsed_email_json(raw)` never raises: it returns one JSON-able dict. Bytes that are no message
  at all give only `{"error": reason}`; a message without a usable sender gives every field plus
  `error` (the reason `parse_email` refuses it).

Bodies follow the JMAP (RFC 8621) body-structure rules: inline text parts are joined in order,
`multipart/alternative` picks plain and HTML, everything else is an attachment (forwarded
messages as `.eml`, Outlook's winmail.dat unpacked into its files).
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import email
import email.header
import email.headerregistry
import email.policy
import email.utils
import functools
import hashlib
import html as html_lib
import mimetypes
import re
from email.message import EmailMessage, Message

from channels.email.filters import detect_auto_reply, detect_bounce
from channels.email.reply import split_reply
from channels.email.tnef import TnefContent, is_tnef, unpack_tnef
from channels.html import html_to_text, sanitize_html
from channels.identities import InvalidIdentity, normalize_email
from channels.messages import (
    Attachment,
    BounceReport,
    ChannelName,
    EmailAddress,
    IdentityKind,
    InboundMessage,
    SenderIdentity,
    ThreadHints,
)

_MESSAGE_ID = re.compile(r"<([^<>]+)>")
_BARE_MESSAGE_ID = re.compile(r"[^\s<>@]+@[^\s<>@]+")
_BRACKETED_ADDRESS = re.compile(r"<([^<>@\s]+@[^<>@\s]+)>")
_BARE_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_LOOSE_NAME = re.compile(r"(?i)(?:^|;)\s*(?:file)?name\s*=\s*([^;\"\s][^;\"]*)")
_LOOSE_BOUNDARY = re.compile(r"""(?i)\bboundary\s*=\s*"?([^";\r\n]+)""")
_COMMENT = re.compile(r"\([^()]*\)")
_TICKET_TOKEN = re.compile(r"\[#(\d{1,12})\]")
_HEADER_BODY_SEPARATOR = re.compile(rb"\r?\n\r?\n")
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]{1,40})""", re.IGNORECASE
)
_SURROGATES = re.compile("[\udc80-\udcff]")
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MAX_DEPTH = 100
#: Longest id kept as is; the database column holds 300 characters with the "email:" prefix.
_MAX_ID_LENGTH = 250
#: Built-in types only, so names do not depend on the machine's mime.types files.
_MIME_TYPES = mimetypes.MimeTypes()
_DEFAULT_NAMES = {
    "message/delivery-status": "delivery-status.txt",
    "message/global-delivery-status": "delivery-status.txt",
    "text/rfc822-headers": "original-headers.txt",
    "message/global-headers": "original-headers.txt",
    "message/disposition-notification": "disposition-notification.txt",
}

# Labels mail programs write that Python does not know, or knows as a smaller charset than what
# the sender really used (Windows and WHATWG treat these as the supersets).
_CHARSET_ALIASES = {
    "x-unknown": None,
    "unknown": None,
    "unknown-8bit": None,
    "x-user-defined": None,
    "default": None,
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "gb_2312-80": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "big5": "big5hkscs",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
    "x-mac-roman": "mac_roman",
}
_MULTIBYTE_CODECS = ("shift_jis", "cp932", "euc_", "iso2022", "gb", "big5", "cp949", "cp950", "johab", "hz")
_UNICODE_CODECS = ("utf_8", "utf_16", "utf_32", "utf_7")
_ISO2022_JP_FAMILY = ("iso2022_jp_2", "iso2022_jp_ext", "iso2022_jp_3")


#: Header values are cut to this many characters before the standard library parses or decodes them: it takes
#: quadratic time over a long run of words (a 280 kB Subject of encoded words took ten seconds, a From with a
#: 110 kB name one second), and no real header comes near it. In-Reply-To, References and the address lists
#: the message is filed by are read from the raw headers, whole (linear time).
MAX_HEADER_LENGTH = 16 * 1024


def _cut_to_length(value: str) -> str:
    """`value` cut to MAX_HEADER_LENGTH, at a space if one is near, so no encoded word is broken."""
    if len(value) <= MAX_HEADER_LENGTH:
        return value
    cut = value[:MAX_HEADER_LENGTH]
    space = max(cut.rfind(" "), cut.rfind("\t"))
    return cut[:space] if space > MAX_HEADER_LENGTH // 2 else cut


class _ParseOnceHeaderRegistry(email.headerregistry.HeaderRegistry):
    """The standard header factory, remembering what it parsed.

    policy.default parses a header again on every read (a part's Content-Type is read a dozen times while the
    body structure is sorted out), and mail repeats the same values; the parsed headers are immutable.
    """

    #: Longer values (a long References chain) are parsed each time rather than kept.
    MAX_CACHED_LENGTH = 2000

    def __init__(self):
        super().__init__()
        self._parse_once = functools.lru_cache(maxsize=4096)(super().__call__)

    def __call__(self, name, value):
        if len(value) > self.MAX_CACHED_LENGTH:
            return super().__call__(name, _cut_to_length(value))
        return self._parse_once(name, value)


#: policy.default with each distinct header parsed once.
_POLICY = email.policy.default.clone(header_factory=_ParseOnceHeaderRegistry())


class UnparseableEmail(ValueError):
    """The bytes are not a message we can store; the caller quarantines them."""


def parse_email(raw: bytes) -> InboundMessage:
    """Parse `raw` into the normalized message; raise UnparseableEmail when there is no usable sender."""
    mail = _read(raw)
    if mail.sender_address is None:
        raise UnparseableEmail(mail.sender_error)
    bounce = mail.bounce
    return InboundMessage(
        channel=ChannelName.EMAIL,
        sender=SenderIdentity(IdentityKind.EMAIL, mail.sender_address, mail.sender_name),
        dedupe_key=f"email:{mail.message_id}",
        external_id=mail.message_id,
        text=mail.text,
        html=mail.html,
        subject=mail.subject,
        reply_text=mail.reply_text,
        attachments=mail.attachments,
        thread=ThreadHints(
            reply_to_external_ids=tuple(dict.fromkeys([*mail.in_reply_to, *reversed(mail.references)])),
            ticket_number=mail.ticket_number,
        ),
        is_automatic=mail.automatic_reason is not None,
        to=mail.to,
        cc=mail.cc,
        sent_at=mail.sent_at,
        automatic_reason=mail.automatic_reason,
        is_bounce=bounce is not None and bounce.is_failure,
        bounce=bounce,
    )


def parsed_email_json(raw: bytes) -> dict:
    """Return the parsed message as one JSON-able dict; never raise.

    Input that is not a message at all gives only `{"error": reason}`. A message without a usable
    sender gives every field (`from_address` None) plus `error`, because `parse_email` refuses it.
    """
    try:
        mail = _read(raw)
    except UnparseableEmail as error:
        return {"error": str(error)}
    except Exception as error:  # promised never to raise: report a parser bug as data
        return {"error": f"internal parser error: {error!r}"}
    bounce = mail.bounce
    result = {
        "message_id": mail.message_id,
        "message_id_derived": mail.is_message_id_derived,
        "in_reply_to": list(mail.in_reply_to),
        "references": list(mail.references),
        "from_address": mail.sender_address,
        "from_name": mail.sender_name,
        "to": [_address_json(address) for address in mail.to],
        "cc": [_address_json(address) for address in mail.cc],
        "subject": mail.subject,
        "date": mail.sent_at.isoformat() if mail.sent_at else None,
        "text": mail.text,
        "html": mail.html,
        "reply_text": mail.reply_text,
        "attachments": [
            {
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "size": attachment.size,
                "content_id": attachment.content_id,
                "inline": attachment.is_inline,
            }
            for attachment in mail.attachments
        ],
        "ticket_number": mail.ticket_number,
        "is_automatic": mail.automatic_reason is not None,
        "automatic_reason": mail.automatic_reason,
        "is_auto_reply": mail.auto_reply_reason is not None,
        "is_bounce": bounce is not None and bounce.is_failure,
        "bounce": dataclasses.asdict(bounce) if bounce else None,
    }
    if mail.sender_address is None:
        result["error"] = mail.sender_error
    return result


@dataclasses.dataclass(frozen=True)
class _Mail:
    """Everything read from one message, whether or not it has a usable sender."""

    sender_address: str | None
    sender_name: str | None
    sender_error: str
    message_id: str
    is_message_id_derived: bool
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    ticket_number: int | None
    to: tuple[EmailAddress, ...]
    cc: tuple[EmailAddress, ...]
    sent_at: dt.datetime | None
    text: str
    html: str | None
    reply_text: str | None
    attachments: tuple[Attachment, ...]
    bounce: BounceReport | None
    auto_reply_reason: str | None
    automatic_reason: str | None


def _read(raw: bytes) -> _Mail:
    if not isinstance(raw, (bytes, bytearray)):
        raise UnparseableEmail(f"expected bytes, got {type(raw).__name__}")
    raw = bytes(raw).removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n")
    if not raw.strip():
        raise UnparseableEmail("the message is empty")
    if raw.startswith(_OLE2_MAGIC):
        raise UnparseableEmail("an Outlook .msg file (OLE2), not an RFC 5322 message")
    try:
        message = email.message_from_bytes(raw, policy=_POLICY)
        return _mail(message, raw)
    except (RecursionError, MemoryError):
        raise UnparseableEmail("the message is nested too deeply or too large to parse") from None
    except Exception as error:  # the email package trips over some malformed input; quarantine it
        raise UnparseableEmail(f"the message could not be parsed: {error!r}") from error


def _mail(message: EmailMessage, raw: bytes) -> _Mail:
    sender = _sender(message)
    message_id = _first_message_id(message)
    is_derived = message_id is None
    if message_id is None:
        # No Message-ID: derive a stable one, so a redelivery (new Received lines) is still recognized.
        message_id = _derived_message_id(message, raw)
    subject = _unstructured(message, "Subject")
    token = _TICKET_TOKEN.search(subject)
    text, html, attachments = _content(message)
    reply = split_reply(text, sender[1] if sender else None)
    bounce = detect_bounce(message)
    auto_reply_reason = detect_auto_reply(message)
    return _Mail(
        sender_address=sender[0] if sender else None,
        sender_name=sender[1] if sender else None,
        sender_error="" if sender else f"no usable From address: {_raw_header(message, 'From')[:200]!r}",
        message_id=message_id,
        is_message_id_derived=is_derived,
        in_reply_to=tuple(_message_ids(_raw_header(message, "In-Reply-To"))),
        references=tuple(_message_ids(_raw_header(message, "References"))),
        subject=subject,
        ticket_number=int(token.group(1)) if token else None,
        to=_recipients(message, "To"),
        cc=_recipients(message, "Cc"),
        sent_at=_date(message),
        text=text,
        html=html,
        reply_text=reply.reply or None,
        attachments=tuple(attachments),
        bounce=bounce,
        auto_reply_reason=auto_reply_reason,
        automatic_reason=auto_reply_reason or ("delivery-status report" if bounce else None),
    )


# --- headers --------------------------------------------------------------------------------------


def _raw_headers(message: Message, name: str) -> list[str]:
    """Return every raw value of header `name`, unfolded, with 8-bit bytes decoded."""
    wanted = name.lower()
    values = []
    for key, value in message.raw_items():
        if key.lower() == wanted:
            text = str(value)
            if _SURROGATES.search(text):
                # Undeclared 8-bit header bytes are most likely in the charset of the body.
                text = _repair(text, _charset_hint(message))
            values.append(re.sub(r"\r?\n(?=[ \t])", "", text).replace("\r", "").replace("\n", " "))
    return values


def _raw_header(message: Message, name: str) -> str:
    values = _raw_headers(message, name)
    return values[0] if values else ""


def _unstructured(message: Message, name: str) -> str:
    """Return a text header (Subject) decoded from RFC 2047, on one line."""
    raw = _cut_to_length(_raw_header(message, name))
    text = _decode_words(raw)
    if text is not None and raw.strip() and not text.strip():
        text = raw  # an encoded word that decodes to nothing: show what was written
    if text is None:
        try:
            text = str(message.get(name) or "")
        except Exception:  # the header parser failed too: show the raw text
            text = raw
    return " ".join(_repair(text).split())


def _decode_words(value: str) -> str | None:
    """Decode RFC 2047 encoded words, each with the charset fallbacks of the body; None on failure."""
    if "=?" not in value:
        return value
    value = _cut_to_length(value)
    try:
        chunks = email.header.decode_header(value)
    except Exception:  # bad base64 inside an encoded word and the like
        return None
    pieces = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            pieces.append(chunk)
        elif charset is None:
            pieces.append(chunk.decode("raw-unicode-escape", errors="replace"))
        else:
            pieces.append(decode_bytes(chunk, charset))
    return "".join(pieces)


def _addresses(message: Message, name: str) -> list[tuple[str | None, str]]:
    """Return (display name, address) pairs of an address header; groups are flattened."""
    # The classic parser on the raw value, then RFC 2047 on each name: encoded words cannot hide
    # commas or brackets, and adjacent encoded words join without the space between them.
    try:
        pairs = email.utils.getaddresses(_raw_headers(message, name))
    except Exception:  # the classic parser failed; try the modern one below
        pairs = []
    found = [(_decode_words(display_name) or display_name, address) for display_name, address in pairs]
    if not any("@" in address for _, address in found):
        try:
            found = [
                (_repair(address.display_name or ""), _repair(address.addr_spec))
                for header in message.get_all(name) or []
                for address in getattr(header, "addresses", ())
            ]
        except Exception:  # neither parser can read it
            found = []
    return [(" ".join(display_name.split()) or None, address) for display_name, address in found]


def _sender(message: Message) -> tuple[str, str | None] | None:
    """Return the sender's (address, display name): From, else Sender, else Reply-To."""
    for header in ("From", "Sender", "Reply-To"):
        for display_name, address in _addresses(message, header):
            try:
                return normalize_email(address), display_name
            except InvalidIdentity:
                continue
    # Headers like "Big Bug bb@bug.com" defeat both address parsers; take the first real address.
    for header in ("From", "Sender", "Reply-To"):
        raw = _raw_header(message, header)
        for address in [*_BRACKETED_ADDRESS.findall(raw), *_BARE_ADDRESS.findall(raw)]:
            try:
                normalized = normalize_email(address)
            except InvalidIdentity:
                continue
            display_name = " ".join(raw.replace(address, " ").strip(" <>\"'").split()) or None
            return normalized, display_name
    return None


def _recipients(message: Message, name: str) -> tuple[EmailAddress, ...]:
    recipients = []
    for display_name, address in _addresses(message, name):
        try:
            recipients.append(EmailAddress(normalize_email(address), display_name))
        except InvalidIdentity:
            continue
    return tuple(dict.fromkeys(recipients))


def _message_ids(value: str) -> list[str]:
    ids = [f"<{''.join(found.split())}>" for found in _MESSAGE_ID.findall(value) if found.strip()]
    if not ids:
        # Some mailers write ids without angle brackets; accept those that look like one.
        ids = [f"<{found}>" for found in _BARE_MESSAGE_ID.findall(value)]
    return ids


def _first_message_id(message: Message) -> str | None:
    ids = _message_ids(_raw_header(message, "Message-ID"))
    if not ids:
        return None
    if len(ids[0]) > _MAX_ID_LENGTH:
        return f"<sha256.{hashlib.sha256(ids[0].encode('utf-8', 'surrogateescape')).hexdigest()}@long-message-id>"
    return ids[0]


def message_id_from_headers(header_block: bytes) -> str | None:
    """Return the Message-ID `parse_email` stores for a message with these headers, or None when unsure.

    For a mailbox poller that reads headers before bodies. None means the id would be derived from the whole
    message, or cannot be told from the headers alone (8-bit bytes are decoded with the body's charset).
    """
    try:
        message = email.message_from_bytes(bytes(header_block or b"") + b"\r\n", policy=_POLICY)
        raw = _raw_header(message, "Message-ID")
    except Exception:  # promised never to raise: the body is then downloaded and ingest deduplicates
        return None
    if not raw.isascii():
        return None
    return _first_message_id(message)


def _derived_message_id(message: Message, raw: bytes) -> str:
    digest = hashlib.sha256()
    for name in ("From", "To", "Cc", "Date", "Subject"):
        digest.update(
            name.encode() + b":" + " ".join(_raw_headers(message, name)).encode("utf-8", "replace") + b"\n"
        )
    separator = _HEADER_BODY_SEPARATOR.search(raw)
    body = raw[separator.end() :] if separator else b""
    digest.update(body.replace(b"\r\n", b"\n"))
    return f"<sha256.{digest.hexdigest()}@no-message-id>"


def _date(message: Message) -> dt.datetime | None:
    raw = _raw_header(message, "Date")
    while _COMMENT.search(raw):
        raw = _COMMENT.sub(" ", raw)  # "(Newfoundland Time)", innermost first
    # A Received-style value ("by host with SMTP id x; Mon, 10 Oct 2022 ...") dates after the ";".
    for candidate in dict.fromkeys([raw.strip(), raw.rpartition(";")[2].strip()]):
        if not candidate:
            continue
        try:
            value = email.utils.parsedate_to_datetime(candidate)
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return None


# --- charsets -------------------------------------------------------------------------------------


def decode_bytes(data: bytes, declared: str | None) -> str:
    """Decode text bytes, trusting the declared charset only as far as the bytes agree; never raise."""
    codec = _codec(declared)
    if not data:
        return ""
    if codec and codec.startswith(_UNICODE_CODECS):
        if codec == "utf_8":
            return _decode_utf8_leniently(data)
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            return _decode_utf8_leniently(data)
    if codec and codec.startswith(_MULTIBYTE_CODECS):
        family = _ISO2022_JP_FAMILY if codec.startswith("iso2022_jp") else ()
        for candidate in (codec, *family, "utf-8"):
            try:
                return data.decode(candidate)
            except UnicodeDecodeError:
                continue
        return data.decode(codec, errors="replace")
    # A single-byte or missing label: bytes that are valid UTF-8 almost surely are UTF-8 (mislabeled).
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for candidate in (codec, "cp1252"):
        if candidate:
            try:
                return data.decode(candidate)
            except UnicodeDecodeError:
                continue
    return data.decode("latin-1")


def _decode_utf8_leniently(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
    # Mostly UTF-8 with a few broken bytes stays UTF-8; otherwise the label was wrong.
    broken = text.count("\ufffd")
    good = sum(1 for char in text if ord(char) > 127) - broken
    if good >= broken:
        return text
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _codec(declared: str | None) -> str | None:
    """Return Python's codec name for a declared charset, None when unknown or not a text codec."""
    label = (declared or "").strip().strip("\"'").lower()
    if not label:
        return None
    label = _CHARSET_ALIASES.get(label, label)
    if label is None:
        return None
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None  # "base64", "zlib" and such are not charsets
    return info.name.replace("-", "_")


def _repair(text: str, charset: str | None = None) -> str:
    """Decode raw 8-bit bytes the parser kept as surrogates (undeclared UTF-8 or Latin-1 headers)."""
    if not _SURROGATES.search(text):
        return text
    return decode_bytes(text.encode("utf-8", "surrogateescape"), charset)


def _charset_hint(message: Message) -> str | None:
    """Return the first charset any part of `message` declares."""
    for part in message.walk():
        try:
            charset = part.get_content_charset()
        except Exception:  # an unreadable parameter: look further
            continue
        if charset and _codec(charset) not in (None, "ascii"):
            return charset
    return None


# --- body structure -------------------------------------------------------------------------------


@dataclasses.dataclass
class _Structure:
    text_parts: list[Message] = dataclasses.field(default_factory=list)
    html_parts: list[Message] = dataclasses.field(default_factory=list)
    attachment_parts: list[Message] = dataclasses.field(default_factory=list)
    inline_ids: set[int] = dataclasses.field(default_factory=set)


def _content(message: EmailMessage) -> tuple[str, str | None, list[Attachment]]:
    """Return the text, the sanitized HTML (or None) and the attachments of `message`."""
    structure = _Structure()
    children = _parts_of(message)
    if children is not None:
        subtype = message.get_content_subtype()
        _walk(
            structure,
            children,
            subtype,
            subtype == "alternative",
            structure.text_parts,
            structure.html_parts,
            1,
        )
    else:
        _walk(structure, [message], "mixed", False, structure.text_parts, structure.html_parts, 1)

    texts = [_body_text(part) for part in structure.text_parts if _is_text_body(part)]
    html_parts = [part for part in structure.html_parts if _is_text_body(part)]
    has_html = any(_body_type(part) == "text/html" for part in html_parts)
    html = "\n".join(_body_html(part) for part in html_parts) if has_html else None

    attachments: list[Attachment] = []
    tnef_bodies: list[TnefContent] = []
    seen: set[int] = set()
    media_in_bodies = [
        part for part in [*structure.text_parts, *structure.html_parts] if not _is_text_body(part)
    ]
    for part in [*structure.attachment_parts, *media_in_bodies]:
        if id(part) in seen:
            continue
        seen.add(id(part))
        attachment = _attachment(part, structure.inline_ids)
        if is_tnef(attachment.content_type, attachment.filename):
            unpacked = unpack_tnef(attachment.content)
            if unpacked is not None:
                attachments.extend(unpacked.attachments)
                tnef_bodies.append(unpacked)
                continue
        attachments.append(attachment)

    text = "\n".join(piece.rstrip("\n") for piece in texts if piece.strip())
    # Outlook may send the formatted (or the only) body inside winmail.dat.
    tnef_body = next((body for body in tnef_bodies if body.html or body.text), None)
    if tnef_body is not None:
        if html is None and tnef_body.html:
            html = tnef_body.html
        if not text.strip():
            text = tnef_body.text or ""
    if html is not None:
        html = sanitize_html(html)
        if not text.strip():
            text = html_to_text(html)
    return text.lstrip("\n").rstrip(), html, attachments


def _walk(
    structure: _Structure,
    parts: list[Message],
    multipart_type: str,
    in_alternative: bool,
    text_parts: list[Message] | None,
    html_parts: list[Message] | None,
    depth: int,
) -> None:
    """Sort `parts` into text body, HTML body and attachments (RFC 8621, section 4.1.4)."""
    text_before = len(text_parts) if text_parts is not None else -1
    html_before = len(html_parts) if html_parts is not None else -1
    for index, part in enumerate(parts):
        children = _parts_of(part)
        if children is not None:
            if depth >= _MAX_DEPTH:
                continue  # pathological nesting: stop here rather than recurse without end
            subtype = part.get_content_subtype()
            _walk(
                structure,
                children,
                subtype,
                in_alternative or subtype == "alternative",
                text_parts,
                html_parts,
                depth + 1,
            )
            continue
        body_type = _body_type(part)
        is_media = part.get_content_maintype() in ("image", "audio", "video")
        is_inline = (
            _disposition(part) != "attachment"
            and (body_type in ("text/plain", "text/html") or is_media)
            and (index == 0 or (multipart_type != "related" and (is_media or not _filename(part))))
        )
        if not is_inline:
            structure.attachment_parts.append(part)
            continue
        structure.inline_ids.add(id(part))
        if multipart_type == "alternative":
            if body_type == "text/plain" and text_parts is not None:
                text_parts.append(part)
            elif body_type == "text/html" and html_parts is not None:
                html_parts.append(part)
            else:
                structure.attachment_parts.append(part)
            continue
        if in_alternative:
            if body_type == "text/plain":
                html_parts = None
            if body_type == "text/html":
                text_parts = None
        if text_parts is not None:
            text_parts.append(part)
        if html_parts is not None:
            html_parts.append(part)
        if (text_parts is None or html_parts is None) and is_media:
            structure.attachment_parts.append(part)
    if multipart_type == "alternative" and text_parts is not None and html_parts is not None:
        # One side had nothing to offer: show the other side's parts there too.
        if text_before == len(text_parts) and html_before != len(html_parts):
            text_parts.extend(html_parts[html_before:])
        if html_before == len(html_parts) and text_before != len(text_parts):
            html_parts.extend(text_parts[text_before:])


def _parts_of(part: Message) -> list[Message] | None:
    """Return the children of a multipart part, or None for a leaf."""
    if part.get_content_maintype() != "multipart":
        return None
    if isinstance(part.get_payload(), list):
        return _children(part)
    return _recovered_children(part)


def _recovered_children(part: Message) -> list[Message] | None:
    """Split a multipart whose boundary the parser misread (unquoted, with "=" in it)."""
    payload = part.get_payload()
    found = _LOOSE_BOUNDARY.search(_raw_header(part, "Content-Type"))
    if not isinstance(payload, str) or not found:
        return None
    boundary = found.group(1).strip()
    if not boundary or f"--{boundary}" not in payload:
        return None
    head = f'Content-Type: {part.get_content_type()}; boundary="{boundary}"\n\n'.encode("ascii", "replace")
    rebuilt = email.message_from_bytes(
        head + payload.encode("utf-8", "surrogateescape"), policy=_POLICY
    )
    return _children(rebuilt) if isinstance(rebuilt.get_payload(), list) else None


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    return [child for child in payload if isinstance(child, Message)] if isinstance(payload, list) else []


def _body_type(part: Message) -> str:
    # A multipart whose boundary never appears (even read leniently) is one plain-text body.
    if part.get_content_maintype() == "multipart":
        return "text/plain"
    return part.get_content_type()


def _is_text_body(part: Message) -> bool:
    return _body_type(part) in ("text/plain", "text/html")


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:  # a malformed Content-Disposition counts as none
        return None


def _body_text(part: Message) -> str:
    decoded = _decoded_text(part)
    return html_to_text(decoded) if _body_type(part) == "text/html" else decoded


def _body_html(part: Message) -> str:
    decoded = _decoded_text(part)
    if _body_type(part) == "text/html":
        return decoded
    return f"<pre>{html_lib.escape(decoded)}</pre>"


def _decoded_text(part: Message) -> str:
    data = _payload_bytes(part)
    try:
        charset = part.get_content_charset()
    except Exception:  # an unreadable charset parameter counts as none
        charset = None
    if charset is None and _body_type(part) == "text/html":
        found = _META_CHARSET.search(data[:4096])
        charset = found.group(1).decode("ascii") if found else None
    return decode_bytes(data, charset).replace("\r\n", "\n").replace("\r", "\n")


def _payload_bytes(part: Message) -> bytes:
    """Return a leaf part's content with its transfer encoding undone."""
    try:
        data = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding: keep the bytes as they came
        data = None
    if data is None:
        payload = part.get_payload()
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    return data


# --- attachments ----------------------------------------------------------------------------------


def _attachment(part: Message, inline_ids: set[int]) -> Attachment:
    content_type = part.get_content_type()
    disposition = _disposition(part)
    content_id = _content_id(part)
    is_media = part.get_content_maintype() in ("image", "audio", "video")
    return Attachment(
        filename=_filename(part) or _default_name(part),
        content_type=content_type,
        content=_attachment_bytes(part),
        content_id=content_id,
        is_inline=disposition != "attachment"
        and (content_id is not None or (is_media and id(part) in inline_ids)),
    )


def _filename(part: Message) -> str | None:
    """Return the part's file name, decoded (RFC 2231 and RFC 2047) and without any path."""
    try:
        name = part.get_filename()
    except Exception:  # a malformed parameter list
        name = None
    if not name:
        return None
    name = _repair(str(name))
    if " " not in name:
        # An unquoted name with spaces ("name=This is a test.txt") is cut at the first space.
        for header in ("Content-Disposition", "Content-Type"):
            for loose in _LOOSE_NAME.findall(_raw_header(part, header)):
                if loose.strip().startswith(name) and "*" not in loose:
                    name = loose.strip()
    if "=?" in name:
        name = _decode_words(name) or name
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).replace("\\", "/").rsplit("/", 1)[-1].strip().strip(".") or ""
    return name[:255] or None


def _default_name(part: Message) -> str:
    content_type = part.get_content_type()
    if content_type in ("message/rfc822", "message/global"):
        embedded = _children(part)
        subject = _unstructured(embedded[0], "Subject") if embedded else ""
        safe = re.sub(r"[\\/:*?\"<>|\x00-\x1f]+", "_", subject).strip(" ._")[:100]
        return f"{safe or 'forwarded-message'}.eml"
    if content_type in _DEFAULT_NAMES:
        return _DEFAULT_NAMES[content_type]
    extension = _MIME_TYPES.guess_extension(content_type) or ".bin"
    return f"attachment{extension}"


def _content_id(part: Message) -> str | None:
    value = _raw_header(part, "Content-ID")
    return value.strip().strip("<>").strip() or None


def _attachment_bytes(part: Message) -> bytes:
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822, message/delivery-status: serialize what was parsed
        return b"\n".join(_serialize(child) for child in payload if isinstance(child, Message))
    return _payload_bytes(part)


def _serialize(message: Message) -> bytes:
    try:
        # compat32 without a line limit writes the headers back as they came, without refolding.
        return message.as_bytes(policy=email.policy.compat32.clone(max_line_length=None))
    except Exception:  # a header the generator cannot write back; keep a best-effort copy
        return str(message).encode("utf-8", "surrogateescape")


def _address_json(address: EmailAddress) -> dict:
    return {"address": address.address, "name": address.display_name}
