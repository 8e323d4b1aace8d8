"""Messages that arrive together, stored together: one writer thread, one transaction per batch.

A chat server takes each visitor's message in a thread of its own and may answer only once the message is
committed. With one transaction per message, those threads queue for the database's write lock one by one, each
paying for its own BEGIN, COMMIT and connection, and each waiting its turn for the interpreter at every
statement. Here they hand their message to one writer thread and wait: the writer takes everything that has
come since its last commit and writes it in one transaction (group commit), so a burst costs one commit, not
one per message, and the queue drains faster the longer it gets.

Only messages that continue a conversation under way (ingest.write_continuation) are written in the batch; any
other message, and every message of a batch that failed as a whole, goes through ingest() on its own, in the
writer thread, after the batch's commit. Nothing is acknowledged before its commit.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading

from flask import Flask

from channels.messages import InboundMessage
from helpdesk.database import begin_write
from helpdesk.extensions import db
from helpdesk.ingest import IngestError, IngestResult, ingest, may_continue_conversation, write_continuation

log = logging.getLogger(__name__)

#: The most messages one transaction writes.
MAX_BATCH = 64
#: How long a caller waits for its message to be committed before it gives up (and the sender resends).
WAIT_SECONDS = 30


@dataclasses.dataclass(eq=False)
class PendingMessage:
    """A message handed to the writer; wait() returns once it is committed."""

    inbound: InboundMessage
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    result: IngestResult | None = None
    error: BaseException | None = None

    @property
    def sender(self) -> str:
        return f"{self.inbound.sender.kind}:{self.inbound.sender.value}"

    def wait(self, timeout: float = WAIT_SECONDS) -> IngestResult:
        if not self.done.wait(timeout):
            raise IngestError(f"{self.inbound.dedupe_key} was not stored within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result


class GroupIngest:
    """Store messages through one writer thread of this process, many per transaction.

    The writer starts with the first message handed to it, unless `start_writer=False` (then start() does).
    """

    def __init__(self, app: Flask, *, start_writer: bool = True):
        self._app = app
        self._queue: queue.SimpleQueue[PendingMessage] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._start_writer = start_writer

    def ingest(self, inbound: InboundMessage) -> IngestResult:
        """Store `inbound` exactly once, as ingest() does; return once it is committed."""
        return self.submit(inbound).wait()

    def submit(self, inbound: InboundMessage) -> PendingMessage:
        pending = PendingMessage(inbound)
        self._queue.put(pending)
        if self._start_writer:
            self.start()
        return pending

    def start(self) -> None:
        """Start the writer thread, or again if it died."""
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            self._start_writer = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="group-ingest", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            with self._app.app_context():
                try:
                    self._store(batch)
                except Exception as error:
                    log.exception("storing a batch of %d messages failed", len(batch))
                    for pending in batch:
                        if not pending.done.is_set():
                            pending.error = error
                            pending.done.set()
                finally:
                    db.session.remove()

    def _store(self, batch: list[PendingMessage]) -> None:
        # A sender's messages are stored in the order they came: once one of them goes on its own, so do the
        # ones after it.
        alone: list[PendingMessage] = []
        apart: set[str] = set()
        together: list[PendingMessage] = []
        for pending in batch:
            if pending.sender in apart or not may_continue_conversation(pending.inbound):
                apart.add(pending.sender)
                alone.append(pending)
            else:
                together.append(pending)
        written: list[PendingMessage] = []
        if together:
            try:
                begin_write()
                for pending in together:
                    result = None
                    if pending.sender not in apart:
                        result, _ = write_continuation(pending.inbound)
                    if result is None:
                        apart.add(pending.sender)
                        alone.append(pending)
                    else:
                        pending.result = result
                        written.append(pending)
                db.session.commit()
            except Exception:
                db.session.rollback()
                log.info("a batch of %d messages failed; storing them one by one", len(together), exc_info=True)
                for pending in written:
                    pending.result = None
                alone.extend(written)
                written = []
        for pending in written:
            pending.done.set()
        arrival = {pending: index for index, pending in enumerate(batch)}
        for pending in sorted(alone, key=arrival.__getitem__):
            try:
                pending.result = ingest(pending.inbound)
            except Exception as error:  # noqa: BLE001 - handed to the waiting caller
                pending.error = error
            pending.done.set()
