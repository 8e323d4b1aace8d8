"""Twilio SMS and WhatsApp: the signed webhooks, the sending channel and delivery-status reports.

    bp = create_webhook_blueprint(hooks)      # POST /channels/twilio/sms, /whatsapp, /status; 403 if forged
    TwilioChannel(ChannelName.SMS, settings).send(outbound)
    # -> DeliveryResult(QUEUED, provider_id="SM…"), or FAILED: temporary for HTTP 5xx, 429 and refused
    #    connections, permanent with Twilio's code and its meaning otherwise
    TwilioAccountChannel(ChannelName.SMS, settings_for, fallback)  # the account looked up at each send

The webhooks never touch the database: the app factory hands the blueprint its callables (`WebhookHooks`).
An inbound message's webhook only checks the signature and hands the form over to be kept (`on_received`); the
app reads it with read_webhook() and fetches its media after Twilio has its answer.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import mimetypes
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping

import requests
import urllib3.exceptions
from flask import Blueprint, Response, abort, request
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse

from channels.base import Channel
from channels.identities import InvalidIdentity, normalize_phone
from channels.messages import (
    Attachment,
    ChannelName,
    DeliveryResult,
    DeliveryStatus,
    IdentityKind,
    InboundMessage,
    OutboundMessage,
    SenderIdentity,
    ThreadHints,
)
from channels.sms.segments import sms_body

log = logging.getLogger(__name__)

API_HOST = "api.twilio.com"
SMS_PATH = "/channels/twilio/sms"
WHATSAPP_PATH = "/channels/twilio/whatsapp"
STATUS_PATH = "/channels/twilio/status"
WHATSAPP_PREFIX = "whatsapp:"
#: Starts the delivery error of a send whose answer never came: Twilio may have accepted it. A status
#: report naming the message (by its ref) later settles it; the outbox never sends it again.
OUTCOME_UNKNOWN = "outcome unknown"

#: Twilio error codes agents are likely to meet, with what they mean.
ERROR_MEANINGS = {
    20003: "Authentication failed (check the account SID and auth token)",
    20429: "Too many requests",
    21211: "Invalid 'To' phone number",
    21408: "Sending to this region is not enabled on the account",
    21606: "The 'From' number cannot send messages to this destination",
    21608: "Trial account: the number is not verified",
    21610: "Unsubscribed recipient (they replied STOP)",
    21612: "The 'To' number cannot be reached by SMS",
    21614: "'To' number is not a valid mobile number",
    21617: "The message body exceeds the 1600 character limit",
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Carrier violation: message filtered",
    30008: "Unknown error",
    30009: "Missing segment",
    30034: "Sender not registered for A2P 10DLC",
    63003: "WhatsApp could not find the recipient",
    63016: "WhatsApp: outside the 24-hour window, only a template message can be sent",
    63018: "WhatsApp rate limit exceeded",
}

#: Twilio's message statuses as ours; anything else (receiving, received) is not about delivery.
TWILIO_STATUSES = {
    "accepted": DeliveryStatus.QUEUED,
    "scheduled": DeliveryStatus.QUEUED,
    "queued": DeliveryStatus.QUEUED,
    "sending": DeliveryStatus.SENT,
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.DELIVERED,
    "undelivered": DeliveryStatus.UNDELIVERED,
    "failed": DeliveryStatus.FAILED,
    "canceled": DeliveryStatus.FAILED,
}

#: Media kept from MMS and WhatsApp; others (SVG, HTML, executables) are refused with a note.
ALLOWED_MEDIA_PREFIXES = ("image/", "audio/", "video/")
ALLOWED_MEDIA_TYPES = frozenset({"application/pdf", "text/vcard", "text/x-vcard", "text/calendar", "text/plain"})
REFUSED_MEDIA_TYPES = frozenset({"image/svg+xml"})
#: Twilio sends at most 10 media per message; more in a forged-but-signed form is ignored.
MAX_MEDIA = 10


def describe_error(code: int | str | None, message: str | None = None) -> str:
    """Return "30003: Unreachable destination handset" for a Twilio error code (Twilio's text if unknown)."""
    try:
        number = int(code) if code not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    meaning = ERROR_MEANINGS.get(number) if number is not None else None
    text = meaning or (message or "").strip() or "see Twilio's error reference"
    return f"{number}: {text}" if number is not None else text


@dataclasses.dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    auth_token: str = dataclasses.field(repr=False)
    #: Sends from this number, or through this Messaging Service when no number is given.
    from_number: str | None = None
    messaging_service_sid: str | None = None
    #: The WhatsApp sender, as a bare E.164 number.
    whatsapp_from: str | None = None
    #: Where Twilio reaches us: webhooks are validated against it, status callbacks point to it.
    public_url: str = "http://127.0.0.1:5000"
    #: Send API calls and media downloads here instead of api.twilio.com (an emulator, a proxy).
    api_base_url: str | None = None
    #: Kept below the wait a status callback gives the worker (see helpdesk.sms) and Twilio's own 15 s.
    timeout: float = 8.0
    media_max_bytes: int = 10 * 1024 * 1024
    #: All media of one webhook must be fetched within this, or Twilio gives up on the webhook (15 s).
    media_deadline: float = 10.0

    def can_send(self, channel: ChannelName) -> bool:
        if channel is ChannelName.WHATSAPP:
            return bool(self.whatsapp_from or self.messaging_service_sid)
        return bool(self.from_number or self.messaging_service_sid)

    def status_callback_url(self, ref: str | None) -> str:
        """Return the status callback URL; `ref` (our id for the message) lets a report find it by itself."""
        url = self.public_url.rstrip("/") + STATUS_PATH
        return f"{url}?{urllib.parse.urlencode({'ref': ref})}" if ref else url


class MediaError(Exception):
    """A media file that could not be fetched or was refused; the message says why.

    Temporary (Twilio busy or unreachable, our credentials refused) is worth another try later; anything
    else (gone, too large, a refused type) would fail the same way again.
    """

    def __init__(self, message: str, *, is_temporary: bool = False):
        super().__init__(message)
        self.is_temporary = is_temporary


def is_temporary_media_status(status: int) -> bool:
    """Tell whether an HTTP status from a media download may go away (5xx, 429; 401 until creds are fixed)."""
    return status >= 500 or status in (401, 408, 429)


class BaseUrlHttpClient(TwilioHttpClient):
    """Twilio's own HTTP client, sending what is meant for *.twilio.com to `base_url` when one is given."""

    def __init__(self, base_url: str | None = None, timeout: float | None = None):
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/") if base_url else None

    def rewrite(self, url: str) -> str:
        if not self.base_url:
            return url
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if host != "twilio.com" and not host.endswith(".twilio.com"):
            return url
        base = urllib.parse.urlsplit(self.base_url)
        return urllib.parse.urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, ""))

    def request(self, method, url, *args, **kwargs):
        return super().request(method, self.rewrite(url), *args, **kwargs)

    def download(self, url: str, auth: tuple[str, str], *, max_bytes: int, deadline: float) -> tuple[str, bytes]:
        """Fetch `url` with basic auth; return (content type, bytes); raise MediaError past the limits."""
        timeout = max(0.5, min(self.timeout or 10.0, deadline - time.monotonic()))
        try:
            # Twilio answers with a redirect to its CDN; requests drops the credentials on the way there.
            with self.session.get(self.rewrite(url), auth=auth, stream=True, timeout=timeout,
                                  allow_redirects=True) as response:
                if response.status_code != 200:
                    raise MediaError(f"HTTP {response.status_code} from Twilio",
                                     is_temporary=is_temporary_media_status(response.status_code))
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise MediaError(f"{int(declared)} bytes is over the {max_bytes}-byte limit")
                chunks, size = [], 0
                for chunk in response.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise MediaError(f"over the {max_bytes}-byte limit")
                    if time.monotonic() > deadline:
                        raise MediaError("took too long to download", is_temporary=True)
                    chunks.append(chunk)
                return _bare_type(response.headers.get("Content-Type", "")), b"".join(chunks)
        except requests.RequestException as error:
            # Refused connections, timeouts, dropped connections: Twilio may answer next time.
            raise MediaError(f"{type(error).__name__}: {error}", is_temporary=True) from None

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def _bare_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


