"""Recognize automatic mail: out-of-office and list mail, read receipts, bounces.

Every detector has one shape: it takes the parsed message and returns None when it sees nothing,
else what it found. Detectors never raise on odd headers.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email.parser
import email.policy
import email.utils
import re
from email.message import EmailMessage, Message

from channels.messages import BouncedRecipient, BounceReport

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_BASE64_BODY = re.compile(r"[A-Za-z0-9+/=\s]{16,}")
_STATUS_CODE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")

# Out-of-office subjects as mail programs write them, in several languages; anchored at the start
# (after "AW:"/"Re:") so that a customer writing about absence is not caught.
_AUTO_REPLY_SUBJECT = re.compile(
    r"(?:(?:re|aw|sv|vs|antw|r|rif|odp|fw|wg)\s?:\s*)*"
    r"(?:auto(?:matic|mated)?[\s_-]?(?:reply|response|answer)|autoreply|out of (?:the )?office|ooo\b"
    r"|i am out of the office|away from (?:the|my) office|on vacation|vacation reply"
    r"|abwesenheitsnotiz|automatische antwort|außer haus|ausser haus|nicht im büro"
    r"|réponse automatique|absent(?:e)? du bureau|absence du bureau|message d'absence"
    r"|respuesta automática|fuera de la oficina|risposta automatica|fuori ufficio|fuori sede"
    r"|resposta automática|fora do escritório|automatisch antwoord|niet aanwezig"
    r"|automatiskt svar|autosvar|automatisk svar|ikke på kontoret"
    r"|automaattinen vastaus|poissa toimistolta|odpowiedź automatyczna|autoodpowiedź|poza biurem"
    r"|automatická odpověď|mimo kancelář|автоматический ответ|автоответ|нет в офисе"
    r"|自動応答|自動返信|不在通知|自动回复|自動回覆|자동 회신|자동 응답|부재중|תשובה אוטומטית|מחוץ למשרד"
    # single words only as a label ("Abwesend: ..."), since they also start ordinary subjects
    r"|(?:abwesend|afwezig|frånvaro|fravær|fraværende|ausente|nieobecność|absence|absent|vacation)\s?:)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"(?:undeliver|undelivered mail|delivery (?:status notification|failure|failed|has failed|problem)"
    r"|returned mail|failure notice|mail delivery (?:failed|failure|system)|could not be delivered"
    r"|non remis|non distribuable|unzustellbar|nicht zustellbar|onbestelbaar|no se puede entregar"
    r"|non recapitabile|olevererbart|kan ikke leveres|niedostarczalne|nedoručitelné)",
    re.IGNORECASE,
)
_BOUNCE_SENDER = re.compile(r"(?:mailer-daemon|postmaster|mail-daemon|mail delivery)", re.IGNORECASE)
_SUPPRESS_VALUES = frozenset({"", "none"})


def detect_auto_reply(message: EmailMessage) -> str | None:
    """Return why `message` looks machine-sent (auto-reply, list mail, read receipt), or None."""
    auto_submitted = _header(message, "Auto-Submitted").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return f"Auto-Submitted: {auto_submitted}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        value = _header(message, name).strip().lower()
        if _has_header(message, name) and value not in ("no", "false", "0"):
            return f"{name}: {value or 'set'}"
    precedence = _header(message, "Precedence").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"Precedence: {precedence}"
    suppress = _header(message, "X-Auto-Response-Suppress").strip()
    if _has_header(message, "X-Auto-Response-Suppress") and suppress.lower() not in _SUPPRESS_VALUES:
        return f"X-Auto-Response-Suppress: {suppress}"
    if _has_header(message, "List-Id"):
        return "List-Id: mailing-list message"
    if _report_type(message) == "disposition-notification":
        return "read receipt (disposition-notification report)"
    subject = " ".join(_header(message, "Subject").split())
    if _AUTO_REPLY_SUBJECT.match(subject):
        return f"out-of-office subject: {subject[:80]}"
    return None


def detect_bounce(message: EmailMessage) -> BounceReport | None:
    """Return the delivery-status report `message` carries (RFC 3464 or a plain-text bounce), or None."""
    report = _delivery_report_part(message)
    if report is not None:
        return _read_delivery_report(report)
    return _read_plain_bounce(message)


# --- RFC 3464 delivery-status reports -------------------------------------------------------------


def _delivery_report_part(message: Message) -> Message | None:
    for part in _walk(message):
        if part.get_content_type() == "multipart/report" and _report_type(part) in (
            "delivery-status",
            "global-delivery-status",
        ):
            return part
    return None


def _read_delivery_report(report: Message) -> BounceReport:
    recipients: list[BouncedRecipient] = []
    original_message_id = None
    for part in _children(report):
        content_type = part.get_content_type()
        if content_type in ("message/delivery-status", "message/global-delivery-status"):
            recipients.extend(_recipients_from_fields(_status_fields(part)))
        elif content_type in (
            "message/rfc822",
            "message/global",
            "text/rfc822-headers",
            "message/global-headers",
        ):
            original_message_id = original_message_id or _returned_message_id(part)
    if not recipients:
        recipients = _with_status_from_text(_recipients_from_failed_header(report), _first_text(report))
    return _report(recipients, original_message_id)


def _status_fields(part: Message) -> list[tuple[str, str]]:
    """Return the (lower-case name, value) fields of a message/delivery-status part, in order."""
    payload = part.get_payload()
    fields: list[tuple[str, str]] = []
    if not isinstance(payload, list):
        return _fields_from_text(payload if isinstance(payload, str) else "")
    for block in payload:
        try:
            fields.extend((name.lower(), str(value)) for name, value in block.raw_items())
            body = block.get_payload()
        except Exception:  # a damaged block: skip it, keep the others
            continue
        if isinstance(body, str) and body.strip():
            # Some gateways base64-encode the recipient blocks (announcing it among the fields above).
            fields.extend(_fields_from_text(_maybe_base64(body)))
    return fields


def _maybe_base64(text: str) -> str:
    if not _BASE64_BODY.fullmatch(text.strip()):
        return text
    try:
        return base64.b64decode("".join(text.split()), validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return text


def _fields_from_text(text: str) -> list[tuple[str, str]]:
    fields = []
    for line in re.sub(r"\r?\n[ \t]+", " ", text).splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip() and " " not in name.strip():
            fields.append((name.strip().lower(), value.strip()))
    return fields


def _recipients_from_fields(fields: list[tuple[str, str]]) -> list[BouncedRecipient]:
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for name, value in fields:
        value = " ".join(value.split())
        if name in ("original-recipient", "final-recipient"):
            # A new recipient block starts (even without the blank line that should separate them).
            starts_new = name in current or (
                "final-recipient" in current and ("action" in current or "status" in current)
            )
            if starts_new:
                records.append(current)
                current = {}
            current[name] = value
        elif name in ("action", "status", "diagnostic-code") and current:
            current.setdefault(name, value)
    if current:
        records.append(current)
    recipients = []
    for record in records:
        address = _typed_value(record.get("final-recipient") or record.get("original-recipient") or "")
        if not address:
            continue
        status = _STATUS_CODE.search(record.get("status", ""))
        recipients.append(
            BouncedRecipient(
                recipient=address.strip("<> ").lower(),
                action=(record.get("action") or "").split()[0].lower() if record.get("action") else None,
                status=status.group(1) if status else (record.get("status") or None),
                diagnostic_code=_typed_value(record.get("diagnostic-code", "")) or None,
            )
        )
    return recipients


def _typed_value(value: str) -> str:
    """Return a DSN value without its type prefix ("rfc822; a@b" -> "a@b", "smtp; 550 ..." -> "550 ...")."""
    kind, semicolon, rest = value.partition(";")
    return (rest if semicolon and " " not in kind.strip() else value).strip()


def _returned_message_id(part: Message) -> str | None:
    if part.get_content_type() in ("message/rfc822", "message/global"):
        payload = part.get_payload()
        headers = payload[0] if isinstance(payload, list) and payload else None
    else:
        payload = part.get_payload(decode=True) or b""
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(payload)
    if headers is None:
        return None
    found = _MESSAGE_ID.search(_header(headers, "Message-ID"))
    return found.group(0) if found else None


def _recipients_from_failed_header(message: Message) -> list[BouncedRecipient]:
    addresses = _ADDRESS.findall(_header(message, "X-Failed-Recipients"))
    return [BouncedRecipient(recipient=address.lower(), action="failed") for address in addresses]


def _report(recipients: list[BouncedRecipient], original_message_id: str | None) -> BounceReport:
    main = next(
        (r for r in recipients if r.action == "failed" or (r.status or "").startswith("5")),
        recipients[0] if recipients else None,
    )
    return BounceReport(
        recipient=main.recipient if main else None,
        action=main.action if main else None,
        status=main.status if main else None,
        diagnostic_code=main.diagnostic_code if main else None,
        original_message_id=original_message_id,
        recipients=tuple(recipients),
    )


# --- bounces without a report (old MTAs, some providers) -----------------------------------------


def _read_plain_bounce(message: Message) -> BounceReport | None:
    sender = _header(message, "From")
    subject = _header(message, "Subject")
    has_failed_header = _has_header(message, "X-Failed-Recipients")
    if not has_failed_header and not (_BOUNCE_SENDER.search(sender) and _BOUNCE_SUBJECT.search(subject)):
        return None
    recipients = _recipients_from_failed_header(message)
    text = _first_text(message)
    original_message_id = next(
        (
            _returned_message_id(part)
            for part in _walk(message)
            if part.get_content_type() in ("message/rfc822", "text/rfc822-headers")
        ),
        None,
    )
    if original_message_id is None:
        found = re.search(r"(?im)^\s*message-id:\s*(<[^<>\s]+>)", text)
        original_message_id = found.group(1) if found else None
    if not recipients:
        own = email.utils.parseaddr(sender)[1].lower()
        candidates = [a.lower() for a in _ADDRESS.findall(text) if a.lower() != own]
        recipients = [BouncedRecipient(recipient=candidates[0], action="failed")] if candidates else []
    return _report(_with_status_from_text(recipients, text), original_message_id)


def _first_text(message: Message) -> str:
    for part in _walk(message):
        if part.get_content_type() == "text/plain":
            try:
                payload = part.get_payload(decode=True) or b""
            except Exception:  # a broken transfer encoding: try the next part
                continue
            return payload.decode("utf-8", errors="replace")
    return ""


def _with_status_from_text(recipients: list[BouncedRecipient], text: str) -> list[BouncedRecipient]:
    """Fill in the status code a human-readable bounce names (such as "550 5.1.1") when none was given."""
    status = _STATUS_CODE.search(text)
    if not recipients or not status or recipients[0].status:
        return recipients
    first = dataclasses.replace(recipients[0], status=status.group(1))
    return [first, *recipients[1:]]


# --- helpers --------------------------------------------------------------------------------------


def _walk(message: Message):
    """Yield every part, not descending into attached messages (their bounces are not ours)."""
    yield message
    if message.get_content_maintype() == "multipart":
        for part in _children(message):
            yield from _walk(part)


def _children(message: Message) -> list[Message]:
    payload = message.get_payload()
    return [part for part in payload if isinstance(part, Message)] if isinstance(payload, list) else []


def _report_type(message: Message) -> str:
    try:
        return str(message.get_param("report-type", "") or "").lower()
    except Exception:  # a malformed Content-Type
        return ""


def _has_header(message: Message, name: str) -> bool:
    return any(key.lower() == name.lower() for key, _ in message.raw_items())


def _header(message: Message, name: str) -> str:
    """Return a header as text, or "" when missing or unreadable."""
    try:
        return str(message.get(name, "") or "")
    except Exception:  # the header parser trips over some malformed values; use the raw text
        raw = next((value for key, value in message.raw_items() if key.lower() == name.lower()), "")
        return str(raw)
