"""New mail from one IMAP folder: UID cursor, headers first, acknowledged only after commit.

The poller knows nothing about tickets. It is handed `on_message(raw) -> bool`, which returns True once
the message is committed (stored or kept aside), or held in a transaction that `commit_handled()` commits,
and `is_known(message_id) -> bool`, which tells whether a Message-ID is stored already (optionally also
`find_known(message_ids) -> set`, which answers for a whole batch of headers at once); the cursor
(UIDVALIDITY plus the last handled UID) lives behind a small `CursorStore`, so the caller decides where it
is persisted. Bodies are downloaded, and committed messages flagged, a batch per IMAP command.

    report = MailboxPoller(settings, store, on_message, is_known).poll(limit=50)
    # -> PollReport(stored=3, skipped_known=1, failed_uids=[], has_more=False, ...)
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import functools
import imaplib
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable, Collection
from typing import Protocol

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from channels.email.parse import message_id_from_headers

log = logging.getLogger(__name__)

SEEN = b"\\Seen"
DELETED = b"\\Deleted"
_HEADER_ITEM = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
# BODY.PEEK, unlike BODY or RFC822, never sets \Seen on its own: the flag is ours to set after commit.
_BODY_ITEM = "BODY.PEEK[]"
_SIZE_ITEM = b"RFC822.SIZE"
#: The connection broke (reset, refused, timed out, server said BYE); a reconnect may help.
DROPPED = (OSError, imaplib.IMAP4.abort)


class Security(enum.StrEnum):
    NONE = "none"
    TLS = "tls"
    STARTTLS = "starttls"


_URL_SCHEMES = {"imap": Security.NONE, "imaps": Security.TLS, "imap+starttls": Security.STARTTLS}


@dataclasses.dataclass(frozen=True)
class MailboxSettings:
    host: str
    user: str
    password: str = dataclasses.field(repr=False)
    port: int | None = None
    security: Security = Security.TLS
    folder: str = "INBOX"
    #: Move handled mail here instead of flagging it \Seen.
    move_to: str | None = None
    #: Seconds to wait for the server on connect and on each reply.
    timeout: float = 30.0

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security is Security.TLS else 143)

    @classmethod
    def from_url(cls, url: str, **overrides) -> MailboxSettings:
        """Read `imap[s]://user:password@host[:port][/FOLDER][?move_to=FOLDER]` (`imap+starttls://` too)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in _URL_SCHEMES:
            raise ValueError(f"not an IMAP URL (imap://, imaps:// or imap+starttls://): {parts.scheme}://…")
        if not parts.hostname or parts.username is None:
            raise ValueError("an IMAP URL needs a user and a host: imaps://user:password@host/INBOX")
        query = urllib.parse.parse_qs(parts.query)
        fields = {
            "host": parts.hostname,
            "port": parts.port,
            "user": urllib.parse.unquote(parts.username),
            "password": urllib.parse.unquote(parts.password or ""),
            "security": _URL_SCHEMES[parts.scheme],
            "folder": urllib.parse.unquote(parts.path.lstrip("/")) or "INBOX",
            "move_to": query["move_to"][0] if query.get("move_to") else None,
        }
        fields.update(overrides)
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class Cursor:
    #: The folder's UIDVALIDITY when last_uid was read; None before the first poll.
    uid_validity: int | None = None
    #: Every UID up to this one is handled (committed, or known already).
    last_uid: int = 0


class CursorStore(Protocol):
    def load(self) -> Cursor: ...

    #: Called as messages are handled (see MailboxPoller's save_every), even when the cursor could not move;
    #: may raise to stop the run.
    def save(self, cursor: Cursor) -> None: ...


@dataclasses.dataclass
class PollReport:
    #: Handed to on_message and committed.
    stored: int = 0
    #: Known Message-IDs, acknowledged without downloading their bodies.
    skipped_known: int = 0
    #: Handed over but not committed (on_message raised or said no); left unacknowledged.
    failed_uids: list[int] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    #: The folder was renumbered since the cursor was saved; it was read again from the start.
    uid_validity_changed: bool = False
    #: The per-run cap stopped the run before the folder was drained.
    has_more: bool = False
    reconnects: int = 0
    bytes_downloaded: int = 0
    #: The folder's UIDNEXT when last read: mail that arrives later gets this UID or a higher one.
    uid_next: int | None = None