_MEDIA_ACCOUNT = re.compile(r"/Accounts/(AC[0-9a-f]{32})/")


def media_account_sid(url: str) -> str | None:
    """Return the account SID in a Twilio media URL (the account whose credentials fetch it), or None."""
    match = _MEDIA_ACCOUNT.search(urllib.parse.urlsplit(url).path)
    return match.group(1) if match else None


def is_allowed_media_type(content_type: str) -> bool:
    content_type = _bare_type(content_type)
    if content_type in REFUSED_MEDIA_TYPES:
        return False
    return content_type in ALLOWED_MEDIA_TYPES or content_type.startswith(ALLOWED_MEDIA_PREFIXES)


class TwilioChannel:
    """Sends SMS or WhatsApp replies through one Twilio account."""

    def __init__(self, name: ChannelName, settings: TwilioSettings, http_client: BaseUrlHttpClient | None = None):
        self.name = ChannelName(name)
        self.settings = settings
        self.http = http_client or BaseUrlHttpClient(settings.api_base_url, settings.timeout)
        self.client = Client(settings.account_sid, settings.auth_token, http_client=self.http)

    def send(self, message: OutboundMessage) -> DeliveryResult:
        sender = self._sender()
        if sender is None:
            return DeliveryResult(DeliveryStatus.FAILED, error=f"no Twilio sender configured for {self.name}")
        to = message.recipient
        if self.name is ChannelName.WHATSAPP and not to.startswith(WHATSAPP_PREFIX):
            to = WHATSAPP_PREFIX + to
        try:
            created = self.client.messages.create(
                to=to, body=sms_body(message.text),
                # The ref names our message, so a status report finds it even before (or without) its SID
                # being recorded: that is how a send whose answer was lost gets settled.
                status_callback=self.settings.status_callback_url(message.external_id),
                **sender,
            )
        except (TwilioRestException, TwilioServiceException) as error:
            return _refused(error)
        except (requests.RequestException, ValueError) as error:
            if _never_reached(error):
                return DeliveryResult(DeliveryStatus.FAILED, is_temporary=True,
                                      error=f"Twilio unreachable: {type(error).__name__}: {error}")
            # The request may have reached Twilio and been accepted: sending it again could deliver two
            # copies, so it is not retried. A status report for its ref will settle it (helpdesk.sms).
            return DeliveryResult(DeliveryStatus.FAILED, error=(
                f"{OUTCOME_UNKNOWN}: {type(error).__name__}: {error}. Twilio may have accepted it; "
                "a delivery report will update this, otherwise check the Twilio console before resending"))
        return DeliveryResult(TWILIO_STATUSES.get(created.status or "", DeliveryStatus.QUEUED),
                              provider_id=created.sid)

    def _sender(self) -> dict[str, str] | None:
        settings = self.settings
        if self.name is ChannelName.WHATSAPP:
            if settings.whatsapp_from:
                return {"from_": WHATSAPP_PREFIX + settings.whatsapp_from.removeprefix(WHATSAPP_PREFIX)}
        elif settings.from_number:
            return {"from_": settings.from_number}
        if settings.messaging_service_sid:
            return {"messaging_service_sid": settings.messaging_service_sid}
        return None

    def close(self) -> None:
        self.http.close()


