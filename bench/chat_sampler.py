"""A gunicorn config file that samples where the server's Socket.IO event handlers spend their time.

    gunicorn -c bench/chat_sampler.py -w 1 --threads 600 wsgi:app     # with BENCH_SAMPLE_FILE=out.json

Used by `bench/chat_load.py --profile`. In the worker, every Socket.IO event handler (each runs in its own
thread in threading mode) is registered while it runs; a sampling thread looks at those threads' stacks
BENCH_SAMPLE_HZ times a second (sys._current_frames) and counts, per sample, each function on the stack
(inclusive: wall time spent in it or below, waiting included) and the innermost frame (exclusive). Only
in-flight handlers are walked, so idle connections (hundreds of parked threads) cost nothing. At worker exit
the counts go to BENCH_SAMPLE_FILE as JSON, together with the worker's CPU time per thread role, the SQL
statements by kind and, on SQLite, how long each writer held the write lock. With BENCH_CPU_PROFILE_FILE set
too, every handler runs under cProfile timed by its thread's CPU clock, merged into that pstats file.
"""

from __future__ import annotations

import collections
import cProfile
import json
import os
import pstats
import sys
import threading
import time

_in_flight: dict[int, str] = {}
_inclusive: collections.Counter = collections.Counter()
_exclusive: collections.Counter = collections.Counter()
_by_event: collections.Counter = collections.Counter()
_calls: collections.Counter = collections.Counter()
_active: collections.Counter = collections.Counter()
_write_holds: list[float] = []
_pool_holds: list[float] = []
_state = {"samples": 0, "handler_samples": 0, "active_samples": 0, "started": 0.0, "sampler_cpu": 0.0}
_stop = threading.Event()
DUMP_SECONDS = 5.0
#: With BENCH_CPU_PROFILE_FILE set, each handler also runs under cProfile with a CPU clock (thread_time), so
#: its figures are CPU seconds, not time spent waiting for the GIL, a lock or the database.
_CPU_PROFILE_PATH = os.environ.get("BENCH_CPU_PROFILE_FILE")
_profiles: list[cProfile.Profile] = []
_merged: list[pstats.Stats] = []


def _where(frame) -> str:
    code = frame.f_code
    filename = code.co_filename
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    else:
        root = os.getcwd() + os.sep
        filename = filename.removeprefix(root)
    return f"{filename}:{code.co_name}"


def _sample_forever(hz: float) -> None:
    period = 1.0 / hz
    started_cpu = time.thread_time()
    next_dump = time.monotonic() + DUMP_SECONDS
    while not _stop.wait(period):
        _state["sampler_cpu"] = time.thread_time() - started_cpu
        if time.monotonic() >= next_dump:
            # Written as it goes too: a worker killed at shutdown never reaches worker_exit.
            _dump()
            next_dump = time.monotonic() + DUMP_SECONDS
        frames = sys._current_frames()
        _state["samples"] += 1
        for ident, event in list(_in_flight.items()):
            frame = frames.get(ident)
            if frame is None:
                continue
            _state["handler_samples"] += 1
            _by_event[event] += 1
            innermost = _where(frame)
            _exclusive[f"{innermost}:{frame.f_lineno}"] += 1
            # Parked on a lock or a condition (a pool checkout, a queue): waiting, not working.
            is_waiting = innermost.endswith(("threading.py:wait", "threading.py:acquire"))
            if not is_waiting:
                _state["active_samples"] += 1
            seen = set()
            while frame is not None:
                where = _where(frame)
                if where not in seen:
                    seen.add(where)
                    _inclusive[where] += 1
                    if not is_waiting:
                        _active[where] += 1
                frame = frame.f_back


def _install_handler_registry() -> None:
    import socketio

    original = socketio.Server._handle_event_internal

    def registered(self, server, sid, eio_sid, data, namespace, id):
        event = f"{namespace} {data[0] if data else '?'}"
        ident = threading.get_ident()
        _in_flight[ident] = event
        _calls[event] += 1
        profile = cProfile.Profile(time.thread_time) if _CPU_PROFILE_PATH else None
        try:
            if profile is None:
                return original(self, server, sid, eio_sid, data, namespace, id)
            return profile.runcall(original, self, server, sid, eio_sid, data, namespace, id)
        finally:
            _in_flight.pop(ident, None)
            if profile is not None:
                _profiles.append(profile)

    socketio.Server._handle_event_internal = registered


