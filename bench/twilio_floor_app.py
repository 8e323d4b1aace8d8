"""The floor of the Twilio webhook benchmark: a bare Flask app that validates nothing and inserts one row.

    FLOOR_DATABASE_URL=sqlite:///floor.sqlite3 gunicorn -w 1 --threads 100 bench.twilio_floor_app:app

POST /channels/twilio/sms reads the form, inserts (MessageSid, From, Body) into `floor_text` in one committed
transaction of the same kind of database as the helpdesk's (SQLAlchemy engine, SQLite in WAL mode with a busy
timeout and synchronous=NORMAL as the helpdesk sets it, or PostgreSQL through psycopg 3), and answers with empty TwiML.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from flask import Flask, Response, request

metadata = sa.MetaData()
floor_text = sa.Table(
    "floor_text", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sid", sa.String(64), nullable=False),
    sa.Column("sender", sa.String(64), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url.removeprefix(prefix)
    return sa.create_engine(url, pool_pre_ping=True)


def create_floor_app(database_url: str | None = None) -> Flask:
    """Build the floor app on `database_url` (default FLOOR_DATABASE_URL), creating its one table."""
    engine = _engine(database_url or os.environ["FLOOR_DATABASE_URL"])
    metadata.create_all(engine)
    app = Flask(__name__)

    @app.post("/channels/twilio/sms")
    def receive():
        """Insert the text as one row and answer with empty TwiML."""
        with engine.begin() as connection:
            connection.execute(floor_text.insert().values(
                sid=request.form.get("MessageSid", ""), sender=request.form.get("From", ""),
                body=request.form.get("Body", "")))
        return Response('<?xml version="1.0" encoding="UTF-8"?><Response />', mimetype="text/xml")

    return app


app = create_floor_app() if "FLOOR_DATABASE_URL" in os.environ else None
