"""The configured mailboxes, each polled by one worker at a time (a lease), failures backed off.

    poll_all_mailboxes()        # -> 3: messages stored this run, from every mailbox
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Collection
from typing import Self

import sqlalchemy as sa
from flask import current_app
from imapclient import IMAPClient
from sqlalchemy.exc import IntegrityError

from channels.email import imap
from channels.email.imap import (
    ClientFactory,
    Cursor,
    MailboxError,
    MailboxPoller,
    MailboxSettings,
    MailboxUnavailable,
    Security,
)
from channels.messages import ChannelName
from helpdesk.database import begin_write
from helpdesk.email_intake import EmailBatch
from helpdesk.extensions import db
from helpdesk.models import ChannelAccount, MailboxCursor, Message
from helpdesk.models.base import utcnow
from helpdesk.tasks import enqueue

log = logging.getLogger(__name__)

#: Marks the account row that holds the cursor and health of the HELPDESK_IMAP_URL mailbox; its connection
#: settings come from the configuration, not from the row.
FROM_CONFIG = "HELPDESK_IMAP_URL"
#: After a refused login or a missing folder (someone has to fix the settings): the first retry waits this
#: long, each further one twice as long, up to BACKOFF_MAX.
BACKOFF_BASE = dt.timedelta(minutes=1)
BACKOFF_MAX = dt.timedelta(hours=1)
#: A server that cannot be reached is tried again sooner, so mail flows soon after it is back: from
#: HELPDESK_IMAP_RECONNECT_DELAY_SECONDS (at least MIN_RETRY_DELAY), doubling, up to UNREACHABLE_BACKOFF_MAX.
UNREACHABLE_BACKOFF_MAX = dt.timedelta(seconds=30)
MIN_RETRY_DELAY = dt.timedelta(seconds=0.1)
#: The cursor is saved (and the lease renewed) after this many messages, or after a third of the lease. The
#: messages handled since are committed just before, in one transaction.
CURSOR_SAVE_EVERY = 50


@dataclasses.dataclass(frozen=True)
class Mailbox:
    account_id: int
    name: str
    settings: MailboxSettings


@dataclasses.dataclass(frozen=True)
class MailboxOutcome:
    """What polling one mailbox did."""

    mailbox: str
    stored: int = 0
    skipped_known: int = 0
    has_more: bool = False
    #: Why it was not polled at all: another worker holds it, or it is backing off after failures.
    not_polled: str | None = None
    #: Why the poll failed (login refused, server unreachable); counted towards marking it unhealthy.
    error: str | None = None
    #: Messages that could not be handed over or acknowledged; the mailbox itself is fine.
    problems: tuple[str, ...] = ()
    #: The folder's UIDNEXT as this poll found it; see wait_for_new_mail.
    uid_next: int | None = None


class LeaseLost(RuntimeError):
    """Our lease lapsed and another worker took the mailbox over; stop without writing its cursor."""


def configured_mailboxes() -> list[Mailbox]:
    """Return every enabled email account with an IMAP host, plus the mailbox HELPDESK_IMAP_URL names."""
    timeout = current_app.config.get("HELPDESK_IMAP_TIMEOUT_SECONDS", 30.0)
    accounts = db.session.scalars(
        sa.select(ChannelAccount)
        .where(ChannelAccount.channel == ChannelName.EMAIL, ChannelAccount.is_enabled.is_(True))
        .order_by(ChannelAccount.id)
    )
    mailboxes = []
    for account in accounts:
        if (account.settings or {}).get("source") == FROM_CONFIG or not (account.settings or {}).get("host"):
            continue
        try:
            mailboxes.append(Mailbox(account.id, account.name, mailbox_settings(account, timeout)))
        except (KeyError, ValueError, TypeError) as error:
            log.error("email account %s has unusable IMAP settings: %s", account.name, error)
    url = current_app.config.get("HELPDESK_IMAP_URL")
    if url:
        settings = MailboxSettings.from_url(url, timeout=timeout)
        account = _config_account(settings)
        if account.is_enabled:
            mailboxes.append(Mailbox(account.id, account.name, settings))
    db.session.rollback()  # end the read; polling takes a while and must not hold a transaction open
    return mailboxes


def mailbox_settings(account: ChannelAccount, timeout: float = 30.0) -> MailboxSettings:
    """Return the IMAP settings stored on `account` (settings host/port/security/folder/move_to/user)."""
    settings, secrets = account.settings or {}, account.secrets or {}
    return MailboxSettings(
        host=settings["host"],
        port=int(settings["port"]) if settings.get("port") else None,
        security=Security(settings.get("security") or Security.TLS),
        user=settings.get("user") or "",
        password=secrets.get("password") or "",
        folder=settings.get("folder") or "INBOX",
        move_to=settings.get("move_to") or None,
        timeout=timeout,
    )


def poll_all_mailboxes(limit_per_run: int | None = None, *,
                       client_factory: ClientFactory = IMAPClient) -> int:
    """Poll every configured mailbox once; return how many messages were taken in (stored or quarantined)."""
    return sum(outcome.stored for outcome in poll_each_mailbox(limit_per_run, client_factory=client_factory))


def poll_each_mailbox(limit_per_run: int | None = None, *, client_factory: ClientFactory = IMAPClient,
                      replies: QueuedReplies | None = None) -> list[MailboxOutcome]:
    """Poll every configured mailbox once; return what happened to each."""
    with replies or QueuedReplies() as queued:
        outcomes = []
        for mailbox in configured_mailboxes():
            try:
                outcomes.append(poll_mailbox(mailbox, limit_per_run, client_factory=client_factory,
                                             replies=queued))
            except Exception as error:  # one broken mailbox (or a database hiccup) must not stop the others
                log.exception("polling %s failed", mailbox.name)
                db.session.rollback()
                outcomes.append(MailboxOutcome(mailbox.name, error=f"{type(error).__name__}: {error}"))
        return outcomes


def drain_mailboxes(limit_per_run: int | None = None, *,
                    client_factory: ClientFactory = IMAPClient) -> list[MailboxOutcome]:
    """Poll every mailbox until none has new mail left; return the totals per mailbox."""
    with QueuedReplies() as replies:
        return _drain(limit_per_run, client_factory, replies)


def _drain(limit_per_run: int | None, client_factory: ClientFactory,
           replies: QueuedReplies) -> list[MailboxOutcome]:
    totals: dict[str, MailboxOutcome] = {}
    while True:
        outcomes = poll_each_mailbox(limit_per_run, client_factory=client_factory, replies=replies)
        for outcome in outcomes:
            earlier = totals.get(outcome.mailbox)
            if earlier is not None:
                outcome = dataclasses.replace(
                    outcome, stored=earlier.stored + outcome.stored,
                    skipped_known=earlier.skipped_known + outcome.skipped_known,
                    problems=earlier.problems + outcome.problems)
            totals[outcome.mailbox] = outcome
        # Another round only while a mailbox was cut off by the cap and is still making progress.
        if not any(outcome.has_more and outcome.stored + outcome.skipped_known for outcome in outcomes):
            return list(totals.values())


def wait_for_new_mail(timeout: float, *, uid_next: int | None = None,
                      client_factory: ClientFactory = IMAPClient) -> None:
    """Wait until mail arrives, a failed mailbox is due to be tried again, or `timeout` passes.

    IDLE when there is one mailbox, else sleep. `uid_next` is the last poll's MailboxOutcome.uid_next, so mail
    that arrived since then ends the wait.
    """
    mailboxes = configured_mailboxes()
    shortest_wait = _retry_delay_base().total_seconds()
    retry_in = _seconds_until_retry(mailboxes)
    if retry_in is not None:
        # A mailbox is backing off after failures (its server down, say): wake up when it is due, so its mail
        # flows again soon after the server does. Its backoff grows with each failure: no tight loop.
        time.sleep(min(timeout, max(retry_in, shortest_wait)))
    elif len(mailboxes) == 1:
        # If even the wait cannot connect, the next poll comes soon: it counts the failure and backs off.
        imap.wait_for_new_mail(mailboxes[0].settings, timeout, uid_next=uid_next,
                               client_factory=client_factory, retry_after=shortest_wait)
    else:
        time.sleep(timeout)


def poll_mailbox(mailbox: Mailbox, limit: int | None = None, *, client_factory: ClientFactory = IMAPClient,
                 replies: QueuedReplies | None = None) -> MailboxOutcome:
    """Poll one mailbox unless another worker holds it or it is backing off; record how it went."""
    with replies or QueuedReplies() as queued:
        return _poll_mailbox(mailbox, limit, client_factory, queued)


def _poll_mailbox(mailbox: Mailbox, limit: int | None, client_factory: ClientFactory,
                  replies: QueuedReplies) -> MailboxOutcome:
    config = current_app.config
    limit = limit or config.get("HELPDESK_IMAP_MESSAGES_PER_RUN", 200)
    lease = dt.timedelta(seconds=config.get("HELPDESK_IMAP_LEASE_SECONDS", 300))
    cursor_id = _cursor_id(mailbox)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"[-100:]
    if not _take_lease(cursor_id, owner, lease):
        return MailboxOutcome(mailbox.name, not_polled=_why_not_polled(cursor_id))
    source = f"imap:{mailbox.name}"
    poller = MailboxPoller(
        mailbox.settings,
        _LeasedCursor(cursor_id, owner, lease),
        on_message=lambda raw: replies.store(raw, source),
        is_known=is_known_message_id,
        find_known=known_message_ids,
        commit_handled=replies.commit,
        on_download=replies.expect,
        save_every=CURSOR_SAVE_EVERY,
        save_interval=lease.total_seconds() / 3,
        client_factory=client_factory,
        reconnect_delay=config.get("HELPDESK_IMAP_RECONNECT_DELAY_SECONDS", 1.0),
        max_run_bytes=config.get("HELPDESK_IMAP_BYTES_PER_RUN", 64 * 1024 * 1024),
        body_batch=config.get("HELPDESK_IMAP_BODIES_PER_FETCH", 50),
    )
    try:
        with poller:
            report = poller.poll(limit)
    except MailboxError as error:
        log.warning("polling %s failed: %s", mailbox.name, error)
        _record_failure(cursor_id, owner, mailbox.account_id, error)
        done = error.report
        return MailboxOutcome(mailbox.name, stored=done.stored, skipped_known=done.skipped_known,
                              error=str(error), problems=tuple(done.errors))
    except LeaseLost as error:
        log.warning("stopped polling %s: %s", mailbox.name, error)
        return MailboxOutcome(mailbox.name, not_polled=str(error))
    except BaseException:
        _release_quietly(cursor_id, owner)
        raise
    _record_success(cursor_id, owner, mailbox.account_id)
    if report.uid_validity_changed:
        log.warning("%s was renumbered (UIDVALIDITY changed); read again, known mail skipped", mailbox.name)
    return MailboxOutcome(mailbox.name, stored=report.stored, skipped_known=report.skipped_known,
                          has_more=report.has_more, problems=tuple(report.errors), uid_next=report.uid_next)


def is_known_message_id(message_id: str) -> bool:
    """Tell whether an email with this Message-ID is stored already."""
    known = db.session.scalar(sa.select(Message.id).where(Message.dedupe_key == f"email:{message_id}"))
    db.session.rollback()
    return known is not None


def known_message_ids(message_ids: Collection[str]) -> set[str]:
    """Return which of these Message-IDs are stored already, in one query."""
    keys = {f"email:{message_id}": message_id for message_id in message_ids}
    stored = db.session.scalars(sa.select(Message.dedupe_key).where(Message.dedupe_key.in_(list(keys))))
    known = {keys[key] for key in stored}
    db.session.rollback()
    return known


class QueuedReplies:
    """Takes in polled mail, many messages per transaction; the acknowledgements it queues are sent by one
    delivery job when the block ends.

    One job for a whole drain rather than one per message: with jobs in threads of this process, deliveries
    running beside the poller would compete with it for the database (on SQLite, its write lock).
    """

    def __init__(self):
        self._batch = EmailBatch()
        self._depth = 0

    def store(self, raw: bytes, source: str) -> bool:
        """Take in one polled message into the open batch; the poller calls commit() before flagging it."""
        # The batch quarantines what it cannot store: that is committed too, so it counts as handled. It
        # raises only when even the quarantine could not be written; then the poller keeps the message.
        self._batch.take_in(raw, source)
        return True

    def expect(self, raws: list[bytes]) -> None:
        """Start parsing the next polled messages ahead, in the parser process."""
        self._batch.expect(raws)

    def commit(self) -> None:
        self._batch.commit()

    @property
    def count(self) -> int:
        return self._batch.queued_replies

    def __enter__(self) -> Self:
        self._depth += 1
        return self

    def __exit__(self, *exc_info) -> None:
        self._depth -= 1
        if self._depth:
            return  # an outer block sends them
        if len(self._batch):
            # The poller commits before it lets go of a mailbox; after a failure the transaction may be rolled
            # back already (those messages are unflagged, so they are read again). A safety net, not a path.
            log.error("%d polled emails were left in an open batch; committing what it still holds",
                      len(self._batch))
            self._batch.commit()
        count, self._batch.queued_replies = self._batch.queued_replies, 0
        if not count:
            return
        try:
            enqueue("deliver_outbox")
        except Exception:  # the periodic delivery job sends them all the same
            log.warning("could not start delivering %d acknowledgements now", count, exc_info=True)


class _LeasedCursor:
    """The poller's cursor, kept in a MailboxCursor row and written only while we hold its lease."""

    def __init__(self, cursor_id: int, owner: str, lease: dt.timedelta):
        self.cursor_id = cursor_id
        self.owner = owner
        self.lease = lease

    def load(self) -> Cursor:
        row = db.session.execute(
            sa.select(MailboxCursor.uid_validity, MailboxCursor.last_uid)
            .where(MailboxCursor.id == self.cursor_id)
        ).one()
        db.session.rollback()
        return Cursor(row.uid_validity, row.last_uid or 0)

    def save(self, cursor: Cursor) -> None:
        db.session.rollback()
        begin_write()
        updated = db.session.execute(
            sa.update(MailboxCursor)
            .where(MailboxCursor.id == self.cursor_id, MailboxCursor.lease_owner == self.owner)
            # Saving renews the lease, so a long run keeps it while it makes progress.
            .values(uid_validity=cursor.uid_validity, last_uid=cursor.last_uid,
                    lease_until=utcnow() + self.lease)
            .execution_options(synchronize_session=False)
        ).rowcount
        db.session.commit()
        if updated != 1:
            raise LeaseLost(f"the lease on mailbox cursor {self.cursor_id} was taken over")


