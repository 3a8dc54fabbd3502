"""`vamu-tasks dev` creates its PostgreSQL database once, through the server's `postgres` db."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.support.services import PG_ADMIN_URL
from vamu_tasks.dev import DevError, ensure_database, migrate

pytestmark = pytest.mark.integration


def test_a_missing_database_is_created_then_found_and_migrated():
    name = f"vamu_test_dev-{uuid.uuid4().hex[:8]}"  # a "-": the name must be quoted
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        assert ensure_database(url) is True
        assert ensure_database(url) is False
        migrate(url)
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM ai_jobs")).scalar() == 0
        finally:
            engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_server_that_does_not_answer_is_one_line_naming_it():
    with pytest.raises(DevError) as caught:
        ensure_database("postgresql+psycopg://postgres:secret@127.0.0.1:1/vamu_dev")

    message = str(caught.value)
    assert message.startswith("cannot create database 'vamu_dev' through postgresql+psycopg://")
    assert "secret" not in message and "\n" not in message
