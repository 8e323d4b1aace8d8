"""Throwaway databases for the benchmarks: a temporary SQLite file, or a new database on a PostgreSQL server."""

from __future__ import annotations

import contextlib
import os
import pathlib
import uuid


def libpq_url(url: str) -> str:
    """The URL as psycopg takes it (no SQLAlchemy driver suffix)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url.removeprefix(prefix)
    return url


@contextlib.contextmanager
def throwaway_database(server_url: str | None, folder: pathlib.Path):
    """Yield the URL of a new, empty database; drop it afterwards.

    Without `server_url`, an SQLite file in `folder`; with one (any database on a PostgreSQL server), a new
    database there, on the same server with the same user and password.
    """
    if not server_url:
        path = folder / f"bench-{uuid.uuid4().hex[:8]}.sqlite3"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{path}{suffix}")
        return
    import psycopg
    from sqlalchemy.engine import make_url

    admin_url = libpq_url(server_url)
    name = f"helpdesk_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
