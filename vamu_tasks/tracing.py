"""Carries a job's `requestId` and `traceparent` through Celery headers into every log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

TRACE_HEADERS = ("requestId", "traceparent")

_current: ContextVar[Mapping[str, str] | None] = ContextVar("vamu_trace", default=None)
_installed = False


def current_trace() -> dict[str, str]:
    """The trace fields of the job this thread is working on (empty outside a job)."""
    return dict(_current.get() or {})


@contextmanager
def trace_context(fields: Mapping[str, Any]) -> Iterator[None]:
    clean = {k: str(v) for k, v in fields.items() if v is not None and v != ""}
    token = _current.set(clean)
    try:
        yield
    finally:
        _current.reset(token)


def set_trace(fields: Mapping[str, Any] | None) -> None:
    """Set (or with None clear) the trace for code that cannot use `trace_context`."""
    _current.set({k: str(v) for k, v in (fields or {}).items() if v})


def describe(fields: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(fields.items()))


def install_log_record_factory() -> None:
    """Give every log record a `trace` attribute, so formats may use `%(trace)s` safely."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        fields = _current.get()
        record.trace = f" [{describe(fields)}]" if fields else ""
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s]%(trace)s %(message)s"
TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]%(trace)s %(message)s"
)
