"""Raw RFC 5322 bytes to InboundMessage, with the standard `email` package."""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import re

from channels.html import html_to_text, sanitize_html
from channels.identities import normalize_email
from channels.messages import Attachment, ChannelName, IdentityKind, InboundMessage, SenderIdentity, ThreadHints

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_TICKET_TOKEN = re.compile(r"\[#(\d{1,12})\]")


class UnparseableEmail(ValueError):
    """The bytes are not a message we can store; the caller quarantines them."""


def _message_ids(value: str | None) -> list[str]:
    return _MESSAGE_ID.findall(str(value or ""))


def _decoded_text(part) -> str:
    try:
        return part.get_content()
    except (LookupError, UnicodeError, AssertionError):
        # Unknown or mislabeled charset: decode the bytes leniently rather than losing the body.
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", errors="replace")


def parse_email(raw: bytes) -> InboundMessage:
    """Parse `raw` into the normalized message; raise UnparseableEmail when there is no usable sender."""
    if not raw or not raw.strip():
        raise UnparseableEmail("the message is empty")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    try:
        sender_name, sender_address = email.utils.parseaddr(str(message.get("From", "")))
        address = normalize_email(sender_address)
    except Exception as error:
        raise UnparseableEmail(f"no usable From address: {error}") from None

    message_id = (_message_ids(message.get("Message-ID")) or [None])[0]
    if message_id is None:
        # No Message-ID: derive a stable one from the bytes, so a redelivery is still recognized.
        message_id = f"<sha256.{hashlib.sha256(raw).hexdigest()}@no-message-id>"
    in_reply_to = _message_ids(message.get("In-Reply-To"))
    references = _message_ids(message.get("References"))
    reply_to_ids = tuple(dict.fromkeys([*in_reply_to, *reversed(references)]))

    subject = str(message.get("Subject", "") or "").strip()
    token = _TICKET_TOKEN.search(subject)

    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    html = sanitize_html(_decoded_text(html_part)) if html_part is not None else None
    text = _decoded_text(text_part) if text_part is not None else (html_to_text(html) if html else "")

    attachments = []
    for part in message.iter_attachments():
        content = part.get_payload(decode=True) or b""
        attachments.append(
            Attachment(
                filename=part.get_filename() or "attachment",
                content_type=part.get_content_type(),
                content=content,
                content_id=(part.get("Content-ID") or "").strip("<> ") or None,
                is_inline=part.get_content_disposition() == "inline",
            )
        )

    return InboundMessage(
        channel=ChannelName.EMAIL,
        sender=SenderIdentity(IdentityKind.EMAIL, address, sender_name or None),
        dedupe_key=f"email:{message_id}",
        external_id=message_id,
        text=text,
        html=html,
        subject=subject,
        attachments=tuple(attachments),
        thread=ThreadHints(
            reply_to_external_ids=reply_to_ids,
            ticket_number=int(token.group(1)) if token else None,
        ),
        is_automatic=_is_automatic(message),
    )


def _is_automatic(message) -> bool:
    auto_submitted = str(message.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(message.get("Precedence", "")).strip().lower()
    return (
        auto_submitted not in ("", "no")
        or precedence in ("bulk", "junk", "list", "auto_reply")
        or message.get("X-Autoreply") is not None
        or message.get("X-Autorespond") is not None
        or message.get_content_type() == "multipart/report"
    )
