"""Mailboxes as admins configure them: their health, and saving their settings and password.

    list_mailbox_health()                       # -> [MailboxHealth(account, cursor), ...]
    save_mailbox(None, MailboxInput(...))       # -> a new ChannelAccount (not committed)
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from channels.email.imap import Security
from channels.messages import ChannelName
from helpdesk.extensions import db
from helpdesk.mailboxes import FROM_CONFIG
from helpdesk.models import ChannelAccount, MailboxCursor, QuarantinedMessage
from helpdesk.models.base import utcnow


class MailboxInvalid(ValueError):
    """The mailbox cannot be saved; `field` names the form field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class MailboxInput:
    name: str
    host: str
    user: str
    #: None keeps the stored password.
    password: str | None
    port: int | None = None
    security: Security = Security.TLS
    folder: str = "INBOX"
    move_to: str | None = None
    is_enabled: bool = True


@dataclasses.dataclass(frozen=True)
class MailboxHealth:
    """One email account with the polling state of its current folder."""

    account: ChannelAccount
    cursor: MailboxCursor | None

    @property
    def folder(self) -> str:
        return (self.account.settings or {}).get("folder") or "INBOX"

    @property
    def is_from_config(self) -> bool:
        return (self.account.settings or {}).get("source") == FROM_CONFIG

    @property
    def backing_off_until(self) -> dt.datetime | None:
        until = self.cursor.next_attempt_at if self.cursor else None
        return until if until is not None and until > utcnow() else None


def list_mailbox_health() -> list[MailboxHealth]:
    """Return every email account, by name, with the cursor of the folder it polls."""
    accounts = db.session.scalars(
        sa.select(ChannelAccount).where(ChannelAccount.channel == ChannelName.EMAIL).order_by(ChannelAccount.name)
    ).all()
    cursors = {
        (cursor.account_id, cursor.folder): cursor
        for cursor in db.session.scalars(
            sa.select(MailboxCursor).where(MailboxCursor.account_id.in_([account.id for account in accounts]))
        )
    }
    rows = []
    for account in accounts:
        settings = account.settings or {}
        folder = settings.get("folder") or "INBOX"
        cursor = cursors.get((account.id, folder))
        if cursor is None and settings.get("source") == FROM_CONFIG:
            # The HELPDESK_IMAP_URL mailbox keeps its folder in the configuration, not on the row.
            cursor = next((c for (account_id, _), c in cursors.items() if account_id == account.id), None)
        rows.append(MailboxHealth(account, cursor))
    return rows


def count_waiting_quarantine() -> int:
    """Return how many quarantined messages are not yet resolved."""
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(QuarantinedMessage).where(QuarantinedMessage.resolved_at.is_(None))
    )


def get_mailbox(account_id: int) -> ChannelAccount | None:
    """Return the email account an admin may edit, or None (unknown, or configured by HELPDESK_IMAP_URL)."""
    account = db.session.get(ChannelAccount, account_id)
    if account is None or account.channel != ChannelName.EMAIL:
        return None
    if (account.settings or {}).get("source") == FROM_CONFIG:
        return None
    return account


def save_mailbox(account: ChannelAccount | None, data: MailboxInput) -> ChannelAccount:
    """Store a new or changed mailbox (not committed) and let it be polled again at once."""
    name = data.name.strip()
    taken = db.session.scalar(sa.select(ChannelAccount.id).where(ChannelAccount.name == name))
    if taken is not None and (account is None or taken != account.id):
        raise MailboxInvalid("name", "Another channel account already uses this name.")
    if account is None and not data.password:
        raise MailboxInvalid("password", "A new mailbox needs its password.")
    settings = {
        "host": data.host.strip(),
        "port": data.port,
        "security": Security(data.security).value,
        "user": data.user.strip(),
        "folder": (data.folder or "").strip() or "INBOX",
        "move_to": (data.move_to or "").strip() or None,
    }
    if account is None:
        account = ChannelAccount(channel=ChannelName.EMAIL, name=name, settings={}, secrets={})
        db.session.add(account)
        db.session.flush()
    old = account.settings or {}
    if (old.get("host"), old.get("user")) != (settings["host"], settings["user"]):
        # Another server or login: its UIDs mean nothing to the old cursor. Read the folder again from the
        # start; mail already stored is recognised by its Message-ID before its body is downloaded.
        db.session.execute(_cursors(account).values(uid_validity=None, last_uid=0))
    account.name = name
    account.is_enabled = data.is_enabled
    # New dicts, not changes in place: the JSON columns only notice assignment.
    account.settings = settings
    if data.password:
        account.secrets = {**(account.secrets or {}), "password": data.password}
    # Admins save to fix what failed, so the mailbox is retried now rather than after its backoff.
    account.unhealthy_since = None
    account.last_error = None
    db.session.execute(_cursors(account).values(consecutive_failures=0, next_attempt_at=None))
    return account


def _cursors(account: ChannelAccount) -> sa.Update:
    return (sa.update(MailboxCursor).where(MailboxCursor.account_id == account.id)
            .execution_options(synchronize_session=False))
