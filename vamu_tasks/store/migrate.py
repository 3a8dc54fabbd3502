"""Runs the Alembic migrations shipped inside the package (`vamu-tasks db upgrade`)."""

from __future__ import annotations

import shlex
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
POSTGRES_PORT = 5432


class DatabaseNotReady(Exception):
    """The database cannot be migrated as it is: the message says why, and the fix, in a line."""


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's ini interpolation treats % specially; URLs may carry percent-encoded passwords.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> None:
    command.current(alembic_config(database_url))


def check_connection(database_url: str) -> None:
    """Connect once, so `db upgrade` can say in one line what is wrong instead of a traceback.

    Raises `DatabaseNotReady`. Its message never holds the URL's password.
    """
    url = sa.make_url(database_url)
    try:
        _connect(url)
        return
    except OperationalError as exc:
        # The driver's first line ("Connection refused", "password authentication failed ...").
        problem = (str(exc.orig or exc).strip().splitlines() or ["connection failed"])[0]
    if url.password:
        problem = problem.replace(str(url.password), "***")
    if _postgres_database_missing(url):
        where = f"{url.host or 'localhost'}:{url.port or POSTGRES_PORT}"
        raise DatabaseNotReady(
            f'database "{url.database}" does not exist on {where}; '
            f"create it with: {createdb_command(url)}"
        )
    raise DatabaseNotReady(
        f"cannot connect to {url.render_as_string(hide_password=True)}: {problem}"
    )


def createdb_command(url: URL) -> str:
    """The PostgreSQL client command that creates the URL's database (without its password)."""
    args = ["createdb"]
    if url.host:
        args += ["-h", url.host]
    if url.port and url.port != POSTGRES_PORT:
        args += ["-p", str(url.port)]
    if url.username:
        args += ["-U", url.username]
    return shlex.join([*args, str(url.database)])


def _connect(url: URL) -> None:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def _postgres_database_missing(url: URL) -> bool:
    """True only when the server says so: asked through its `postgres` maintenance database.

    Asking, rather than reading the error text, works whatever language the server logs in.
    Any failure (no such server, no access to `postgres`) means "cannot tell": False.
    """
    if url.get_backend_name() != "postgresql" or not url.database or url.database == "postgres":
        return False
    engine = sa.create_engine(
        url.set(database="postgres"), poolclass=NullPool, connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": url.database},
            ).first()
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()
    return found is None