class NoSendingAccount(Exception):
    """Texts on a channel cannot go out now (say its Twilio account is disabled); the message says why."""


class TwilioAccountChannel:
    """Sends through the Twilio account `settings_for` names at each send, so a changed account needs no restart.

    `settings_for(channel)` returns the account's settings, None when no account is set up at all (the
    `fallback`, the local log, takes the text), or raises NoSendingAccount (the text waits and is retried).
    """

    #: Clients kept for accounts in use; more (accounts changed again and again) closes the oldest.
    MAX_CLIENTS = 4

    def __init__(self, name: ChannelName, settings_for: Callable[[ChannelName], TwilioSettings | None],
                 fallback: Channel):
        self.name = ChannelName(name)
        self.settings_for = settings_for
        self.fallback = fallback
        self._channels: dict[TwilioSettings, TwilioChannel] = {}
        self._lock = threading.Lock()

    def send(self, message: OutboundMessage) -> DeliveryResult:
        try:
            settings = self.settings_for(self.name)
        except NoSendingAccount as error:
            return DeliveryResult(DeliveryStatus.FAILED, error=str(error), is_temporary=True)
        if settings is None:
            return self.fallback.send(message)
        return self.channel_for(settings).send(message)

    def channel_for(self, settings: TwilioSettings) -> TwilioChannel:
        """Return the sending channel of these settings, built once while they stay the same."""
        with self._lock:
            channel = self._channels.pop(settings, None) or TwilioChannel(self.name, settings)
            self._channels[settings] = channel  # most recently used last
            while len(self._channels) > self.MAX_CLIENTS:
                oldest = next(iter(self._channels))
                self._channels.pop(oldest).close()
            return channel

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


