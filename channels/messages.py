"""The normalized message types every channel produces and consumes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum


class ChannelName(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    CHAT = "chat"


class IdentityKind(enum.StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    VISITOR = "visitor"


@dataclasses.dataclass(frozen=True)
class SenderIdentity:
    """Who sent a message, as the channel knows them."""

    kind: IdentityKind
    #: Normalized: lower-case email address, E.164 phone number, or visitor id.
    value: str
    display_name: str | None = None


@dataclasses.dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes
    content_id: str | None = None
    is_inline: bool = False

    @property
    def size(self) -> int:
        return len(self.content)


@dataclasses.dataclass(frozen=True)
class ThreadHints:
    """What the channel knows about which conversation a message belongs to.

    Ingest decides; the channel only reports what it saw.
    """

    #: External ids this message replies to (email In-Reply-To, then References, newest first).
    reply_to_external_ids: tuple[str, ...] = ()
    #: A ticket number the sender named (such as a `[#1234]` subject token).
    ticket_number: int | None = None
    #: Join the customer's open ticket on the same channel (SMS, WhatsApp, chat).
    join_open_ticket_on_channel: bool = False


@dataclasses.dataclass(frozen=True)
class EmailAddress:
    """One mailbox from an address header (To, Cc)."""

    #: Lower-cased bare address.
    address: str
    display_name: str | None = None


@dataclasses.dataclass(frozen=True)
class BouncedRecipient:
    """What a delivery-status report says about one recipient."""

    recipient: str
    #: RFC 3464 action: failed, delayed, delivered, relayed or expanded.
    action: str | None = None
    #: RFC 3463 status code such as 5.1.1.
    status: str | None = None
    diagnostic_code: str | None = None


@dataclasses.dataclass(frozen=True)
class BounceReport:
    """A delivery-status notification: which recipient failed, how, and for which message we sent."""

    #: The first recipient that failed (else the first one reported), with its action and status.
    recipient: str | None = None
    action: str | None = None
    status: str | None = None
    diagnostic_code: str | None = None
    #: Message-ID of the mail that bounced, from the returned message or headers, when included.
    original_message_id: str | None = None
    recipients: tuple[BouncedRecipient, ...] = ()

    @property
    def is_failure(self) -> bool:
        """Tell whether delivery failed for good (not just a delay warning)."""
        if not self.recipients:
            return True
        return any(r.action == "failed" or (r.status or "").startswith("5") for r in self.recipients)


@dataclasses.dataclass(frozen=True)
class InboundMessage:
    channel: ChannelName
    sender: SenderIdentity
    #: Unique per source: the provider's id (Message-ID, MessageSid, chat client id), namespaced.
    dedupe_key: str
    #: The provider's own id, shown to agents and used for threading.
    external_id: str
    text: str
    html: str | None = None
    subject: str | None = None
    #: The new part of the text without quoted history or signature, when the channel can tell.
    reply_text: str | None = None
    received_at: dt.datetime | None = None
    attachments: tuple[Attachment, ...] = ()
    thread: ThreadHints = dataclasses.field(default_factory=ThreadHints)
    #: Automatic mail (out-of-office, bounces) is stored but never triggers replies.
    is_automatic: bool = False
    #: Extra identities the sender revealed (a chat visitor who gave an email address).
    other_identities: tuple[SenderIdentity, ...] = ()
    #: Email only: the To and Cc recipients.
    to: tuple[EmailAddress, ...] = ()
    cc: tuple[EmailAddress, ...] = ()
    #: When the sender says it was sent (the email Date header); sender-controlled, so not for ordering.
    sent_at: dt.datetime | None = None
    #: Why the message counts as automatic (a header or subject the filters recognized).
    automatic_reason: str | None = None
    #: A delivery failure report about a message we sent; `bounce` says which one and why.
    is_bounce: bool = False
    #: Any delivery-status report, including delay warnings that are not (yet) bounces.
    bounce: BounceReport | None = None
    #: The language of the new part (ISO 639-1) when it was detected before ingest, as the email parser process
    #: does; "und" when detection ran and could not tell. None: ingest detects it.
    language: str | None = None


@dataclasses.dataclass(frozen=True)
class OutboundMessage:
    channel: ChannelName
    #: The customer's address on that channel: email address, E.164 number or visitor id.
    recipient: str
    text: str
    html: str | None = None
    subject: str | None = None
    #: Stable across retries, so a provider that deduplicates never sends two copies.
    external_id: str | None = None
    reply_to_external_ids: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    is_automatic: bool = False


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class DeliveryResult:
    status: DeliveryStatus
    #: The provider's id for what it accepted (a Twilio SID, an SMTP queue id).
    provider_id: str | None = None
    error: str | None = None
    #: Worth trying again later (a 4xx SMTP reply, HTTP 5xx or 429).
    is_temporary: bool = False
