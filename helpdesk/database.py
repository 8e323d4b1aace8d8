"""Database set-up that differs per engine, kept in one place."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable
from typing import ClassVar, Self, TypeVar

import sqlalchemy as sa
from flask import Flask, current_app, request
from sqlalchemy import orm
from sqlalchemy.exc import OperationalError

from helpdesk.extensions import db

T = TypeVar("T")
M = TypeVar("M")


def _on_sqlite_connect(dbapi_connection, connection_record) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    # Let SQLAlchemy, not the driver, emit BEGIN, so a writer can ask for BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # WAL lets the web process read while a worker writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode, NORMAL syncs at checkpoints instead of on every commit: a commit survives the process
    # crashing (what exactly-once ingest relies on) and only the last ones can be lost if the machine loses
    # power. Production runs PostgreSQL; this is the embedded default's trade, as SQLite documents it.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _on_sqlite_begin(connection: sa.Connection) -> None:
    if connection.dialect.name != "sqlite":
        return
    # A deferred transaction that reads then writes fails at once when another process wrote in between;
    # taking the write lock up front makes concurrent writers wait their turn instead.
    if connection.get_execution_options().get("sqlite_immediate"):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


#: Where the app keeps its SQLite writer lock (see begin_write), and where a connection notes that it holds it.
_WRITER_LOCK = "helpdesk.sqlite_writer_lock"
#: How long a writer waits for the others of its process, as long as SQLite's busy timeout.
WRITER_WAIT_SECONDS = 30


def _release_writer_lock(dbapi_connection, connection_record, *exception) -> None:
    lock = connection_record.info.pop(_WRITER_LOCK, None)
    if lock is not None:
        lock.release()


def init_database(app: Flask) -> None:
    """Bind the database to the app and install engine-specific behaviour."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
        options.setdefault("connect_args", {}).setdefault("timeout", 30)
        # A file has no server to drop the connection: the ping before every checkout would find nothing.
        options["pool_pre_ping"] = False
    db.init_app(app)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            if not sa.event.contains(engine, "connect", _on_sqlite_connect):
                sa.event.listen(engine, "connect", _on_sqlite_connect)
                sa.event.listen(engine, "begin", _on_sqlite_begin)
                # The connection goes back to the pool once its transaction committed or rolled back.
                sa.event.listen(engine, "checkin", _release_writer_lock)
                sa.event.listen(engine, "invalidate", _release_writer_lock)
            app.extensions[_WRITER_LOCK] = threading.Lock()
            app.before_request(_start_writing_requests_as_writers)


def _start_writing_requests_as_writers() -> None:
    # A request that reads and then writes (a login stamping last_login_at, a reply) would fail at once with
    # "database is locked" if a background job committed in between; as a writer from the start it waits.
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        begin_write()


def begin_write() -> None:
    """Start the session's transaction as a writer (SQLite: BEGIN IMMEDIATE); no-op if one is open.

    On SQLite, the writers of one process also queue on a lock of their own first, released when the
    transaction ends: SQLite lets a waiting writer sleep up to 100 ms between tries, so under load the
    database sat idle while writers slept (throughput fell and the slowest writes took seconds). Writers of
    other processes still meet SQLite's busy timeout.
    """
    session = db.session()
    if session.in_transaction():
        return
    lock = current_app.extensions.get(_WRITER_LOCK)
    if lock is None:
        session.connection(execution_options={"sqlite_immediate": True})
        return
    if not lock.acquire(timeout=WRITER_WAIT_SECONDS):
        raise OperationalError("BEGIN IMMEDIATE", None,
                               TimeoutError(f"other writers of this process held the database for "
                                            f"{WRITER_WAIT_SECONDS} s"))
    try:
        connection = session.connection(execution_options={"sqlite_immediate": True})
        connection.info[_WRITER_LOCK] = lock
    except BaseException:
        lock.release()
        raise


def once_per_transaction(key: str, compute: Callable[[], T]) -> T:
    """Return `compute()`, worked out once per transaction of the session: a transaction that stores many
    messages reads what they all need (the rules, a template) as it was when it needed it first."""
    session = db.session()
    transaction = session.get_transaction()
    if transaction is None:
        return compute()  # no transaction yet: nothing to tie the value to
    held = session.info.setdefault(_PER_TRANSACTION, {}).get(key)
    if held is not None and held[0] is transaction:
        return held[1]
    value = compute()
    # The transaction itself is held, not its id: a later one can never be mistaken for it.
    session.info[_PER_TRANSACTION][key] = (transaction, value)
    return value


