"""Watch what the app's engine does while a block runs: the SQL it sends, the transactions it commits."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from helpdesk.extensions import db


@contextlib.contextmanager
def engine_events(name: str, keep: Callable[..., object] = lambda *args: args) -> Iterator[list]:
    """Collect `keep(*arguments)` of each `name` event of the engine while the block runs."""
    seen: list = []

    def record(*args):
        seen.append(keep(*args))

    sa.event.listen(db.engine, name, record)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, name, record)


def statements_sent() -> contextlib.AbstractContextManager[list[str]]:
    """The SQL statements sent while the block runs, in order."""
    return engine_events("before_cursor_execute", lambda connection, cursor, statement, *rest: statement)


def commits() -> contextlib.AbstractContextManager[list]:
    """One entry per transaction committed while the block runs."""
    return engine_events("commit")
