"""Throwaway PostgreSQL databases and Redis DB numbers for the tests, cleaned up afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "VAMU_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_BASE_URL = os.environ.get("VAMU_TEST_REDIS_URL", "redis://127.0.0.1:6379")
# Our own DB numbers, away from the default 0 that other tools on the machine use.
REDIS_BROKER_DB = 11
REDIS_APP_DB = 12


def redis_url(db: int) -> str:
    return f"{REDIS_BASE_URL}/{db}"


def delete_keys(db: int, *patterns: str) -> None:
    """Delete this session's keys only: other test sessions may share the DB."""
    client = redis.Redis.from_url(redis_url(db))
    try:
        for pattern in patterns:
            batch = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(batch), 500):
                client.delete(*batch[start : start + 500])
    finally:
        client.close()


@contextmanager
def temporary_database(prefix: str = "vamu_test") -> Iterator[str]:
    """Create an empty PostgreSQL database; drop it (forcibly) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`/metrics` of a process as {(sample name, sorted labels): value}."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
