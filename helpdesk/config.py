"""Configuration from environment variables, with embedded defaults that need no other server."""

from __future__ import annotations

import os
import pathlib
import secrets


def _load_or_create_secret(instance_path: pathlib.Path, name: str) -> str:
    """Read a secret kept in the instance folder, creating it on first use."""
    path = instance_path / name
    if path.exists():
        return path.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    # Written with owner-only permissions: it signs sessions and protects stored secrets.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def _normalize_database_url(url: str) -> str:
    # Plain postgresql:// URLs would pick psycopg2, which we do not install; psycopg 3 is the driver.
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def build_config(instance_path: pathlib.Path, environ: os._Environ | dict | None = None) -> dict:
    """Return the app configuration for this environment."""
    env = os.environ if environ is None else environ
    secret_key = env.get("SECRET_KEY") or _load_or_create_secret(instance_path, "secret_key")
    public_url = env.get("HELPDESK_PUBLIC_URL", "http://127.0.0.1:5000").rstrip("/")
    redis_url = env.get("REDIS_URL") or None
    database_url = _normalize_database_url(
        env.get("DATABASE_URL") or f"sqlite:///{instance_path / 'helpdesk.sqlite3'}"
    )
    is_https = public_url.startswith("https://")
    return {
        "SECRET_KEY": secret_key,
        # Channel secrets in the database are encrypted with this; defaults to one derived from SECRET_KEY.
        "HELPDESK_ENCRYPTION_KEY": env.get("HELPDESK_ENCRYPTION_KEY") or None,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "REDIS_URL": redis_url,
        "HELPDESK_PUBLIC_URL": public_url,
        "HELPDESK_TRUST_PROXY_HEADERS": env.get("HELPDESK_TRUST_PROXY_HEADERS", "") in ("1", "true", "yes"),
        "HELPDESK_OUTGOING_FOLDER": env.get("HELPDESK_OUTGOING_FOLDER") or str(instance_path / "outgoing"),
        "HELPDESK_ATTACHMENT_FOLDER": env.get("HELPDESK_ATTACHMENT_FOLDER") or str(instance_path / "attachments"),
        "HELPDESK_MAX_ATTACHMENT_BYTES": int(env.get("HELPDESK_MAX_ATTACHMENT_BYTES", 20 * 1024 * 1024)),
        "HELPDESK_SUPPORT_ADDRESS": env.get("HELPDESK_SUPPORT_ADDRESS", "support@helpdesk.localhost"),
        # A mailbox to poll besides those admins configure: imaps://user:password@host/INBOX (imap:// is
        # plain text, imap+starttls:// upgrades; ?move_to=Folder moves handled mail instead of flagging it).
        "HELPDESK_IMAP_URL": env.get("HELPDESK_IMAP_URL") or None,
        # Replies go out through this server (smtp://, smtps://, smtp+starttls://); unset, they are written
        # as .eml files to HELPDESK_OUTGOING_FOLDER.
        "HELPDESK_SMTP_URL": env.get("HELPDESK_SMTP_URL") or None,
        "HELPDESK_IMAP_MESSAGES_PER_RUN": int(env.get("HELPDESK_IMAP_MESSAGES_PER_RUN", 200)),
        # Bodies downloaded by one FETCH, and handled messages flagged (or moved) by one command.
        "HELPDESK_IMAP_BODIES_PER_FETCH": int(env.get("HELPDESK_IMAP_BODIES_PER_FETCH", 50)),
        # Processes that parse polled mail while the poller writes what they parsed before (0: the poller
        # parses it itself); see helpdesk/email_parsing.py.
        "HELPDESK_EMAIL_PARSER_PROCESSES": int(env.get("HELPDESK_EMAIL_PARSER_PROCESSES", 1)),
        # A parser process that takes longer over one message is stopped and the message quarantined.
        "HELPDESK_EMAIL_PARSE_TIMEOUT_SECONDS": float(env.get("HELPDESK_EMAIL_PARSE_TIMEOUT_SECONDS", 60)),
        # Bytes of mail one poll downloads before leaving the rest to the next; a bigger message still comes
        # whole, alone in its poll (oversized attachments are refused at ingest, the message is kept).
        "HELPDESK_IMAP_BYTES_PER_RUN": int(env.get("HELPDESK_IMAP_BYTES_PER_RUN", 64 * 1024 * 1024)),
        # How long `fetch-mail` waits in IDLE (or sleeps) between polls.
        "HELPDESK_IMAP_IDLE_SECONDS": float(env.get("HELPDESK_IMAP_IDLE_SECONDS", 300)),
        "HELPDESK_IMAP_TIMEOUT_SECONDS": float(env.get("HELPDESK_IMAP_TIMEOUT_SECONDS", 30)),
        # A worker's claim on a mailbox; renewed as it stores mail, taken over once it lapses (a crash).
        "HELPDESK_IMAP_LEASE_SECONDS": float(env.get("HELPDESK_IMAP_LEASE_SECONDS", 300)),
        "HELPDESK_IMAP_RECONNECT_DELAY_SECONDS": float(env.get("HELPDESK_IMAP_RECONNECT_DELAY_SECONDS", 1)),
        "HELPDESK_IMAP_FAILURES_BEFORE_UNHEALTHY": int(env.get("HELPDESK_IMAP_FAILURES_BEFORE_UNHEALTHY", 5)),
        # A customer's reply to a ticket closed at most this many days ago reopens it; a later one opens a
        # follow-up ticket linked to it. 0 always opens a follow-up.
        "HELPDESK_REOPEN_WINDOW_DAYS": int(env.get("HELPDESK_REOPEN_WINDOW_DAYS", 7)),
        # SMS and WhatsApp go through a Twilio account admins add under /admin/channels/twilio, else through the
        # one these name (account SID and auth token); with neither, texts are logged to HELPDESK_OUTGOING_FOLDER.
        # Webhooks are validated against HELPDESK_PUBLIC_URL, so it must be the address Twilio calls (set it
        # behind a reverse proxy).
        "TWILIO_ACCOUNT_SID": env.get("TWILIO_ACCOUNT_SID") or None,
        "TWILIO_AUTH_TOKEN": env.get("TWILIO_AUTH_TOKEN") or None,
        # The sending number (E.164), or a Messaging Service that picks one.
        "TWILIO_FROM_NUMBER": env.get("TWILIO_FROM_NUMBER") or None,
        "TWILIO_MESSAGING_SERVICE_SID": env.get("TWILIO_MESSAGING_SERVICE_SID") or None,
        # The WhatsApp sender (E.164, without the whatsapp: prefix); WhatsApp replies need it or a service.
        "TWILIO_WHATSAPP_FROM": env.get("TWILIO_WHATSAPP_FROM") or None,
        # API calls and media downloads go here instead of api.twilio.com (tests point it at an emulator).
        "TWILIO_API_BASE_URL": env.get("TWILIO_API_BASE_URL") or None,
        # Kept below TWILIO_STATUS_WAIT_SECONDS, which is kept below Twilio's 15-second webhook timeout.
        "TWILIO_TIMEOUT_SECONDS": float(env.get("TWILIO_TIMEOUT_SECONDS", 8)),
        # How long a status report waits for the worker to record the send it reports on.
        "TWILIO_STATUS_WAIT_SECONDS": float(env.get("TWILIO_STATUS_WAIT_SECONDS", 10)),
        "TWILIO_MEDIA_MAX_BYTES": int(env.get("TWILIO_MEDIA_MAX_BYTES", 10 * 1024 * 1024)),
        # A media file whose download failed for a passing reason (Twilio busy or unreachable) is fetched again
        # by the retry_media job: at most this many downloads in all, the first retry after this many seconds,
        # each wait twice the one before (at most 6 hours).
        "TWILIO_MEDIA_RETRY_ATTEMPTS": int(env.get("TWILIO_MEDIA_RETRY_ATTEMPTS", 8)),
        "TWILIO_MEDIA_RETRY_SECONDS": float(env.get("TWILIO_MEDIA_RETRY_SECONDS", 60)),
        # How long each process keeps the accounts admins saved before reading them again (the process that
        # saves one sees it at once).
        "TWILIO_ACCOUNTS_CACHE_SECONDS": float(env.get("TWILIO_ACCOUNTS_CACHE_SECONDS", 5)),
        "TWILIO_WEBHOOK_RATE_LIMIT": env.get("TWILIO_WEBHOOK_RATE_LIMIT", "600 per minute"),
        # Languages the customer's message may be detected as (ISO 639-1, comma-separated); None keeps the
        # triage engine's defaults.
        "HELPDESK_LANGUAGES": env.get("HELPDESK_LANGUAGES") or None,
        # Web chat: the sites that may embed /widget.js (comma-separated origins; empty: only the helpdesk),
        # the secret sites sign their logged-in users with (default derived from SECRET_KEY), rate limits.
        "HELPDESK_CHAT_ALLOWED_ORIGINS": env.get("HELPDESK_CHAT_ALLOWED_ORIGINS", ""),
        "HELPDESK_CHAT_IDENTITY_SECRET": env.get("HELPDESK_CHAT_IDENTITY_SECRET") or None,
        "HELPDESK_CHAT_MESSAGES_PER_MINUTE": float(env.get("HELPDESK_CHAT_MESSAGES_PER_MINUTE", 20)),
        "HELPDESK_CHAT_MESSAGE_BURST": float(env.get("HELPDESK_CHAT_MESSAGE_BURST", 10)),
        "HELPDESK_CHAT_IP_EVENTS_PER_MINUTE": float(env.get("HELPDESK_CHAT_IP_EVENTS_PER_MINUTE", 120)),
        "HELPDESK_CHAT_IP_BURST": float(env.get("HELPDESK_CHAT_IP_BURST", 60)),
        # Settings admins save on /admin/chat override the two above; each process re-reads them this often.
        "HELPDESK_CHAT_SETTINGS_CACHE_SECONDS": float(env.get("HELPDESK_CHAT_SETTINGS_CACHE_SECONDS", 5)),
        # Files visitors send (images, PDF, text; never above HELPDESK_MAX_ATTACHMENT_BYTES), and how often.
        "HELPDESK_CHAT_MAX_UPLOAD_BYTES": int(env.get("HELPDESK_CHAT_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)),
        "HELPDESK_CHAT_UPLOAD_RATE_LIMIT": env.get("HELPDESK_CHAT_UPLOAD_RATE_LIMIT", "20 per minute"),
        # Chat transcripts by email: per visitor every ten minutes, and per conversation in all.
        "HELPDESK_CHAT_TRANSCRIPTS_PER_TEN_MINUTES": float(env.get("HELPDESK_CHAT_TRANSCRIPTS_PER_TEN_MINUTES", 3)),
        "HELPDESK_CHAT_TRANSCRIPTS_PER_TICKET": int(env.get("HELPDESK_CHAT_TRANSCRIPTS_PER_TICKET", 3)),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": is_https,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SECURE": is_https,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_TIME_LIMIT": None,
        "RATELIMIT_STORAGE_URI": redis_url or "memory://",
        "RATELIMIT_HEADERS_ENABLED": True,
        "HELPDESK_LOGIN_RATE_LIMIT": env.get("HELPDESK_LOGIN_RATE_LIMIT", "10 per minute"),
        "MAX_CONTENT_LENGTH": int(env.get("HELPDESK_MAX_REQUEST_BYTES", 32 * 1024 * 1024)),
    }