class MailboxError(Exception):
    """The mailbox could not be polled; `report` holds what was done before that."""

    def __init__(self, message: str, report: PollReport | None = None):
        super().__init__(message)
        self.report = report or PollReport()


class MailboxLoginError(MailboxError):
    """The server refused the login (wrong password, locked account)."""


class MailboxUnavailable(MailboxError):
    """The server could not be reached, or kept dropping the connection."""


ClientFactory = Callable[..., IMAPClient]


def connect(settings: MailboxSettings, client_factory: ClientFactory = IMAPClient,
            ssl_context: ssl.SSLContext | None = None) -> IMAPClient:
    """Open a logged-in connection; raise MailboxLoginError, or an OSError when the server is unreachable."""
    # Only TLS needs a context; building one reads the system's certificates, so it is built once.
    context = None if settings.security is Security.NONE else ssl_context or _default_ssl_context()
    is_tls = settings.security is Security.TLS
    client = client_factory(settings.host, port=settings.effective_port, ssl=is_tls, ssl_context=context,
                            timeout=settings.timeout)
    try:
        if settings.security is Security.STARTTLS:
            client.starttls(context)
        client.login(settings.user, settings.password)
    except imaplib.IMAP4.abort:
        discard(client)
        raise
    except LoginError as error:
        discard(client)
        reason = _text(error)
        raise MailboxLoginError(f"{settings.host} refused the login for {settings.user}: {reason}") from None
    except IMAPClient.Error as error:
        discard(client)
        raise MailboxError(f"{settings.host}: {_text(error)}") from None
    except BaseException:
        discard(client)
        raise
    return client


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def discard(client: IMAPClient | None) -> None:
    """Log out, or just close the socket when the connection is already broken."""
    if client is None:
        return
    try:
        client.logout()
    except Exception:  # the connection is gone anyway; only the socket needs closing
        try:
            client.shutdown()
        except Exception:
            pass