def _config_account(settings: MailboxSettings) -> ChannelAccount:
    name = f"imap-url:{settings.user}@{settings.host}/{settings.folder}"[:100]
    find = sa.select(ChannelAccount).where(ChannelAccount.name == name)
    account = db.session.scalar(find)
    if account is not None:
        return account
    db.session.rollback()
    begin_write()
    try:
        account = ChannelAccount(channel=ChannelName.EMAIL, name=name, settings={"source": FROM_CONFIG})
        db.session.add(account)
        db.session.commit()
    except IntegrityError:  # another worker created it first
        db.session.rollback()
        account = db.session.scalars(find).one()
    return account


def _cursor_id(mailbox: Mailbox) -> int:
    find = sa.select(MailboxCursor.id).where(MailboxCursor.account_id == mailbox.account_id,
                                            MailboxCursor.folder == mailbox.settings.folder)
    cursor_id = db.session.scalar(find)
    if cursor_id is None:
        db.session.rollback()
        begin_write()
        try:
            row = MailboxCursor(account_id=mailbox.account_id, folder=mailbox.settings.folder)
            db.session.add(row)
            db.session.commit()
            cursor_id = row.id
        except IntegrityError:  # another worker created it first
            db.session.rollback()
            cursor_id = db.session.scalars(find).one()
    db.session.rollback()
    return cursor_id


