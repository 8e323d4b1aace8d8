"""Polled mail is parsed in a process of its own, ahead of the one that writes it.

Parsing (the standard `email` package, pure Python) and language detection are most of the CPU an email costs
before the database sees it. The poller hands each FETCH's bodies to `parse_ahead()`; a parser process works
through them while this process writes the ones parsed before, so the two run side by side on two cores. Each
parsed message carries its language, so the writing process never loads the language models.

    parsing = parse_ahead(raws, processes, languages)  # {raw: (Future, place)}; {} when processes is 0
    inbound = parsed(raw, parsing)                      # the parser process's answer, or parse_email(raw) here

HELPDESK_EMAIL_PARSER_PROCESSES sets how many parser processes run (default 1; 0 parses in the poller's own
process). A parser process that dies takes nothing with it: its messages are parsed here instead, and the next
FETCH starts a new process. A message the parser rejects raises here exactly as parse_email() would.

The processes are spawned, so a script that polls mail must guard its main module (`if __name__ ==
"__main__":`), as multiprocessing requires; the `flask`, `celery` and `gunicorn` commands do.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import multiprocessing
import threading
from concurrent.futures.process import BrokenProcessPool

from channels.email.parse import parse_email
from channels.messages import InboundMessage
from helpdesk.triage.language import UNDETERMINED, language_of, new_part_of

log = logging.getLogger(__name__)

#: A sentence each parser process detects when it starts, so its language models are loaded before mail comes.
_WARM_UP_TEXT = "Hello, I cannot log in to my account since yesterday. Could you please help me?"

#: Messages handed to a parser process at a time. One at a time, the parser process sat idle between them until
#: this process's busy writer thread let the executor's thread pass it the next (ProcessPoolExecutor keeps only
#: one call queued per process); a chunk keeps it busy for a few milliseconds instead.
CHUNK = 10

#: Each raw email's chunk (its future answer) and its place in that chunk.
ParsingAhead = dict[bytes, tuple[concurrent.futures.Future, int]]


def parse_with_language(raw: bytes, languages: tuple[str, ...]) -> InboundMessage | None:
    """Parse one raw email and detect its language among `languages`: the parser process's whole job.

    None for a message parse_email() rejects: the writing process parses it again, so its error is exactly
    parse_email's (and no exception has to survive pickling).
    """
    try:
        inbound = parse_email(raw)
    except Exception:  # a parser bug too: the writing process meets it again and quarantines the message
        return None
    language = language_of(inbound.subject, new_part_of(inbound), languages) if languages else None
    return dataclasses.replace(inbound, language=language or UNDETERMINED)


def parse_chunk(raws: list[bytes], languages: tuple[str, ...]) -> list[InboundMessage | None]:
    """parse_with_language() for each of `raws`, in order."""
    return [parse_with_language(raw, languages) for raw in raws]


def _warm_up(languages: tuple[str, ...]) -> None:
    if languages:
        language_of(None, _WARM_UP_TEXT, languages)


class ParserProcesses:
    """The parser processes of this process, started on first use and kept for its lifetime."""

    def __init__(self):
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._shape: tuple[int, tuple[str, ...]] | None = None

    def start(self, processes: int, languages: tuple[str, ...]) -> concurrent.futures.ProcessPoolExecutor | None:
        """Return the executor for `processes` parser processes that warm up `languages` (None for 0)."""
        if processes <= 0:
            return None
        with self._lock:
            if self._executor is not None and self._shape != (processes, languages):
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
            if self._executor is None:
                # Spawned, never forked: this process runs threads (jobs, Socket.IO), and a fork copies their
                # locks in whatever state they are.
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_warm_up, initargs=(languages,))
                self._shape = (processes, languages)
            return self._executor

    def submit(self, raws: list[bytes], processes: int, languages: tuple[str, ...]) -> ParsingAhead:
        for _attempt in range(2):
            executor = self.start(processes, languages)
            if executor is None:
                return {}
            try:
                parsing: ParsingAhead = {}
                for start in range(0, len(raws), CHUNK):
                    chunk = raws[start:start + CHUNK]
                    answer = executor.submit(parse_chunk, chunk, languages)
                    parsing.update((raw, (answer, place)) for place, raw in enumerate(chunk))
                return parsing
            except BrokenProcessPool:
                log.warning("the email parser process had stopped; starting a new one")
                self.stop()
        return {}  # it keeps dying: this batch is parsed in the poller's process

    def stop(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None


_parser_processes = ParserProcesses()


def parse_ahead(raws: list[bytes], processes: int, languages: tuple[str, ...]) -> ParsingAhead:
    """Start parsing `raws` in the parser processes; return each one's future answer (none when disabled)."""
    return _parser_processes.submit(raws, processes, languages)


def start_parser_processes(processes: int, languages: tuple[str, ...], *, wait: bool = True) -> None:
    """Start the parser processes now, not when the first mail comes; with `wait`, until their language models
    are loaded."""
    executor = _parser_processes.start(processes, languages)
    if executor is not None:
        warmed = executor.submit(_warm_up, languages)
        if wait:
            warmed.result()


def parsed(raw: bytes, parsing: ParsingAhead) -> InboundMessage:
    """Return `raw` parsed: the parser process's answer when it has one, else parse_email() here.

    Raises what parse_email() raises for a message it cannot parse.
    """
    chunk = parsing.pop(raw, None)
    if chunk is not None:
        answer, place = chunk
        try:
            inbound = answer.result()[place]
        except (BrokenProcessPool, concurrent.futures.CancelledError):
            log.warning("the email parser process stopped; parsing here instead", exc_info=True)
        else:
            if inbound is not None:
                return inbound
    return parse_email(raw)

