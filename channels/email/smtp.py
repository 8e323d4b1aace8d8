"""Replies out by SMTP: MIME built with the standard `email` package, threading headers included.

    SmtpChannel(SmtpSettings.from_url("smtp+starttls://user:pw@mail.example.com"), "support@example.com")
        .send(outbound)
    # -> DeliveryResult(SENT, provider_id="4XyZ") or FAILED with the server's reason
"""

from __future__ import annotations

import dataclasses
import email.message
import email.policy
import email.utils
import enum
import re
import smtplib
import ssl
import urllib.parse

from channels.messages import ChannelName, DeliveryResult, DeliveryStatus, OutboundMessage

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_QUEUE_ID = re.compile(r"queued as ([^\s;,]+)", re.IGNORECASE)


class SmtpSecurity(enum.StrEnum):
    NONE = "none"
    TLS = "tls"
    STARTTLS = "starttls"


_URL_SCHEMES = {"smtp": SmtpSecurity.NONE, "smtps": SmtpSecurity.TLS, "smtp+starttls": SmtpSecurity.STARTTLS}
_DEFAULT_PORTS = {SmtpSecurity.NONE: 25, SmtpSecurity.TLS: 465, SmtpSecurity.STARTTLS: 587}


@dataclasses.dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int | None = None
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    timeout: float = 30.0

    @property
    def effective_port(self) -> int:
        return self.port or _DEFAULT_PORTS[self.security]

    @classmethod
    def from_url(cls, url: str, **overrides) -> SmtpSettings:
        """Read `smtp://`, `smtps://` or `smtp+starttls://[user:password@]host[:port]`."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in _URL_SCHEMES:
            raise ValueError(f"not an SMTP URL (smtp://, smtps:// or smtp+starttls://): {parts.scheme}://…")
        if not parts.hostname:
            raise ValueError("an SMTP URL needs a host: smtp+starttls://user:password@host:587")
        fields = {
            "host": parts.hostname,
            "port": parts.port,
            "security": _URL_SCHEMES[parts.scheme],
            "user": urllib.parse.unquote(parts.username) if parts.username else None,
            "password": urllib.parse.unquote(parts.password) if parts.password else None,
        }
        fields.update(overrides)
        return cls(**fields)


def build_email(message: OutboundMessage, from_address: str) -> email.message.EmailMessage:
    """Return the MIME message for `message`: text (and HTML) with attachments and threading headers."""
    mail = email.message.EmailMessage()
    mail["From"] = from_address
    mail["To"] = message.recipient
    mail["Subject"] = message.subject or ""
    mail["Date"] = email.utils.formatdate(usegmt=True)
    # The outbox keeps this id across retries, so a retried send is recognizably the same message.
    mail["Message-ID"] = _angle(message.external_id) if message.external_id else email.utils.make_msgid(
        domain=email.utils.parseaddr(from_address)[1].rpartition("@")[2] or None)
    thread = [ref for ref in message.reply_to_external_ids if _MESSAGE_ID.fullmatch(ref)]
    if thread:
        # reply_to_external_ids is newest first; References lists the conversation oldest first.
        mail["In-Reply-To"] = thread[0]
        mail["References"] = " ".join(reversed(thread))
    if message.is_automatic:
        mail["Auto-Submitted"] = "auto-replied"
    mail.set_content(message.text or "")
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    for attachment in message.attachments:
        maintype, _, subtype = attachment.content_type.lower().partition("/")
        if not subtype or maintype in ("multipart", "message"):
            maintype, subtype = "application", "octet-stream"
        mail.add_attachment(
            attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename,
            disposition="inline" if attachment.is_inline else "attachment",
            cid=_angle(attachment.content_id) if attachment.content_id else None,
        )
    return mail


class SmtpChannel:
    """Sends email replies through one SMTP server."""

    name = ChannelName.EMAIL

    def __init__(self, settings: SmtpSettings, from_address: str, ssl_context: ssl.SSLContext | None = None):
        self.settings = settings
        self.from_address = from_address
        self.ssl_context = ssl_context

    def send(self, message: OutboundMessage) -> DeliveryResult:
        mail = build_email(message, self.from_address)
        try:
            reply = self._transmit(mail, message.recipient)
        except smtplib.SMTPRecipientsRefused as error:
            code, reason = next(iter(error.recipients.values()))
            return _refused(code, reason)
        except smtplib.SMTPAuthenticationError as error:
            # Our credentials, not this message, are wrong: keep it for retries while an admin fixes them.
            reason = _reason(error.smtp_code, error.smtp_error)
            return DeliveryResult(DeliveryStatus.FAILED, error=f"SMTP login refused: {reason}",
                                  is_temporary=True)
        except smtplib.SMTPResponseException as error:
            return _refused(error.smtp_code, error.smtp_error)
        except (OSError, smtplib.SMTPException) as error:
            # Refused or dropped connections, timeouts, TLS failures: the server may be back later.
            return DeliveryResult(DeliveryStatus.FAILED, is_temporary=True,
                                  error=f"{self.settings.host}:{self.settings.effective_port}: "
                                        f"{type(error).__name__}: {error}")
        queue_id = _QUEUE_ID.search(reply)
        return DeliveryResult(DeliveryStatus.SENT,
                              provider_id=queue_id.group(1) if queue_id else mail["Message-ID"])

    def _transmit(self, mail: email.message.EmailMessage, recipient: str) -> str:
        """Hand `mail` to the server for `recipient`; return the server's reply to DATA."""
        settings = self.settings
        context = self.ssl_context or ssl.create_default_context()
        if settings.security is SmtpSecurity.TLS:
            smtp = smtplib.SMTP_SSL(settings.host, settings.effective_port, timeout=settings.timeout,
                                    context=context)
        else:
            smtp = smtplib.SMTP(settings.host, settings.effective_port, timeout=settings.timeout)
        with smtp:
            if settings.security is SmtpSecurity.STARTTLS:
                smtp.starttls(context=context)
            if settings.user:
                smtp.login(settings.user, settings.password or "")
            smtp.ehlo_or_helo_if_needed()
            sender = email.utils.parseaddr(self.from_address)[1]
            options, policy = [], email.policy.SMTP
            if not (sender + recipient).isascii():
                if not smtp.has_extn("smtputf8"):
                    refusal = b"the server does not accept international addresses (no SMTPUTF8)"
                    raise smtplib.SMTPRecipientsRefused({recipient: (553, refusal)})
                options, policy = ["SMTPUTF8", "BODY=8BITMIME"], email.policy.SMTPUTF8
            code, reply = smtp.mail(sender, options)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, sender)
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
            _, reply = smtp.data(mail.as_bytes(policy=policy))
        return reply.decode("utf-8", errors="replace") if isinstance(reply, bytes) else str(reply)


def _refused(code: int, reason: bytes | str) -> DeliveryResult:
    return DeliveryResult(DeliveryStatus.FAILED, error=_reason(code, reason), is_temporary=400 <= code < 500)


def _reason(code: int, reason: bytes | str) -> str:
    text = reason.decode("utf-8", errors="replace") if isinstance(reason, bytes) else str(reason)
    return f"{code} {text}".strip()


def _angle(value: str) -> str:
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"