def _take_lease(cursor_id: int, owner: str, lease: dt.timedelta) -> bool:
    # A conditional UPDATE, committed at once: it works the same on SQLite and PostgreSQL, and no
    # transaction stays open while the mailbox is read.
    now = utcnow()
    db.session.rollback()
    begin_write()
    taken = db.session.execute(
        sa.update(MailboxCursor)
        .where(
            MailboxCursor.id == cursor_id,
            sa.or_(MailboxCursor.lease_until.is_(None), MailboxCursor.lease_until < now),
            sa.or_(MailboxCursor.next_attempt_at.is_(None), MailboxCursor.next_attempt_at <= now),
        )
        .values(lease_owner=owner, lease_until=now + lease)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    return taken == 1


def _why_not_polled(cursor_id: int) -> str:
    cursor = db.session.get(MailboxCursor, cursor_id, populate_existing=True)
    now = utcnow()
    if cursor.next_attempt_at is not None and cursor.next_attempt_at > now:
        why = (f"backing off after {cursor.consecutive_failures} failures "
               f"until {cursor.next_attempt_at:%H:%M:%S} UTC")
    else:
        why = "another worker is polling it"
    db.session.rollback()
    return why


def _seconds_until_retry(mailboxes: list[Mailbox]) -> float | None:
    """Return how soon the first of `mailboxes` that is backing off may be tried again; None if none is."""
    now = utcnow()
    waits = []
    for mailbox in mailboxes:
        next_attempt_at = db.session.scalar(
            sa.select(MailboxCursor.next_attempt_at).where(MailboxCursor.account_id == mailbox.account_id,
                                                           MailboxCursor.folder == mailbox.settings.folder))
        if next_attempt_at is not None and next_attempt_at > now:
            waits.append((next_attempt_at - now).total_seconds())
    db.session.rollback()
    return min(waits, default=None)


def _retry_delay_base() -> dt.timedelta:
    seconds = current_app.config.get("HELPDESK_IMAP_RECONNECT_DELAY_SECONDS", 1.0)
    return max(MIN_RETRY_DELAY, dt.timedelta(seconds=seconds))


def retry_delay(error: MailboxError, failures: int) -> dt.timedelta:
    """Return how long to wait before polling again after `failures` failures in a row, the last `error`."""
    if isinstance(error, MailboxUnavailable):
        base, cap = _retry_delay_base(), UNREACHABLE_BACKOFF_MAX
    else:
        # A refused login or a missing folder needs someone to fix the settings; asking often would not
        # help, and repeated failed logins can get the account locked.
        base, cap = BACKOFF_BASE, BACKOFF_MAX
    return min(max(cap, base), base * 2 ** min(failures - 1, 16))


def _record_failure(cursor_id: int, owner: str, account_id: int, failure: MailboxError) -> None:
    now = utcnow()
    error = str(failure)
    db.session.rollback()
    begin_write()
    cursor = db.session.get(MailboxCursor, cursor_id, populate_existing=True)
    account = db.session.get(ChannelAccount, account_id, populate_existing=True)
    cursor.consecutive_failures += 1
    failures = cursor.consecutive_failures
    cursor.next_attempt_at = now + retry_delay(failure, failures)
    if failures >= current_app.config.get("HELPDESK_IMAP_FAILURES_BEFORE_UNHEALTHY", 5):
        account.last_error = error[:1000]
        if account.unhealthy_since is None:
            account.unhealthy_since = now
            log.error("mailbox %s is unhealthy after %d failures in a row: %s", account.name, failures, error)
    _release(cursor, owner)
    db.session.commit()


def _record_success(cursor_id: int, owner: str, account_id: int) -> None:
    db.session.rollback()
    begin_write()
    cursor = db.session.get(MailboxCursor, cursor_id, populate_existing=True)
    account = db.session.get(ChannelAccount, account_id, populate_existing=True)
    cursor.consecutive_failures = 0
    cursor.next_attempt_at = None
    cursor.last_polled_at = utcnow()
    if account.unhealthy_since is not None or account.last_error is not None:
        log.info("mailbox %s works again", account.name)
        account.unhealthy_since = None
        account.last_error = None
    _release(cursor, owner)
    db.session.commit()


def _release(cursor: MailboxCursor, owner: str) -> None:
    if cursor.lease_owner == owner:
        cursor.lease_owner = None
        cursor.lease_until = None


def _release_quietly(cursor_id: int, owner: str) -> None:
    try:
        db.session.rollback()
        begin_write()
        _release(db.session.get(MailboxCursor, cursor_id, populate_existing=True), owner)
        db.session.commit()
    except Exception:  # the database may be what failed; the lease then lapses on its own
        log.warning("could not release the lease on mailbox cursor %s", cursor_id, exc_info=True)
        db.session.rollback()
