"""Database set-up that differs per engine, kept in one place."""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from flask import Flask, request

from helpdesk.extensions import db


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


def init_database(app: Flask) -> None:
    """Bind the database to the app and install engine-specific behaviour."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
        options.setdefault("connect_args", {}).setdefault("timeout", 30)
    db.init_app(app)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            if not sa.event.contains(engine, "connect", _on_sqlite_connect):
                sa.event.listen(engine, "connect", _on_sqlite_connect)
                sa.event.listen(engine, "begin", _on_sqlite_begin)
            app.before_request(_start_writing_requests_as_writers)


def _start_writing_requests_as_writers() -> None:
    # A request that reads and then writes (a login stamping last_login_at, a reply) would fail at once with
    # "database is locked" if a background job committed in between; as a writer from the start it waits.
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        begin_write()


def begin_write() -> None:
    """Start the session's transaction as a writer (SQLite: BEGIN IMMEDIATE); no-op if one is open."""
    if not db.session().in_transaction():
        db.session.connection(execution_options={"sqlite_immediate": True})