def _refused(error: TwilioRestException | TwilioServiceException) -> DeliveryResult:
    status = int(error.status or 0)
    message = getattr(error, "msg", None) or getattr(error, "detail", None) or getattr(error, "title", "")
    message = str(message).removeprefix("Unable to create record: ").strip()
    code = error.code if error.code and error.code != status else None
    if code:
        reason = describe_error(code, message)
        if message and message.lower() not in reason.lower():
            reason = f"{reason} ({message})"
    else:
        reason = f"HTTP {status}: {message}"
    # 5xx and 429: Twilio did not take it, try later. 401: our credentials are wrong, not this message;
    # keep it for retries while an admin fixes them (as the SMTP channel does).
    temporary = status >= 500 or status in (401, 429)
    return DeliveryResult(DeliveryStatus.FAILED, error=reason, is_temporary=temporary)


def _never_reached(error: Exception) -> bool:
    """Tell whether the request certainly never reached Twilio, so sending again cannot make a copy."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    if not isinstance(error, requests.ConnectionError):
        return False
    reason = error.args[0] if error.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                               urllib3.exceptions.SSLError))


# --- inbound -------------------------------------------------------------------------------------------


class Keyword(enum.StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"


#: Whole-message keywords, as carriers and Twilio's default opt-out handling read them.
KEYWORDS = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"), Keyword.STOP),
    **dict.fromkeys(("START", "YES", "UNSTOP", "OPTIN"), Keyword.START),
    **dict.fromkeys(("HELP", "INFO"), Keyword.HELP),
}


def keyword_of(body: str, opt_out_type: str | None = None) -> Keyword | None:
    """Return the opt-out keyword a message is, if it is nothing but one (or Twilio says which)."""
    if opt_out_type and opt_out_type.strip().upper() in ("STOP", "START", "HELP"):
        return Keyword(opt_out_type.strip().lower())
    word = (body or "").strip().strip(".!").upper()
    return KEYWORDS.get(word)


@dataclasses.dataclass(frozen=True)
class MediaItem:
    index: int
    url: str
    content_type: str


@dataclasses.dataclass(frozen=True)
class MediaProblem:
    """A media file of an inbound message that was not kept, and why."""

    index: int
    url: str
    content_type: str
    reason: str
    #: Worth fetching again later (Twilio busy or unreachable), as opposed to refused for good.
    is_temporary: bool = False

    @property
    def filename(self) -> str:
        return media_filename(self.index, self.content_type)


@dataclasses.dataclass(frozen=True)
class TwilioInbound:
    """One inbound text as the webhook hands it to the app."""

    message: InboundMessage
    account_sid: str
    keyword: Keyword | None = None
    media_problems: tuple[MediaProblem, ...] = ()
    #: The form as Twilio posted it, url-encoded, kept if the message cannot be stored.
    raw: bytes = b""


@dataclasses.dataclass(frozen=True)
class StatusReport:
    """A delivery-status callback for a message we sent."""

    message_sid: str
    status: DeliveryStatus
    #: Twilio's own word (sent, delivered, read, ...).
    twilio_status: str
    #: Our id for the message, from the callback URL we gave Twilio.
    ref: str | None = None
    error_code: int | None = None
    #: "30003: Unreachable destination handset" when the report carries an error.
    error: str | None = None
    account_sid: str = ""


class InvalidWebhook(ValueError):
    """A signed request we cannot make a message of; kept for an admin, answered 200."""


def media_filename(index: int, content_type: str) -> str:
    extension = mimetypes.guess_extension(_bare_type(content_type)) or ".bin"
    return f"media-{index + 1}{extension}"


def _sid_and_channel(form: Mapping[str, str]) -> tuple[str, ChannelName]:
    sid = (form.get("MessageSid") or form.get("SmsMessageSid") or form.get("SmsSid") or "").strip()
    if not sid:
        raise InvalidWebhook("no MessageSid")
    raw_from = (form.get("From") or "").strip()
    return sid, ChannelName.WHATSAPP if raw_from.startswith(WHATSAPP_PREFIX) else ChannelName.SMS


def inbound_dedupe_key(form: Mapping[str, str]) -> str:
    """Return the dedupe key parse_inbound() gives this form's message, without reading the rest of it."""
    sid, channel = _sid_and_channel(form)
    return f"{channel}:{sid}"