def _install_statement_counter() -> None:
    # Every SQL statement the worker sends, by its first words, with the wall time spent in the driver.
    import sqlalchemy as sa

    lock = threading.Lock()

    @sa.event.listens_for(sa.engine.Engine, "before_cursor_execute")
    def started(conn, cursor, statement, parameters, context, executemany):
        conn.info["bench_started"] = time.perf_counter()

    @sa.event.listens_for(sa.engine.Engine, "after_cursor_execute")
    def finished(conn, cursor, statement, parameters, context, executemany):
        elapsed = time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())
        words = statement.split(None, 3)
        kind = " ".join(words[:3] if words and words[0] in ("UPDATE", "INSERT", "DELETE") else words[:1])
        with lock:
            _statements[kind] = _statements.get(kind, 0) + 1
            _statement_seconds[kind] = _statement_seconds.get(kind, 0.0) + elapsed
        if statement.startswith("BEGIN IMMEDIATE"):
            conn.info["bench_write_began"] = time.perf_counter()

    def ended(conn):
        # How long a writer held SQLite's one write lock: from BEGIN IMMEDIATE granted to commit/rollback.
        began = conn.info.pop("bench_write_began", None)
        if began is not None:
            _write_holds.append(time.perf_counter() - began)

    sa.event.listen(sa.engine.Engine, "commit", ended)
    sa.event.listen(sa.engine.Engine, "rollback", ended)

    def checked_out(dbapi_connection, record, proxy):
        record.info["bench_checked_out"] = time.perf_counter()

    def checked_in(dbapi_connection, record):
        # How long a handler kept its pooled connection: the pool (5 + 10 overflow) is shared by all of them.
        began = record.info.pop("bench_checked_out", None)
        if began is not None:
            _pool_holds.append(time.perf_counter() - began)

    sa.event.listen(sa.pool.Pool, "checkout", checked_out)
    sa.event.listen(sa.pool.Pool, "checkin", checked_in)


_statements: dict[str, int] = {}
_statement_seconds: dict[str, float] = {}


def post_worker_init(worker):
    """Gunicorn hook: start sampling in the worker, if BENCH_SAMPLE_FILE is set."""
    if not os.environ.get("BENCH_SAMPLE_FILE"):
        return
    _install_handler_registry()
    _install_statement_counter()
    _state["started"] = time.monotonic()
    hz = float(os.environ.get("BENCH_SAMPLE_HZ", "100"))
    threading.Thread(target=_sample_forever, args=(hz,), name="bench-sampler", daemon=True).start()


def worker_exit(server, worker):
    """Gunicorn hook: write what was sampled."""
    if not os.environ.get("BENCH_SAMPLE_FILE") or not _state["started"]:
        return
    _stop.set()
    time.sleep(0.05)
    _dump()


def _dump() -> None:
    path = os.environ["BENCH_SAMPLE_FILE"]
    report = {
        "seconds": time.monotonic() - _state["started"],
        "hz": float(os.environ.get("BENCH_SAMPLE_HZ", "100")),
        **_state,
        "by_event": _copy(_by_event),
        "calls": _copy(_calls),
        "inclusive": dict(_inclusive.most_common(400)),
        "active": dict(_active.most_common(400)),
        "write_holds": _summary(list(_write_holds)),
        "pool_holds": _summary(list(_pool_holds)),
        "exclusive": dict(_exclusive.most_common(200)),
        "thread_cpu": _thread_cpu_by_name(),
        "threads_by_role": dict(collections.Counter(_role(thread) for thread in threading.enumerate())),
        "statements": dict(sorted(_copy(_statements).items(), key=lambda item: -item[1])),
        "statement_seconds": {kind: round(seconds, 3) for kind, seconds in _copy(_statement_seconds).items()},
    }
    with open(path + ".part", "w") as handle:
        json.dump(report, handle)
    os.replace(path + ".part", path)
    if _CPU_PROFILE_PATH and _profiles:
        while _profiles:
            profile = _profiles.pop()
            if _merged:
                _merged[0].add(profile)
            else:
                _merged.append(pstats.Stats(profile))
        _merged[0].dump_stats(_CPU_PROFILE_PATH + ".part")
        os.replace(_CPU_PROFILE_PATH + ".part", _CPU_PROFILE_PATH)


def _copy(counts: dict) -> dict:
    # Other threads add keys meanwhile; a copy that raced one is simply taken again.
    while True:
        try:
            return dict(counts)
        except RuntimeError:
            continue


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(ordered), "total": sum(ordered), "p50": ordered[len(ordered) // 2],
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], "max": ordered[-1]}


def _thread_cpu_by_name() -> dict[str, float]:
    # Per-thread CPU seconds from /proc, grouped by what the thread runs (its Python target's name).
    names = {thread.native_id: _role(thread) for thread in threading.enumerate()}
    totals: collections.Counter = collections.Counter()
    for tid in os.listdir("/proc/self/task"):
        totals[names.get(int(tid), "native")] += _cpu_seconds(f"/proc/self/task/{tid}/stat")
    # Threads that have ended (each event handler runs in a thread of its own) only show in the total.
    totals["ended threads (event handlers, mostly)"] = _cpu_seconds("/proc/self/stat") - sum(totals.values())
    return {name: round(seconds, 2) for name, seconds in totals.most_common()}


def _cpu_seconds(stat_path: str) -> float:
    try:
        with open(stat_path) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _role(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    if target is None:
        return thread.name.split("-")[0] if thread.name else "thread"
    return getattr(target, "__qualname__", repr(target))
