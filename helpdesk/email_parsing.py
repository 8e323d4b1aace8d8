"""Polled mail is parsed in a process of its own, ahead of the one that writes it.

Parsing (the standard `email` package, pure Python) and language detection are most of the CPU an email costs
before the database sees it. The poller hands each FETCH's bodies to a `ParsingAhead`; a parser process works
through them while this process writes the ones parsed before, so the two run side by side on two cores. Each
parsed message carries its language, so the writing process never loads the language models.

    parsing = ParsingAhead(processes, languages, timeout)
    parsing.add(raws)              # start parsing them (nothing starts when processes is 0)
    inbound = parsing.result(raw)  # the parser process's answer, or parse_email(raw) here

HELPDESK_EMAIL_PARSER_PROCESSES sets how many parser processes run (default 1; 0 parses in the poller's own
process). A parser process that dies takes nothing with it: its messages are parsed here instead, and the next
FETCH starts a new process. A message the parser rejects raises UnparseableEmail here, with the parser's error,
without being parsed again.

A message the parser process spends longer than HELPDESK_EMAIL_PARSE_TIMEOUT_SECONDS on (a pathological input
the standard library takes hours over) must not hold up the mailbox: the process is stopped, the other messages
it held are parsed again by a new one, one at a time, and the message that runs out of time alone raises
ParsingTimedOut, which the poller quarantines. The deadline counts from when the poller starts waiting for the
message; a call it may have waited behind (another message's) is never taken for the slow one. Only the parser
processes have this deadline: with none, the poller parses in its own process for as long as parsing takes.

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

from channels.email.parse import UnparseableEmail, parse_email
from channels.messages import InboundMessage
from helpdesk.triage.language import UNDETERMINED, language_of, new_part_of

log = logging.getLogger(__name__)

#: A sentence each parser process detects when it starts, so its language models are loaded before mail comes.
_WARM_UP_TEXT = "Hello, I cannot log in to my account since yesterday. Could you please help me?"

#: Messages handed to a parser process at a time. One at a time, the parser process sat idle between them until
#: this process's busy writer thread let the executor's thread pass it the next (ProcessPoolExecutor keeps only
#: one call queued per process); a chunk keeps it busy for a few milliseconds instead.
CHUNK = 10


def parse_with_language(raw: bytes, languages: tuple[str, ...]) -> InboundMessage | str:
    """Parse one raw email and detect its language among `languages`: the parser process's whole job.

    For a message parse_email() rejects (or a parser bug), the error as text: the writing process quarantines
    the message with it, without parsing it again (an exception need not survive pickling).
    """
    try:
        inbound = parse_email(raw)
    except UnparseableEmail as error:
        return str(error)
    except Exception as error:  # a parser bug: the message is quarantined with it
        return f"{type(error).__name__}: {error}"
    language = language_of(inbound.subject, new_part_of(inbound), languages) if languages else None
    return dataclasses.replace(inbound, language=language or UNDETERMINED)


def parse_chunk(raws: list[bytes], languages: tuple[str, ...]) -> list[InboundMessage | str]:
    """parse_with_language() for each of `raws`, in order."""
    return [parse_with_language(raw, languages) for raw in raws]


def _warm_up(languages: tuple[str, ...]) -> None:
    if languages:
        language_of(None, _WARM_UP_TEXT, languages)


class ParsingTimedOut(Exception):
    """A parser process spent longer than its deadline over one message; the message is quarantined."""


@dataclasses.dataclass(frozen=True)
class _Answer:
    """The future answer of the parser-process call parsing a raw email, and that email's place in it."""

    future: concurrent.futures.Future
    place: int
    #: How many emails that call parses: a call that times out over one email has found the slow one.
    of: int


class ParserProcesses:
    """The parser processes of this process, started on first use and kept for its lifetime."""

    def __init__(self):
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._shape: tuple[int, tuple[str, ...]] | None = None
        self._ready: concurrent.futures.Future | None = None
        #: Every call submitted and not known to be finished, oldest first.
        self._calls: list[concurrent.futures.Future] = []

    def start(self, processes: int, languages: tuple[str, ...]) -> concurrent.futures.ProcessPoolExecutor | None:
        """Return the executor for `processes` parser processes that warm up `languages` (None for 0)."""
        if processes <= 0:
            return None
        with self._lock:
            if self._executor is not None and self._shape != (processes, languages):
                _kill(self._executor)
                self._executor = None
            if self._executor is None:
                # Spawned, never forked: this process runs threads (jobs, Socket.IO), and a fork copies their
                # locks in whatever state they are.
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_warm_up, initargs=(languages,))
                self._shape = (processes, languages)
                # Answered once a process has started and loaded its language models: a deadline for parsing
                # counts from then.
                self._ready = self._executor.submit(_warm_up, ())
            return self._executor

    def wait_until_ready(self) -> None:
        """Wait until the current parser processes have started (no deadline: starting is not parsing)."""
        ready = self._ready
        if ready is not None:
            concurrent.futures.wait([ready])

    def submit(self, raws: list[bytes], processes: int, languages: tuple[str, ...], *,
               per_call: int = CHUNK) -> dict[bytes, _Answer]:
        """Start parsing `raws`, `per_call` of them to a call; return each one's answer (none for 0 processes)."""
        for _attempt in range(2):
            executor = self.start(processes, languages)
            if executor is None:
                return {}
            try:
                answers: dict[bytes, _Answer] = {}
                for start in range(0, len(raws), per_call):
                    call = raws[start:start + per_call]
                    future = executor.submit(parse_chunk, call, languages)
                    self._calls = [*self._unfinished_calls(), future]
                    answers.update((raw, _Answer(future, place, len(call))) for place, raw in enumerate(call))
                return answers
            except BrokenProcessPool:
                log.warning("the email parser process had stopped; starting a new one")
                self.stop()
        return {}  # it keeps dying: this batch is parsed in the poller's process

    def waits_behind_others(self, future: concurrent.futures.Future) -> bool:
        """Tell whether a call submitted before `future` is still unfinished: `future` may not have started."""
        unfinished = self._calls = self._unfinished_calls()
        return bool(unfinished) and unfinished[0] is not future

    def _unfinished_calls(self) -> list[concurrent.futures.Future]:
        return [call for call in self._calls if not call.done()]

    def stop(self, *, kill: bool = False) -> None:
        """Stop the parser processes; with `kill`, also one that is busy parsing."""
        with self._lock:
            executor, self._executor, self._ready = self._executor, None, None
        self._calls = []
        if executor is None:
            return
        if kill:
            _kill(executor)
        else:
            executor.shutdown(wait=False, cancel_futures=True)