class MailboxPoller:
    """Hands new mail of one folder to `on_message`, oldest first, and acknowledges what was committed."""

    def __init__(
        self,
        settings: MailboxSettings,
        cursor_store: CursorStore,
        on_message: Callable[[bytes], bool],
        is_known: Callable[[str], bool],
        *,
        find_known: Callable[[Collection[str]], Collection[str]] | None = None,
        commit_handled: Callable[[], None] | None = None,
        on_download: Callable[[list[bytes]], None] | None = None,
        save_every: int = 1,
        save_interval: float | None = None,
        client_factory: ClientFactory = IMAPClient,
        ssl_context: ssl.SSLContext | None = None,
        max_reconnects: int = 4,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        max_run_bytes: int | None = 64 * 1024 * 1024,
        header_batch: int = 200,
        body_batch: int = 50,
        body_batch_bytes: int = 8 * 1024 * 1024,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.cursor_store = cursor_store
        self.on_message = on_message
        self.is_known = is_known
        #: Which of these Message-IDs are stored already: one question per batch of headers, not per message.
        self.find_known = find_known
        #: With this, on_message may return True for a message it only holds in an open transaction: the
        #: poller calls commit_handled() before it flags anything, saves the cursor, asks what is known, or
        #: sends the server another command (so no transaction waits on the network). If it raises, every
        #: message handed over since its last call counts as not committed.
        self.commit_handled = commit_handled
        #: Told, after each FETCH, every body downloaded and not handed over yet, oldest first, before they are
        #: handed to on_message one by one, so work on them can start ahead (the caller parses them in another
        #: process meanwhile). The next FETCH is sent once half of one is handed over, so such work never runs
        #: dry. Advisory: if it raises, the poller logs that and goes on.
        self.on_download = on_download
        #: The cursor is saved after this many handled messages, or once `save_interval` seconds passed since
        #: the last save, and at the end of the run. Saving less often is safe: after a crash, what was
        #: handled since is read again by its headers and skipped as known (it is flagged already).
        self.save_every = max(1, save_every)
        self.save_interval = save_interval
        self.client_factory = client_factory
        self.ssl_context = ssl_context
        self.max_reconnects = max_reconnects
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        #: Bodies downloaded per run, by RFC822.SIZE. Every message is handed over whole, however large (the
        #: ingest side refuses oversized attachments and keeps the message); a message bigger than this
        #: still goes, alone in its run, so nothing is ever skipped for its size.
        self.max_run_bytes = max_run_bytes
        self.header_batch = header_batch
        #: Bodies are downloaded this many (and about this many bytes) per FETCH, and handled mail is flagged
        #: (or moved) with one command per batch too: a round trip per message would bound the rate by the
        #: server's latency.
        self.body_batch = max(1, body_batch)
        self.body_batch_bytes = body_batch_bytes
        self.sleep = sleep
        self._client: IMAPClient | None = None

    def __enter__(self) -> MailboxPoller:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        discard(self._client)
        self._client = None

    def poll(self, limit: int = 50) -> PollReport:
        """Hand over up to `limit` new messages; reconnect with backoff if the server drops mid-run."""
        report = PollReport()
        run = _Run(limit)
        try:
            try:
                self._connect()
            except DROPPED as error:
                # Not retried here: the caller schedules the next attempt and counts the failure.
                raise MailboxUnavailable(f"cannot reach {self._where()}: {error}") from None
            while True:
                try:
                    self._drain(run, report)
                    self._save_progress(run, report)
                    return report
                except DROPPED as error:
                    self.close()
                    self._reconnect(report, error)
        except MailboxError as error:
            error.report = report
            self._save_progress_quietly(run, report)
            raise

    def _connect(self) -> IMAPClient:
        if self._client is None:
            self._client = connect(self.settings, self.client_factory, self.ssl_context)
        return self._client

    def _reconnect(self, report: PollReport, error: BaseException) -> None:
        while report.reconnects < self.max_reconnects:
            delay = min(self.max_reconnect_delay, self.reconnect_delay * 2 ** report.reconnects)
            report.reconnects += 1
            log.warning("lost %s (%s); reconnecting in %.1f s", self._where(), error, delay)
            self.sleep(delay)
            try:
                self._connect()
                return
            except DROPPED as next_error:
                error = next_error
        raise MailboxUnavailable(
            f"{self._where()} still failing after {report.reconnects} reconnects: {error}")

    def _where(self) -> str:
        settings = self.settings
        return f"{settings.user}@{settings.host}:{settings.effective_port}/{settings.folder}"

    def _drain(self, run: _Run, report: PollReport) -> None:
        client = self._connect()
        try:
            selected = client.select_folder(self.settings.folder)
        except imaplib.IMAP4.abort:
            raise
        except IMAPClient.Error as error:
            raise MailboxError(f"cannot open {self._where()}: {_text(error)}") from None
        report.uid_next = selected.get(b"UIDNEXT")
        cursor = self._checked_cursor(int(selected[b"UIDVALIDITY"]), run, report)
        # What was committed before the connection broke is flagged first.
        self._acknowledge_handled(run, report)
        # "UID n:*" always matches the highest UID, even below n, so the filter below is needed.
        found = client.search(["UID", f"{cursor.last_uid + 1}:*", "NOT", "DELETED"])
        uids = sorted(uid for uid in found if uid > cursor.last_uid and uid not in run.handled)
        start = 0
        while start < len(uids):
            # No more headers than this run may still download bodies for (known mail needs no download, so
            # a batch of it is simply followed by the next).
            batch = uids[start:start + min(self.header_batch, max(1, run.limit - run.downloads))]
            start += len(batch)
            self._commit_handled(run, report)
            headers = client.fetch(batch, [_HEADER_ITEM, "FLAGS", "RFC822.SIZE"])
            known = self._known_among(headers)
            run.bodies = _Bodies.wanted_among(batch, headers, known)
            for uid in batch:
                if run.downloads >= run.limit:
                    report.has_more = True
                    return
                try:
                    cursor = self._handle(client, uid, headers.get(uid), cursor, run, report, known)
                except _RunIsFull:
                    report.has_more = True
                    return
        self._acknowledge_handled(run, report)

    def _known_among(self, headers: dict) -> _KnownIds:
        message_ids = {uid: _message_id(fetched) for uid, fetched in headers.items()}
        wanted = {message_id for message_id in message_ids.values() if message_id is not None}
        if not wanted:
            stored = set()
        elif self.find_known is None:
            stored = {message_id for message_id in wanted if self.is_known(message_id)}
        else:
            stored = set(self.find_known(wanted))
        return _KnownIds(message_ids, stored)

    def _is_known(self, message_id: str, known: _KnownIds, run: _Run, report: PollReport) -> bool:
        # A Message-ID handed over since the batch was looked up (a second copy of one mail, delivered to two
        # of our addresses) may be stored by now: ask again.
        if message_id in known.handed_over:
            self._commit_handled(run, report)
            return self.is_known(message_id)
        return message_id in known.stored

    def _checked_cursor(self, uid_validity: int, run: _Run, report: PollReport) -> Cursor:
        # After a reconnect, the progress not saved yet is where this run goes on from.
        cursor = run.unsaved if run.unsaved is not None else self.cursor_store.load()
        if cursor.uid_validity == uid_validity:
            return cursor
        if cursor.uid_validity is not None:
            # Every UID was renumbered: read the folder again from the start. Known Message-IDs are skipped
            # before their bodies are downloaded, so nothing is stored twice.
            log.warning("UIDVALIDITY of %s changed from %s to %s; reading the folder again",
                        self._where(), cursor.uid_validity, uid_validity)
            report.uid_validity_changed = True
            run.handled.clear()
            run.failed.clear()
            run.unacknowledged.clear()  # their UIDs mean nothing now; they are read again and flagged as known
        run.unsaved = None
        cursor = Cursor(uid_validity, 0)
        self.cursor_store.save(cursor)
        return cursor

    def _handle(self, client: IMAPClient, uid: int, header: dict | None, cursor: Cursor, run: _Run,
                report: PollReport, known: _KnownIds) -> Cursor:
        if header is None:
            # Expunged since the search: nothing left to store.
            return self._advance(cursor, uid, run, report)
        message_id = known.message_ids.get(uid)
        if message_id is not None and self._is_known(message_id, known, run, report):
            # Flagged already when it sits behind a message the cursor waits for; no need to say it again.
            if self.settings.move_to or SEEN not in header.get(b"FLAGS", ()):
                run.unacknowledged.append(uid)
            report.skipped_known += 1
            return self._advance(cursor, uid, run, report)
        size = int(header.get(_SIZE_ITEM) or 0)
        if run.downloads and self.max_run_bytes and report.bytes_downloaded + size > self.max_run_bytes:
            raise _RunIsFull
        raw = self._download(client, uid, run, report)
        if raw is None:
            return self._advance(cursor, uid, run, report)
        run.downloads += 1
        report.bytes_downloaded += len(raw)
        if message_id is not None:
            known.handed_over.add(message_id)
        try:
            committed = bool(self.on_message(raw))
            problem = None if committed else "not committed"
        except Exception as error:  # one message must not block the mailbox; the next run tries it again
            log.exception("UID %s of %s could not be handed over", uid, self._where())
            committed, problem = False, f"{type(error).__name__}: {error}"
        if not committed:
            # What the same transaction held before this message may be gone with it.
            self._fail_uncommitted(run, report, f"not committed: the message after it failed ({problem})")
            run.failed.add(uid)
            run.handled.add(uid)
            report.failed_uids.append(uid)
            report.errors.append(f"UID {uid}: {problem}")
            return cursor
        report.stored += 1
        run.unacknowledged.append(uid)
        if self.commit_handled is not None:
            run.uncommitted.append(uid)
        return self._advance(cursor, uid, run, report)

    def _advance(self, cursor: Cursor, uid: int, run: _Run, report: PollReport) -> Cursor:
        run.handled.add(uid)
        # While an earlier message is not committed, the cursor waits below it, so the next run tries that
        # one again (what was committed after it is then skipped by Message-ID, headers only). It is saved
        # all the same: saving is how a store renews its hold on the mailbox.
        if not run.failed:
            cursor = Cursor(cursor.uid_validity, uid)
        else:
            # Also below messages found uncommitted after the cursor had passed them (see _fail_uncommitted).
            cursor = Cursor(cursor.uid_validity, min(cursor.last_uid, min(run.failed) - 1))
        run.unsaved, run.handled_since_save = cursor, run.handled_since_save + 1
        is_due = run.handled_since_save >= self.save_every or (
            self.save_interval is not None and time.monotonic() - run.saved_at >= self.save_interval)
        if is_due:
            self._save_progress(run, report)
        elif len(run.unacknowledged) >= self.body_batch:
            self._acknowledge_handled(run, report)
        return cursor

    def _save_progress(self, run: _Run, report: PollReport | None = None) -> None:
        if report is not None and self._client is not None:
            self._acknowledge_handled(run, report)  # commits first
        elif report is not None:
            self._commit_handled(run, report)
        if run.unsaved is None:
            return
        cursor = run.unsaved
        if run.unacknowledged:
            # Committed but not flagged yet (the connection broke): the cursor stays below them, so the next
            # run reads their headers again and flags them as known.
            cursor = Cursor(cursor.uid_validity, min(cursor.last_uid, min(run.unacknowledged) - 1))
        self.cursor_store.save(cursor)
        run.unsaved, run.handled_since_save, run.saved_at = None, 0, time.monotonic()

    def _save_progress_quietly(self, run: _Run, report: PollReport) -> None:
        # The mailbox failed; keep what was handled, if the store lets us. If not, the next run reads those
        # messages' headers again and skips them as known.
        self._commit_handled(run, report)
        try:
            self._save_progress(run)
        except Exception as error:  # noqa: BLE001 - the failure to report is the mailbox's; this one is logged
            log.warning("could not save the cursor of %s: %s", self._where(), error)

    def _download(self, client: IMAPClient, uid: int, run: _Run, report: PollReport) -> bytes | None:
        bodies = run.bodies
        if uid not in bodies.downloaded:
            # This one and the next few still wanted, in one FETCH; bodies of messages before it will not be
            # handed over any more (skipped as known, expunged) and are dropped.
            bodies.downloaded = {kept: raw for kept, raw in bodies.downloaded.items() if kept > uid}
            candidates = [wanted for wanted in bodies.wanted_from(uid) if wanted[0] not in bodies.downloaded]
            self._fetch_bodies(client, candidates, run, report, ahead=False)
        elif bodies.reads_ahead and len(bodies.downloaded) <= max(1, self.body_batch // 2):
            # Read ahead: the next FETCH while half of this one is still to be handed over, so whoever works on
            # bodies as they come (on_download) always has some to work on.
            try:
                self._fetch_bodies(client, bodies.wanted_after(bodies.fetched_through), run, report, ahead=True)
            except (*DROPPED, imaplib.IMAP4.error) as error:
                # The bodies in hand are handed over all the same; the next FETCH they need meets the broken
                # connection and reconnects, or the server's refusal (a NO) again and reports it.
                log.info("reading ahead in %s failed (%s)", self._where(), error)
                bodies.reads_ahead = False
        return bodies.downloaded.pop(uid, None)

    def _fetch_bodies(self, client: IMAPClient, candidates: list[tuple[int, int]], run: _Run,
                      report: PollReport, *, ahead: bool) -> None:
        """Download the first of `candidates` (unless reading `ahead`) and as many after it as one FETCH may
        take, within what the run may still download."""
        bodies = run.bodies
        # What is downloaded but not handed over yet counts against the run's limits already.
        room = run.limit - run.downloads - len(bodies.downloaded)
        budget = self.body_batch_bytes
        if self.max_run_bytes:
            pending = sum(len(raw) for raw in bodies.downloaded.values() if raw is not None)
            budget = min(budget, self.max_run_bytes - report.bytes_downloaded - pending)
        chunk, size = [], 0
        for wanted_uid, wanted_size in candidates:
            if chunk and (len(chunk) >= min(self.body_batch, room) or size + wanted_size > budget):
                break
            chunk.append(wanted_uid)
            size += wanted_size
        if not chunk or (ahead and (room <= 0 or size > budget)):
            return  # nothing to read ahead
        self._commit_handled(run, report)
        bodies.downloaded.update({fetched_uid: _body(fetched)
                                  for fetched_uid, fetched in client.fetch(chunk, [_BODY_ITEM]).items()})
        bodies.fetched_through = max(bodies.fetched_through, *chunk)
        self._announce(bodies.downloaded)

    def _announce(self, downloaded: dict[int, bytes | None]) -> None:
        if self.on_download is None:
            return
        try:
            self.on_download([downloaded[uid] for uid in sorted(downloaded) if downloaded[uid] is not None])
        except Exception:  # only a head start was lost: each message is still handed over
            log.warning("on_download failed for %s", self._where(), exc_info=True)

    def _commit_handled(self, run: _Run, report: PollReport) -> None:
        if not run.uncommitted:
            return
        try:
            self.commit_handled()
        except Exception as error:  # as when on_message fails: the next run tries these again
            log.exception("UID %s of %s could not be committed", ", ".join(map(str, run.uncommitted)),
                          self._where())
            self._fail_uncommitted(run, report, f"{type(error).__name__}: {error}")
        run.uncommitted = []

    def _fail_uncommitted(self, run: _Run, report: PollReport, problem: str) -> None:
        """Count what was handed over since the last commit_handled as not committed (some may be: those are
        known by the next run, and only flagged)."""
        lost = set(run.uncommitted)
        if not lost:
            return
        run.unacknowledged = [uid for uid in run.unacknowledged if uid not in lost]
        run.failed.update(lost)
        report.stored -= len(lost)
        report.failed_uids.extend(run.uncommitted)
        report.errors.extend(f"UID {uid}: {problem}" for uid in run.uncommitted)
        run.uncommitted = []
        if run.unsaved is not None:
            run.unsaved = Cursor(run.unsaved.uid_validity, min(run.unsaved.last_uid, min(lost) - 1))

    def _acknowledge_handled(self, run: _Run, report: PollReport) -> None:
        self._commit_handled(run, report)
        if run.unacknowledged:
            self._acknowledge(self._connect(), run.unacknowledged, report)
            run.unacknowledged = []

    def _acknowledge(self, client: IMAPClient, uids: list[int], report: PollReport) -> None:
        move_to = self.settings.move_to
        try:
            if not move_to:
                client.add_flags(uids, [SEEN], silent=True)
            elif client.has_capability("MOVE"):
                client.move(uids, move_to)
            else:
                client.copy(uids, move_to)
                client.add_flags(uids, [SEEN, DELETED], silent=True)
                if client.has_capability("UIDPLUS"):
                    client.uid_expunge(uids)
        except imaplib.IMAP4.abort:
            raise
        except IMAPClient.Error as error:
            # A refusal (read-only folder, missing target folder) is reported, not retried: the message is
            # committed, and acknowledging it again next run would be refused again.
            listed = ", ".join(map(str, uids))
            log.error("could not acknowledge UID %s of %s: %s", listed, self._where(), _text(error))
            report.errors.append(f"UID {listed}: not acknowledged: {_text(error)}")


def wait_for_new_mail(settings: MailboxSettings, timeout: float, *, uid_next: int | None = None,
                      client_factory: ClientFactory = IMAPClient, ssl_context: ssl.SSLContext | None = None,
                      sleep: Callable[[float], None] = time.sleep, retry_after: float | None = None) -> bool:
    """Wait up to `timeout` s for mail (IDLE, else sleep); tell whether some arrived.

    `uid_next` is PollReport.uid_next from the last poll: mail that came in since then is announced at once,
    though IDLE itself only tells of mail arriving after it started. When the server cannot be reached, the
    wait is cut to `retry_after` s (if given), so the caller can try again (and count the failure) sooner.
    """
    deadline = time.monotonic() + timeout
    client = None
    try:
        client = connect(settings, client_factory, ssl_context)
        selected = client.select_folder(settings.folder, readonly=True)
        if uid_next is not None and selected.get(b"UIDNEXT", uid_next) > uid_next:
            return True
        if not client.has_capability("IDLE"):
            sleep(max(0.0, deadline - time.monotonic()))
            return False
        client.idle()
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                # Servers also send keep-alives ("* OK Still here"); only EXISTS means new mail.
                responses = client.idle_check(remaining)
                if any(len(response) > 1 and response[1] == b"EXISTS" for response in responses):
                    return True
            return False
        finally:
            client.idle_done()
    except (*DROPPED, MailboxError, IMAPClient.Error) as error:
        log.warning("cannot wait for mail on %s@%s: %s", settings.user, settings.host, error)
        remaining = max(0.0, deadline - time.monotonic())
        sleep(remaining if retry_after is None else min(remaining, retry_after))
        return False
    finally:
        discard(client)


class _RunIsFull(Exception):
    """The next body would take the run past its byte budget; the next run goes on from here."""


@dataclasses.dataclass
class _Run:
    """What one poll() has done so far; it survives reconnects within the run."""

    limit: int
    downloads: int = 0
    handled: set[int] = dataclasses.field(default_factory=set)
    failed: set[int] = dataclasses.field(default_factory=set)
    #: The cursor as handled so far, when it has not been saved yet.
    unsaved: Cursor | None = None
    #: Committed (or known) and waiting to be flagged or moved, oldest first.
    unacknowledged: list[int] = dataclasses.field(default_factory=list)
    #: Handed over since commit_handled was last called.
    uncommitted: list[int] = dataclasses.field(default_factory=list)
    bodies: _Bodies = dataclasses.field(default_factory=lambda: _Bodies([]))
    handled_since_save: int = 0
    saved_at: float = dataclasses.field(default_factory=time.monotonic)


@dataclasses.dataclass
class _Bodies:
    """The bodies one batch of headers may need, in UID order, and those downloaded but not handed over yet."""

    #: (UID, RFC822.SIZE) of each message not known to be stored already.
    wanted: list[tuple[int, int]]
    downloaded: dict[int, bytes | None] = dataclasses.field(default_factory=dict)
    #: The highest UID downloaded so far (read-ahead goes on after it).
    fetched_through: int = 0
    #: False once reading ahead failed: the connection is gone, and only a FETCH that must succeed finds out.
    reads_ahead: bool = True

    @classmethod
    def wanted_among(cls, uids: list[int], headers: dict, known: _KnownIds) -> _Bodies:
        wanted, seen = [], set()
        for uid in uids:
            message_id = known.message_ids.get(uid)
            if uid not in headers or message_id in known.stored:
                continue
            if message_id is not None:
                if message_id in seen:
                    continue  # a second copy: the first one's commit will most likely make it known
                seen.add(message_id)
            wanted.append((uid, int(headers[uid].get(_SIZE_ITEM) or 0)))
        return cls(wanted)

    def wanted_from(self, uid: int) -> list[tuple[int, int]]:
        uids = [wanted_uid for wanted_uid, _ in self.wanted]
        return self.wanted[bisect.bisect_left(uids, uid):] if uid in uids else [(uid, 0)]

    def wanted_after(self, uid: int) -> list[tuple[int, int]]:
        uids = [wanted_uid for wanted_uid, _ in self.wanted]
        return self.wanted[bisect.bisect_right(uids, uid):]


@dataclasses.dataclass
class _KnownIds:
    """One batch of headers: the Message-ID of each UID, and which are stored already (find_known's answer)."""

    message_ids: dict[int, str | None]
    stored: set[str]
    #: Message-IDs handed to on_message since that answer was given.
    handed_over: set[str] = dataclasses.field(default_factory=set)


def _body(fetched: dict) -> bytes | None:
    for key, value in fetched.items():
        if key.startswith(b"BODY[") and key.endswith(b"]"):
            return bytes(value or b"")
    return None


def _message_id(fetched: dict) -> str | None:
    """Return the Message-ID the parser will store this message under, or None when unsure.

    The parser itself answers, so the two can never disagree; None means the body is downloaded and ingest
    deduplicates it.
    """
    for key, value in fetched.items():
        if key.startswith(b"BODY[HEADER.FIELDS"):
            return message_id_from_headers(bytes(value or b""))
    return None


def _text(error: BaseException) -> str:
    detail = error.args[0] if error.args else error
    if isinstance(detail, bytes):
        return detail.decode("utf-8", errors="replace")
    return str(detail)