def read_webhook(raw: bytes) -> tuple[TwilioInbound, list[MediaItem]]:
    """Read an inbound webhook kept as ReceivedWebhook.raw, as parse_inbound() reads the posted form."""
    form: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(raw.decode("ascii", errors="replace"), keep_blank_values=True):
        form.setdefault(name, value)  # the first value of a repeated name, as request.form.get() reads it
    inbound, media = parse_inbound(form)
    return dataclasses.replace(inbound, raw=raw), media


def parse_inbound(form: Mapping[str, str]) -> tuple[TwilioInbound, list[MediaItem]]:
    """Normalize Twilio's inbound form; return the message (no media yet) and the media to fetch."""
    sid, channel = _sid_and_channel(form)
    raw_from = (form.get("From") or "").strip()
    try:
        phone = normalize_phone(raw_from)
    except InvalidIdentity as error:
        # Short codes and alphanumeric senders cannot be answered and identify no one.
        raise InvalidWebhook(str(error)) from None
    body = form.get("Body") or ""
    media = []
    try:
        count = min(int(form.get("NumMedia") or 0), MAX_MEDIA)
    except ValueError:
        count = 0
    for index in range(count):
        url = (form.get(f"MediaUrl{index}") or "").strip()
        if url:
            media.append(MediaItem(index, url, (form.get(f"MediaContentType{index}") or "").strip()))
    message = InboundMessage(
        channel=channel,
        sender=SenderIdentity(IdentityKind.PHONE, phone, (form.get("ProfileName") or "").strip() or None),
        dedupe_key=f"{channel}:{sid}",
        external_id=sid,
        text=body,
        thread=ThreadHints(join_open_ticket_on_channel=True),
    )
    keyword = keyword_of(body, form.get("OptOutType"))
    return TwilioInbound(message, (form.get("AccountSid") or "").strip(), keyword), media


def fetch_media(settings: TwilioSettings, media: list[MediaItem],
                http: BaseUrlHttpClient | None = None) -> tuple[tuple[Attachment, ...], tuple[MediaProblem, ...]]:
    """Download each media file with the account's credentials, within the size, type and time limits."""
    own_client = http is None
    http = http or BaseUrlHttpClient(settings.api_base_url, settings.timeout)
    deadline = time.monotonic() + settings.media_deadline
    attachments, problems = [], []
    try:
        for item in media:
            try:
                attachments.append(_fetch_one(http, settings, item, deadline))
            except MediaError as error:
                problems.append(MediaProblem(item.index, item.url, item.content_type, str(error),
                                             error.is_temporary))
    finally:
        if own_client:
            http.close()
    return tuple(attachments), tuple(problems)


def _fetch_one(http: BaseUrlHttpClient, settings: TwilioSettings, item: MediaItem, deadline: float) -> Attachment:
    parts = urllib.parse.urlsplit(item.url)
    # Only Twilio's API host gets our credentials (the URL comes from a signed request, but still).
    if parts.scheme != "https" or parts.hostname != API_HOST:
        raise MediaError(f"not a Twilio media URL: {parts.scheme}://{parts.hostname}")
    if item.content_type and not is_allowed_media_type(item.content_type):
        raise MediaError(f"type {item.content_type} is not accepted")
    if time.monotonic() > deadline:
        raise MediaError("not fetched: the time for this message's media ran out", is_temporary=True)
    content_type, content = http.download(item.url, (settings.account_sid, settings.auth_token),
                                          max_bytes=settings.media_max_bytes, deadline=deadline)
    content_type = content_type or _bare_type(item.content_type) or "application/octet-stream"
    if not is_allowed_media_type(content_type):
        raise MediaError(f"type {content_type} is not accepted")
    return Attachment(filename=media_filename(item.index, content_type), content_type=content_type, content=content)


