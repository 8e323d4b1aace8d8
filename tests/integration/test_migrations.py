"""Migrations run through the real CLI on an empty database, SQLite or PostgreSQL, and match the models."""

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from helpdesk.config import _normalize_database_url
from helpdesk.extensions import db
from tests.conftest import is_postgres

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_database(tmp_path):
    """The URL of a new, empty database of the kind this run uses."""
    if not is_postgres():
        yield f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
        return
    server = sa.create_engine(_normalize_database_url(os.environ["DATABASE_URL"]), isolation_level="AUTOCOMMIT")
    name = "helpdesk_migrations_check"
    with server.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    yield str(server.url.set(database=name).render_as_string(hide_password=False))
    with server.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    server.dispose()


def flask_db(repo_root, tmp_path, url, *args):
    env = {**os.environ, "DATABASE_URL": url, "HELPDESK_INSTANCE_PATH": str(tmp_path / "instance"),
           "SECRET_KEY": "migration-test"}
    env.pop("REDIS_URL", None)
    completed = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", *args], cwd=repo_root,
                               env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return completed


def head_revision(repo_root) -> str:
    config = AlembicConfig()
    config.set_main_option("script_location", str(repo_root / "helpdesk" / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


def schema_differences(url) -> list:
    engine = sa.create_engine(_normalize_database_url(url))
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
    engine.dispose()
    return differences


def current_revision(url) -> str | None:
    engine = sa.create_engine(_normalize_database_url(url))
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    return revision


def test_upgrade_from_empty_builds_exactly_the_models_schema(repo_root, tmp_path, empty_database):
    flask_db(repo_root, tmp_path, empty_database, "upgrade")
    assert current_revision(empty_database) == head_revision(repo_root)
    assert schema_differences(empty_database) == []
    engine = sa.create_engine(_normalize_database_url(empty_database))
    with engine.connect() as connection:
        counter = connection.execute(sa.text("SELECT next_number FROM ticket_counter WHERE id = 1")).scalar_one()
    engine.dispose()
    assert counter == 1001


def test_the_latest_revision_downgrades_and_upgrades_again(repo_root, tmp_path, empty_database):
    flask_db(repo_root, tmp_path, empty_database, "upgrade")
    head = head_revision(repo_root)
    flask_db(repo_root, tmp_path, empty_database, "downgrade")
    assert current_revision(empty_database) != head
    flask_db(repo_root, tmp_path, empty_database, "upgrade")
    assert current_revision(empty_database) == head
    assert schema_differences(empty_database) == []