_PER_TRANSACTION = "helpdesk.per_transaction"


# Inserts the busiest writers run for every message, built once: building a statement (and working out its
# cache key) cost more than running it.
def insert_loaded(model: type[M], row: dict) -> M:
    """INSERT one `model` row outside the unit of work; return it as an object of the session, loaded as stored.

    The INSERT is a Core statement returning every column; the object is built from what came back (see
    loaded_object). An ORM INSERT ... RETURNING did the same through the ORM's bulk machinery, at about three
    times the cost.
    """
    session = db.session()
    returned = session.connection().execute(_insert_returning_all(model), [row]).one()
    instance = _new_loaded(session, model, returned)
    _InsertedObjects.of(session, start=True).instances.append(instance)
    return instance


def inserted_id(model: type, row: dict) -> int:
    """INSERT one `model` row outside the unit of work and return its id: for a row nothing in the transaction
    reads as an object, which saves building one (about as costly as the INSERT itself)."""
    return db.session.connection().execute(_insert_returning_id(model), [row]).scalar_one()


@functools.cache
def _insert_returning_id(model: type) -> sa.Insert:
    table = sa.inspect(model).local_table
    return sa.insert(table).returning(table.c.id)


def loaded_object(model: type[M], row: sa.Row) -> M:
    """Return the session's object for a `model` row read with Core (all of `model`'s columns, in order).

    The object the session holds for that row already, if any (it loads what it lacks when read); else one
    built from the row, as a query builds what it loads, at a fraction of an ORM query's cost.
    """
    session = db.session()
    mapper = sa.inspect(model)
    existing = session.identity_map.get(mapper.identity_key_from_primary_key(
        [row[index] for index in _primary_key_positions(model)]))
    return existing if existing is not None else _new_loaded(session, model, row)


def _new_loaded(session: orm.Session, model: type[M], row: sa.Row) -> M:
    names = _attribute_names(model)
    instance = sa.inspect(model).class_manager.new_instance()
    orm.attributes.instance_dict(instance).update(zip(names, row, strict=True))  # no attribute events
    orm.make_transient_to_detached(instance)  # as if loaded: nothing pending
    session.add(instance)
    return instance


@functools.cache
def _insert_returning_all(model: type) -> sa.Insert:
    table = sa.inspect(model).local_table
    return sa.insert(table).returning(*table.columns)


@functools.cache
def _attribute_names(model: type) -> tuple[str, ...]:
    # Objects are made without their constructor, which is what sets the mappers up on first use.
    orm.configure_mappers()
    mapper = sa.inspect(model)
    return tuple(mapper.get_property_by_column(column).key for column in mapper.local_table.columns)


@functools.cache
def _primary_key_positions(model: type) -> tuple[int, ...]:
    table = sa.inspect(model).local_table
    return tuple(list(table.columns).index(column) for column in table.primary_key.columns)


@functools.cache
def plain_insert(table: sa.Table) -> sa.Insert:
    """INSERT into `table`, outside the unit of work (`db.session.connection().execute(..., [row])`)."""
    return sa.insert(table)


class TransactionState:
    """What one write transaction keeps in `session.info` under `key`, savepoints included.

    A savepoint rolled back restores the state to what it was when the savepoint began (`snapshot()`,
    `restore()`); `before_commit()` runs before the transaction itself commits; its end forgets the state.
    """

    key: ClassVar[str]
    _kinds: ClassVar[list[type[TransactionState]]] = []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        TransactionState._kinds.append(cls)

    def __init__(self, transaction: orm.SessionTransaction):
        self.transaction = transaction
        self.savepoints: dict[orm.SessionTransaction, object] = {}

    @classmethod
    def of(cls, session: orm.Session, *, start: bool = False) -> Self | None:
        """Return the state of the session's open transaction; with `start`, a new one when it has none."""
        transaction = session.get_transaction()
        state = session.info.get(cls.key)
        if state is not None and state.transaction is transaction:
            return state
        if not start:
            return None
        if transaction is None:
            raise RuntimeError(f"{cls.__name__} needs an open transaction")
        state = session.info[cls.key] = cls(transaction)
        return state

    def snapshot(self) -> object:
        raise NotImplementedError

    def restore(self, snapshot: object) -> None:
        raise NotImplementedError

    def before_commit(self, session: orm.Session) -> None:
        """Called before the transaction commits, not before a savepoint is released."""

    def after_rollback(self, session: orm.Session) -> None:
        """Called when the transaction rolls back, not when a savepoint does."""