def _kill(executor: concurrent.futures.ProcessPoolExecutor) -> None:
    """Stop `executor`'s processes, busy or not; its unfinished calls fail with BrokenProcessPool."""
    terminate_workers = getattr(executor, "terminate_workers", None)  # Python 3.14
    if terminate_workers is not None:
        terminate_workers()
    else:  # no public way before it
        for process in list((executor._processes or {}).values()):
            process.terminate()
    executor.shutdown(wait=False, cancel_futures=True)


_parser_processes = ParserProcesses()


class ParsingAhead:
    """Raw emails handed to the parser processes, each with its future answer; see the module's docs."""

    def __init__(self, processes: int, languages: tuple[str, ...], timeout: float):
        self.processes = processes
        self.languages = languages
        #: Seconds the parser process may take over one message before it is stopped.
        self.timeout = timeout
        self._answers: dict[bytes, _Answer] = {}

    def __contains__(self, raw: bytes) -> bool:
        return raw in self._answers

    def add(self, raws: list[bytes]) -> None:
        """Start parsing those of `raws` not being parsed already."""
        new = [raw for raw in raws if raw not in self._answers]
        self._answers.update(_parser_processes.submit(new, self.processes, self.languages))

    def keep_only(self, raws: list[bytes]) -> None:
        """Forget the answers of emails other than `raws` (the poller dropped them), cancelling the calls that
        no longer parse anything wanted."""
        wanted = set(raws)
        kept = {raw: answer for raw, answer in self._answers.items() if raw in wanted}
        still_needed = {id(answer.future) for answer in kept.values()}
        for answer in self._answers.values():
            if id(answer.future) not in still_needed:
                answer.future.cancel()  # only a call not yet started: one under way runs on
        self._answers = kept

    def result(self, raw: bytes) -> InboundMessage:
        """Return `raw` parsed: the parser process's answer when it has one, else parse_email() here.

        Raises UnparseableEmail for a message that cannot be parsed, and ParsingTimedOut for one the parser
        process took longer than `timeout` over.
        """
        answer = self._answers.pop(raw, None)
        while answer is not None:
            _parser_processes.wait_until_ready()
            try:
                inbound = answer.future.result(timeout=self.timeout)[answer.place]
            except TimeoutError:
                answer = self._after_timeout(raw, answer)
                continue
            except (BrokenProcessPool, concurrent.futures.CancelledError):
                log.warning("the email parser process stopped; parsing here instead", exc_info=True)
                break
            if isinstance(inbound, str):
                raise UnparseableEmail(inbound)
            return inbound
        return parse_email(raw)

    def _after_timeout(self, raw: bytes, answer: _Answer) -> _Answer:
        """Stop the stuck parser process and hand what it held to a new one; raise if `raw` alone was the cause.

        Returns `raw`'s new answer. After a deadline passed, every email still waiting is parsed one to a call,
        so the next deadline that passes names the slow one.
        """
        # Alone in its call and with nothing before it, the call was parsing `raw` all that time.
        culprit = answer.of == 1 and not _parser_processes.waits_behind_others(answer.future)
        _parser_processes.stop(kill=True)
        finished = {other: held for other, held in self._answers.items()
                    if held.future.done() and not held.future.cancelled() and held.future.exception() is None}
        waiting = [other for other in self._answers if other not in finished]
        if not culprit:
            waiting.insert(0, raw)
        self._answers = {**finished,
                         **_parser_processes.submit(waiting, self.processes, self.languages, per_call=1)}
        if culprit:
            log.warning("the email parser process took longer than %s s over one message; it was stopped",
                        self.timeout)
            raise ParsingTimedOut(f"parsing took longer than {self.timeout:g} s; the parser process was stopped")
        log.warning("the email parser process took longer than %s s; it was stopped, and the messages it had are "
                    "parsed again one at a time", self.timeout)
        again = self._answers.pop(raw, None)
        if again is None:
            raise ParsingTimedOut(f"parsing took longer than {self.timeout:g} s, and no parser process could be "
                                  "started to try again")
        return again


def start_parser_processes(processes: int, languages: tuple[str, ...], *, wait: bool = True) -> None:
    """Start the parser processes now, not when the first mail comes; with `wait`, until their language models
    are loaded."""
    _parser_processes.start(processes, languages)
    if wait:
        _parser_processes.wait_until_ready()


def stop_parser_processes() -> None:
    """Stop the parser processes, also one still parsing what nobody waits for any more (so a command exits)."""
    _parser_processes.stop(kill=True)
