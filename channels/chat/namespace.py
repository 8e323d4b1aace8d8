"""The customer side of web chat: the `/chat` Socket.IO namespace and the channel that delivers replies.

Events (client -> server, answered through the Socket.IO acknowledgement):

    connect       auth={"token", "user_id", "user_hash", "name", "email"}
                  -> emits "session" {token, visitor_id, verified, settings, agents_online, contact}
    message       {client_id, text}      -> {ok, client_id, id, seq}, only once the message is committed
    history       {after: seq}           -> {ok, messages: [...]}: public messages, plain text only
    typing        {typing: bool}         -> forwarded to the agents watching the visitor's ticket
    contact       {name, email}          -> {ok, contact}: what the pre-chat form asked (not verified)
    leave_message {client_id, text, name, email} -> {ok, client_id, id, email}: no agent online, so the
                  message becomes an email ticket and the conversation continues by email
    read          {up_to: seq}           -> {ok}: the visitor saw the agents' replies up to seq
    availability  {}                     -> {ok, agents_online}
    end_chat      {}                     -> {ok, email}: the visitor closed the conversation
    transcript    {email?}               -> {ok, email}: the conversation is mailed to that address

Server -> client: "reply" (an agent's reply), "typing" {typing, name} (an agent), "read" {up_to} (an agent saw
the visitor's messages up to that seq), "chat_ended" {reason} and "chat_error" {code, message, client_id}.

`seq` is the stored message id: it only grows along a conversation, so "everything after N" is one query,
but it is not contiguous (other conversations take ids too), so the widget never expects N + 1.

A resend with the same client_id is stored once (the dedupe key is chat:<visitor id>:<client id>) and
acknowledged again with the same id, so the widget simply resends until it gets an acknowledgement.

The rate limits live in memory, per process: with several web processes each keeps its own buckets, so the
effective limit grows with their number (a shared limit needs Redis).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from flask import request
from flask_socketio import Namespace, emit, join_room

from channels.chat.contact import ContactDetails, ContactInvalid, parse_contact
from channels.chat.tokens import VisitorTokens, verify_identity
from channels.messages import (
    ChannelName,
    DeliveryResult,
    DeliveryStatus,
    IdentityKind,
    InboundMessage,
    OutboundMessage,
    SenderIdentity,
    ThreadHints,
)

log = logging.getLogger(__name__)

CHAT_NAMESPACE = "/chat"
MAX_TEXT = 5000
MAX_CLIENT_ID = 100


def visitor_room(visitor_id: str) -> str:
    return f"visitor:{visitor_id}"


def normalize_origin(origin: str) -> str | None:
    """Return `origin` as scheme://host[:port] in lower case without a default port, or None if it is not one."""
    try:
        parts = urllib.parse.urlsplit((origin or "").strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == {"http": 80, "https": 443}[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def is_origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """Tell whether a browser at `origin` may chat; a missing Origin is allowed (see ChatNamespace)."""
    if origin is None:
        return True
    wanted = normalize_origin(origin)
    return wanted is not None and wanted in {normalize_origin(item) for item in allowed if item}


class TokenBucket:
    """In-memory token buckets, one per key: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 50_000):
        self.rate, self.burst, self.clock, self.max_keys = rate, burst, clock, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, cost: float = 1.0) -> bool:
        """Spend `cost` tokens of `key`'s bucket if it has them; tell whether it did."""
        with self._lock:
            # Read the clock under the lock: a thread that read it earlier but got the lock later would
            # otherwise set the bucket's time back and be charged for the same seconds twice.
            now = self.clock()
            tokens, then = self._buckets.get(key, (self.burst, now))
            now = max(now, then)
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            allowed = tokens >= cost
            self._buckets[key] = (tokens - cost if allowed else tokens, now)
            if len(self._buckets) > self.max_keys:
                self._forget_full(now)
            return allowed

    def _forget_full(self, now: float) -> None:
        # A bucket that has filled up again is the same as no bucket; dropping those bounds the memory.
        for key, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * self.rate >= self.burst:
                del self._buckets[key]


@dataclasses.dataclass(frozen=True)
class ChatReceipt:
    """What on_message reports once the message is committed."""

    message_id: int
    seq: int
    is_duplicate: bool = False


class ChatRefused(Exception):
    """The backend cannot do what the visitor asked; `message` is for the visitor."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class ChatSettings:
    """Read at each connection, so a configuration change needs no restart."""

    allowed_origins: tuple[str, ...]
    identity_secret: str | None
    messages_per_minute: float = 20
    message_burst: float = 10
    #: Per IP address, shared by everyone behind one NAT, so looser than per visitor.
    ip_events_per_minute: float = 120
    ip_burst: float = 60
    #: What the widget may know: colours, texts, the pre-chat questions, upload limits.
    widget: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Transcripts a visitor may ask for, per ten minutes.
    transcripts_per_ten_minutes: float = 3


class ChatBackend(Protocol):
    """What the namespace asks of the application; every call returns once its writes are committed."""

    def receive(self, inbound: InboundMessage, contact: ContactDetails | None) -> ChatReceipt: ...

    def history(self, visitor_id: str, after: int) -> list[dict]: ...

    def visitor_typing(self, visitor_id: str, is_typing: bool) -> None: ...

    def remember_contact(self, visitor_id: str, contact: ContactDetails) -> None: ...

    def leave_message(self, visitor_id: str, client_id: str, contact: ContactDetails, text: str) -> ChatReceipt: ...

    def mark_read(self, visitor_id: str, up_to: int) -> None: ...

    def agents_online(self) -> bool: ...

    def end_chat(self, visitor_id: str) -> None: ...

    def send_transcript(self, visitor_id: str, contact: ContactDetails | None) -> str: ...


@dataclasses.dataclass
class _Visitor:
    visitor_id: str
    verified: SenderIdentity | None
    ip: str
    last_typing: float = 0.0
    #: The name and email the visitor typed (pre-chat form, offline form), kept for this connection.
    contact: ContactDetails | None = None


class ChatNamespace(Namespace):
    """The customers' namespace: anyone on an allowed site may connect, as the visitor their token names.

    Origin: browsers always send it on cross-origin requests and WebSockets, which is what a site embedding the
    widget makes, so an unlisted Origin is refused. A connection with no Origin is a same-origin page or not a
    browser at all; the check cannot stop the latter, so it is let through.
    """

    def __init__(
        self,
        tokens: Callable[[], VisitorTokens],
        settings: Callable[[], ChatSettings],
        backend: ChatBackend,
        namespace: str = CHAT_NAMESPACE,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(namespace)
        self._tokens = tokens
        self._settings = settings
        self._backend = backend
        self._clock = clock
        self._visitors: dict[str, _Visitor] = {}
        self._visitor_buckets: TokenBucket | None = None
        self._ip_buckets: TokenBucket | None = None
        self._transcript_buckets: TokenBucket | None = None
        self._limits: tuple[float, ...] = ()

    # Connection ----------------------------------------------------------------------------------------

    def on_connect(self, auth=None):
        settings = self._settings()
        if not is_origin_allowed(request.headers.get("Origin"), settings.allowed_origins):
            # Refusing in connect is the only reliable place: before_request does not run for sockets.
            raise ConnectionRefusedError("origin not allowed")
        ip = request.remote_addr or "unknown"
        if not self._ip_bucket(settings).take(ip):
            raise ConnectionRefusedError("too many connections")
        auth = auth if isinstance(auth, dict) else {}
        verified = verify_identity(settings.identity_secret, auth.get("user_id"), auth.get("user_hash"))
        session = self._tokens().open_session(auth.get("token"), verified)
        try:
            # What the widget remembers from its pre-chat form; anything invalid is dropped, not fatal.
            contact = parse_contact(auth.get("name"), auth.get("email"))
        except ContactInvalid:
            contact = None
        if contact is not None and not (contact.name or contact.email):
            contact = None
        self._visitors[request.sid] = _Visitor(session.visitor_id, session.verified, ip, contact=contact)
        join_room(visitor_room(session.visitor_id))
        emit("session", {
            "token": session.token,
            "visitor_id": session.visitor_id,
            "verified": session.verified is not None,
            "settings": dict(settings.widget),
            "agents_online": self._agents_online(),
            "contact": contact.as_dict() if contact else None,
        })

    def on_disconnect(self, reason=None):
        self._visitors.pop(request.sid, None)

    # Events --------------------------------------------------------------------------------------------

    def on_message(self, data=None):
        data = data if isinstance(data, dict) else {}
        visitor, client_id, text, refusal = self._visitor_and_message(data)
        if refusal:
            return refusal
        if refusal := self._refuse_if_sending_too_quickly(visitor, client_id):
            return refusal
        inbound = InboundMessage(
            channel=ChannelName.CHAT,
            sender=SenderIdentity(IdentityKind.VISITOR, visitor.visitor_id,
                                  visitor.contact.name if visitor.contact else None),
            dedupe_key=f"chat:{visitor.visitor_id}:{client_id}",
            external_id=client_id,
            text=text.strip(),
            thread=ThreadHints(join_open_ticket_on_channel=True),
            other_identities=(visitor.verified,) if visitor.verified else (),
        )
        try:
            # Returns only once the message is committed; the acknowledgement below promises exactly that.
            receipt = self._backend.receive(inbound, visitor.contact)
        except Exception:
            log.exception("storing chat message %s failed", inbound.dedupe_key)
            return _refuse("unavailable", "The message could not be stored yet; it will be sent again.",
                           client_id, temporary=True)
        return {"ok": True, "client_id": client_id, "id": receipt.message_id, "seq": receipt.seq}

    def on_leave_message(self, data=None):
        data = data if isinstance(data, dict) else {}
        visitor, client_id, text, refusal = self._visitor_and_message(data)
        if refusal:
            return refusal
        try:
            contact = parse_contact(data.get("name"), data.get("email"), email_required=True)
        except ContactInvalid as error:
            return _refuse(f"invalid_{error.field}", str(error), client_id)
        if refusal := self._refuse_if_sending_too_quickly(visitor, client_id):
            return refusal
        visitor.contact = contact
        try:
            receipt = self._backend.leave_message(visitor.visitor_id, client_id, contact, text.strip())
        except Exception:
            log.exception("storing the message visitor %s left failed", visitor.visitor_id)
            return _refuse("unavailable", "The message could not be stored yet; it will be sent again.",
                           client_id, temporary=True)
        return {"ok": True, "client_id": client_id, "id": receipt.message_id, "seq": receipt.seq,
                "email": contact.email}

    def on_contact(self, data=None):
        visitor, refusal = self._visitor_within_limits()
        if refusal:
            return refusal
        data = data if isinstance(data, dict) else {}
        try:
            contact = parse_contact(data.get("name"), data.get("email"))
        except ContactInvalid as error:
            return _fail(f"invalid_{error.field}", str(error), field=error.field)
        visitor.contact = contact
        if contact.name or contact.email:
            try:
                self._backend.remember_contact(visitor.visitor_id, contact)
            except Exception:
                log.exception("remembering the contact of visitor %s failed", visitor.visitor_id)
                return _fail("unavailable", "Your details could not be saved; try again.")
        return {"ok": True, "contact": contact.as_dict()}

    def on_history(self, data=None):
        visitor = self._visitors.get(request.sid)
        if visitor is None:
            return {"ok": False, "error": "not_connected"}
        after = data.get("after", 0) if isinstance(data, dict) else 0
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            after = 0
        settings = self._settings()
        if not self._ip_bucket(settings).take(visitor.ip):
            return {"ok": False, "error": "rate_limited"}
        return {"ok": True, "messages": self._backend.history(visitor.visitor_id, after)}

    def on_typing(self, data=None):
        visitor = self._visitors.get(request.sid)
        if visitor is None:
            return
        is_typing = bool(data.get("typing")) if isinstance(data, dict) else False
        now = self._clock()
        # At most one "typing" a second per connection; "stopped typing" always goes through.
        if is_typing and now - visitor.last_typing < 1.0:
            return
        visitor.last_typing = now if is_typing else 0.0
        self._backend.visitor_typing(visitor.visitor_id, is_typing)

    def on_read(self, data=None):
        visitor, refusal = self._visitor_within_limits()
        if refusal:
            return refusal
        up_to = data.get("up_to") if isinstance(data, dict) else None
        if not isinstance(up_to, int) or isinstance(up_to, bool) or up_to <= 0:
            return _fail("invalid", "read needs up_to, the seq of the last message seen.")
        self._backend.mark_read(visitor.visitor_id, up_to)
        return {"ok": True}

    def on_availability(self, data=None):
        _, refusal = self._visitor_within_limits()
        if refusal:
            return refusal
        return {"ok": True, "agents_online": self._agents_online()}

    def on_end_chat(self, data=None):
        visitor, refusal = self._visitor_within_limits()
        if refusal:
            return refusal
        self._backend.end_chat(visitor.visitor_id)
        return {"ok": True, "email": visitor.contact.email if visitor.contact else None}

    def on_transcript(self, data=None):
        visitor, refusal = self._visitor_within_limits()
        if refusal:
            return refusal
        data = data if isinstance(data, dict) else {}
        contact = visitor.contact
        if isinstance(data.get("email"), str) and data["email"].strip():
            try:
                contact = parse_contact(contact.name if contact else None, data["email"])
            except ContactInvalid as error:
                return _fail(f"invalid_{error.field}", str(error), field=error.field)
            visitor.contact = contact
        if not self._transcript_bucket(self._settings()).take(visitor.visitor_id):
            return _fail("rate_limited", "You asked for transcripts too often; try again in a few minutes.")
        try:
            address = self._backend.send_transcript(visitor.visitor_id, contact)
        except ChatRefused as error:
            return _fail(error.code, error.message)
        return {"ok": True, "email": address}

    def _agents_online(self) -> bool:
        try:
            return self._backend.agents_online()
        except Exception:
            # Unknown is taken as online: the chat works either way, and nobody is pushed to email for nothing.
            log.exception("could not tell whether agents are online")
            return True

    def _visitor_and_message(self, data: dict) -> tuple[_Visitor | None, str | None, str | None, dict | None]:
        """The connected visitor and the client id and text of the message in `data`, or a refusal."""
        visitor = self._visitors.get(request.sid)
        if visitor is None:
            return None, None, None, _refuse("not_connected", "Reconnect and try again.")
        client_id, text, refusal = _client_id_and_text(data)
        return visitor, client_id, text, refusal

    def _refuse_if_sending_too_quickly(self, visitor: _Visitor, client_id: str) -> dict | None:
        """A refusal when the visitor, or their IP address, sends messages faster than the limits allow."""
        settings = self._settings()
        if self._visitor_bucket(settings).take(visitor.visitor_id) and self._ip_bucket(settings).take(visitor.ip):
            return None
        return _refuse("rate_limited", "You are sending messages too quickly; it will be sent shortly.",
                       client_id, temporary=True)

    def _visitor_within_limits(self) -> tuple[_Visitor | None, dict | None]:
        visitor = self._visitors.get(request.sid)
        if visitor is None:
            return None, _fail("not_connected", "Reconnect and try again.")
        if not self._ip_bucket(self._settings()).take(visitor.ip):
            return None, _fail("rate_limited", "Too many requests; wait a moment.")
        return visitor, None

    # Rate limits ---------------------------------------------------------------------------------------

    def _ensure_buckets(self, settings: ChatSettings) -> None:
        limits = (settings.messages_per_minute, settings.message_burst, settings.ip_events_per_minute,
                  settings.ip_burst, settings.transcripts_per_ten_minutes)
        if limits != self._limits:
            self._limits = limits
            self._visitor_buckets = TokenBucket(settings.messages_per_minute / 60, settings.message_burst,
                                                self._clock)
            self._ip_buckets = TokenBucket(settings.ip_events_per_minute / 60, settings.ip_burst, self._clock)
            self._transcript_buckets = TokenBucket(settings.transcripts_per_ten_minutes / 600,
                                                   settings.transcripts_per_ten_minutes, self._clock)

    def _visitor_bucket(self, settings: ChatSettings) -> TokenBucket:
        self._ensure_buckets(settings)
        return self._visitor_buckets

    def _ip_bucket(self, settings: ChatSettings) -> TokenBucket:
        self._ensure_buckets(settings)
        return self._ip_buckets

    def _transcript_bucket(self, settings: ChatSettings) -> TokenBucket:
        self._ensure_buckets(settings)
        return self._transcript_buckets

    def reset_limits(self) -> None:
        """Forget every bucket (tests)."""
        self._limits = ()


def _client_id_and_text(data: dict) -> tuple[str | None, str | None, dict | None]:
    """Return (client_id, text, None) from a message payload, or a refusal as the third item."""
    client_id, text = data.get("client_id"), data.get("text")
    if not isinstance(client_id, str) or not 0 < len(client_id.strip()) <= MAX_CLIENT_ID:
        return None, None, _refuse("invalid", "A message needs a client_id.")
    client_id = client_id.strip()
    if not isinstance(text, str) or not text.strip():
        return client_id, None, _refuse("empty", "The message is empty.", client_id)
    if len(text) > MAX_TEXT:
        return client_id, None, _refuse("too_long", f"Messages are limited to {MAX_TEXT} characters.", client_id)
    return client_id, text, None


def _fail(code: str, message: str, **extra) -> dict:
    # For requests the widget answers in place (a form, a button): the acknowledgement carries the message.
    return {"ok": False, "error": code, "message": message, **extra}


def _refuse(code: str, message: str, client_id: str | None = None, temporary: bool = False) -> dict:
    # The visitor sees the error event; the acknowledgement tells the widget whether resending can help.
    emit("chat_error", {"code": code, "message": message, "client_id": client_id})
    return {"ok": False, "error": code, "client_id": client_id, "temporary": temporary}


class ChatChannel:
    """Deliver agents' replies to the visitor's room on `/chat`; a visitor who is away reads them in history."""

    name = ChannelName.CHAT

    def __init__(self, emit: Callable[..., object], namespace: str = CHAT_NAMESPACE):
        self._emit = emit
        self.namespace = namespace

    def send(self, message: OutboundMessage) -> DeliveryResult:
        if not message.recipient:
            return DeliveryResult(DeliveryStatus.FAILED, error="no visitor to deliver to")
        payload = {
            "key": message.external_id,
            "direction": "agent",
            "text": message.text,
            "is_automatic": message.is_automatic,
        }
        self._emit("reply", payload, namespace=self.namespace, to=visitor_room(message.recipient))
        return DeliveryResult(DeliveryStatus.SENT, provider_id=message.external_id)