def parse_status(form: Mapping[str, str], ref: str | None) -> StatusReport | None:
    """Read a status callback; None when it says nothing about delivery."""
    sid = (form.get("MessageSid") or form.get("SmsSid") or "").strip()
    twilio_status = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip().lower()
    status = TWILIO_STATUSES.get(twilio_status)
    if not sid or status is None:
        return None
    raw_code = (form.get("ErrorCode") or "").strip()
    code = int(raw_code) if raw_code.isdigit() and int(raw_code) != 0 else None
    error = describe_error(code, form.get("ErrorMessage")) if code else None
    return StatusReport(sid, status, twilio_status, (ref or "").strip() or None, code, error,
                        (form.get("AccountSid") or "").strip())


# --- the webhook blueprint -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReceivedWebhook:
    """A correctly signed inbound-message webhook, as Twilio posted it, for the app to keep before it answers."""

    #: The message's dedupe key, as parse_inbound() makes it ("sms:SM…", "whatsapp:SM…").
    dedupe_key: str
    #: The form, url-encoded; read_webhook() makes the message of it.
    raw: bytes


@dataclasses.dataclass(frozen=True)
class WebhookHooks:
    """What the app hands the webhook blueprint; each returns once its work is committed."""

    #: The account's settings by AccountSid; None refuses the request (403).
    settings_for: Callable[[str], TwilioSettings | None]
    #: A signed inbound message: stored as it came, to be read with read_webhook() after the 200.
    on_received: Callable[[ReceivedWebhook], object]
    on_status: Callable[[StatusReport], object]
    #: A correctly signed request we cannot read (no MessageSid): the raw form and why, kept for an admin.
    on_unreadable: Callable[[bytes, str], object]


def called_url(public_url: str) -> str:
    """Return the URL Twilio called: the public URL, this path and the query string exactly as sent."""
    url = public_url.rstrip("/") + request.path
    query = request.query_string.decode("utf-8", errors="replace")
    return f"{url}?{query}" if query else url


def _forbidden() -> Response:
    return Response("Forbidden: not a correctly signed Twilio request.\n", status=403, mimetype="text/plain")


def verified_settings(hooks: WebhookHooks) -> TwilioSettings:
    """Return the settings of the account that signed this request, or abort with 403 (and a log line)."""
    account_sid = request.form.get("AccountSid", "")
    settings = hooks.settings_for(account_sid)
    if settings is None:
        log.warning("refused a Twilio webhook to %s: account %r is not configured or is disabled", request.path,
                    account_sid)
        abort(_forbidden())
    url = called_url(settings.public_url)
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        log.warning("refused a Twilio webhook to %s: no X-Twilio-Signature header", url)
        abort(_forbidden())
    if not RequestValidator(settings.auth_token).validate(url, request.form, signature):
        log.warning("refused a Twilio webhook to %s: the signature does not match "
                    "(is HELPDESK_PUBLIC_URL the address Twilio calls?)", url)
        abort(_forbidden())
    return settings


#: An empty <Response/>: nothing is sent back to the customer automatically. Built once; it never changes.
EMPTY_TWIML = str(MessagingResponse())


def empty_twiml() -> Response:
    return Response(EMPTY_TWIML, mimetype="text/xml")


def create_webhook_blueprint(hooks: WebhookHooks, name: str = "twilio") -> Blueprint:
    """Build the blueprint of Twilio's webhooks; the caller exempts it from CSRF and rate-limits it."""
    bp = Blueprint(name, __name__)

    def receive_message():
        """Keep a signed inbound SMS, MMS or WhatsApp message as it came, then answer with empty TwiML."""
        verified_settings(hooks)
        raw = urllib.parse.urlencode(list(request.form.items(multi=True))).encode()
        try:
            dedupe_key = inbound_dedupe_key(request.form)
        except InvalidWebhook as error:
            hooks.on_unreadable(raw, str(error))
            return empty_twiml()
        hooks.on_received(ReceivedWebhook(dedupe_key, raw))
        return empty_twiml()

    def receive_status():
        """Record a delivery-status report for a message we sent."""
        verified_settings(hooks)
        report = parse_status(request.form, request.args.get("ref"))
        if report is not None:
            hooks.on_status(report)
        return Response(status=204)

    bp.add_url_rule(SMS_PATH, "receive_message", receive_message, methods=["POST"])
    bp.add_url_rule(WHATSAPP_PATH, "receive_whatsapp", receive_message, methods=["POST"])
    bp.add_url_rule(STATUS_PATH, "receive_status", receive_status, methods=["POST"])
    return bp