def _open_states(session: orm.Session) -> list[TransactionState]:
    states = (kind.of(session) for kind in TransactionState._kinds)
    return [state for state in states if state is not None]


@sa.event.listens_for(orm.Session, "after_transaction_create")
def _note_savepoint(session, transaction) -> None:
    if transaction.nested:
        for state in _open_states(session):
            state.savepoints[transaction] = state.snapshot()


@sa.event.listens_for(orm.Session, "after_soft_rollback")
def _restore_at_savepoint(session, previous_transaction) -> None:
    if previous_transaction.nested:
        for state in _open_states(session):
            if previous_transaction in state.savepoints:
                state.restore(state.savepoints.pop(previous_transaction))


@sa.event.listens_for(orm.Session, "after_rollback")
def _after_transaction_rolls_back(session) -> None:
    if not session.in_nested_transaction():
        for state in _open_states(session):
            state.after_rollback(session)


@sa.event.listens_for(orm.Session, "before_commit")
def _before_transaction_commits(session) -> None:
    if not session.in_nested_transaction():
        for state in _open_states(session):
            state.before_commit(session)


@sa.event.listens_for(orm.Session, "after_transaction_end")
def _forget_states(session, transaction) -> None:
    if transaction.parent is None:
        for kind in TransactionState._kinds:
            state = session.info.get(kind.key)
            if state is not None and state.transaction is transaction:
                del session.info[kind.key]


class _InsertedObjects(TransactionState):
    """The objects insert_loaded() added: if their transaction (or savepoint) rolls back, they never existed,
    and they leave the session (as objects the unit of work inserted do)."""

    key = "helpdesk.inserted_objects"

    def __init__(self, transaction: orm.SessionTransaction):
        super().__init__(transaction)
        self.instances: list = []

    def snapshot(self) -> int:
        return len(self.instances)

    def restore(self, snapshot: int) -> None:
        session = db.session()
        for instance in self.instances[snapshot:]:
            if instance in session:
                session.expunge(instance)
        del self.instances[snapshot:]

    def after_rollback(self, session: orm.Session) -> None:
        self.restore(0)


# Rows nothing reads back in the transaction that writes them (audit events, outbox items) --------------------
#
# A transaction that stores many messages would run an INSERT for each such row; it can hold them instead and
# write each table's rows with one executemany when it commits. The rows go in in the order they were added,
# and before a flush that inserts into the same table (an event added to the unit of work), so ids keep the
# order of the ticket's timeline. Nothing may read such rows back, or refer to them, before the commit. (A
# flush inside a savepoint leaves them held: written there, they would be lost if the savepoint rolled back.)


class _DeferredInserts(TransactionState):
    key = "helpdesk.deferred_inserts"

    def __init__(self, transaction: orm.SessionTransaction):
        super().__init__(transaction)
        self.rows: dict[sa.Table, list[dict]] = {}

    def snapshot(self) -> dict[sa.Table, int]:
        return {table: len(rows) for table, rows in self.rows.items()}

    def restore(self, snapshot: dict[sa.Table, int]) -> None:
        self.rows = {table: rows[:snapshot.get(table, 0)] for table, rows in self.rows.items()}

    def write(self, session: orm.Session) -> None:
        held, self.rows = self.rows, {}  # later rows of the transaction are held again
        for table, rows in held.items():
            if rows:
                session.connection().execute(plain_insert(table), rows)

    def before_commit(self, session: orm.Session) -> None:
        self.write(session)


def defer_inserts() -> None:
    """Hold the insert_row() rows of the session's open transaction until it flushes or commits."""
    _DeferredInserts.of(db.session(), start=True)


def insert_row(table: sa.Table, row: dict) -> None:
    """INSERT `row` into `table` outside the unit of work: now, or with the transaction's deferred inserts."""
    session = db.session()
    deferred = _DeferredInserts.of(session)
    if deferred is not None:
        deferred.rows.setdefault(table, []).append(row)
        return
    session.connection().execute(plain_insert(table), [row])


@sa.event.listens_for(orm.Session, "before_flush")
def _write_deferred_before_flush(session, flush_context, instances) -> None:
    deferred = _DeferredInserts.of(session)
    if deferred is None or session.in_nested_transaction():
        return
    held = {table for table, rows in deferred.rows.items() if rows}
    # Only a flush that inserts into a table with held rows needs them in first (for the order of its ids);
    # nothing else refers to such rows.
    if held and any(sa.inspect(instance).mapper.local_table in held for instance in session.new):
        deferred.write(session)
