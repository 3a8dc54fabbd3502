"""The job path's statements sent straight to psycopg, on PostgreSQL.

Running a Core statement that SQLAlchemy has already compiled and cached still costs about as
much CPU again as psycopg's own `execute`: the execution context, the parameters' processing
and the result's set-up, at every execution (`bench/hot_path.py` shows it in the store's CPU
per job; docs/performance.md has the figures). A job sends four statements
(`statements.insert_job`, `start_attempt`, `finish` and `mark_sent`), so on PostgreSQL these
are compiled here once for psycopg and sent on the pool's connection (psycopg prepares them
after a few executions, as it does SQLAlchemy's). Everything else goes through SQLAlchemy.

What is supported is what those statements need, and the rest is refused when a statement is
compiled, not guessed at: named parameters, one row or none back, no expanding `IN`. The
values go through the same bind processors SQLAlchemy would apply (a JSON value is wrapped
for psycopg), and psycopg reads every column type of `ai_jobs` and `notification_outbox` back
as SQLAlchemy would (tests/integration/test_direct_sql.py compares the two, row by row).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from psycopg import Connection as PsycopgConnection
from psycopg.rows import tuple_row
from sqlalchemy import Dialect, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement


class FirstRow(Protocol):
    def first(self) -> Any:
        """The first row (SQLAlchemy's `Row` or psycopg's named tuple, read by attribute)."""


class Executes(Protocol):
    """What the job path's statements need of a connection: SQLAlchemy's `Connection` has it,
    and so has `DirectConnection`."""

    @property
    def dialect(self) -> Dialect: ...

    def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> FirstRow: ...


@dataclass(frozen=True)
class DirectStatement:
    """A statement compiled for psycopg: its SQL, the values it carries itself, and the bind
    processors to apply to the values it is given."""

    sql: str
    constants: Mapping[str, Any]
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]
    # The named tuple of the row it returns (None: no rows), made once: psycopg's own
    # `namedtuple_row` reads the column names from every result.
    row: Callable[[Sequence[Any]], Any] | None

    @classmethod
    def compile(cls, statement: Executable, dialect: Dialect) -> DirectStatement:
        assert isinstance(statement, ClauseElement)
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        if compiled.positional or dialect.paramstyle != "pyformat":
            raise ValueError(f"{dialect.name}: direct statements need named parameters")
        constants: dict[str, Any] = {}
        processors: dict[str, Callable[[Any], Any]] = {}
        for bind, name in compiled.bind_names.items():
            if bind.expanding:
                raise ValueError(
                    f"parameter {name!r} expands: run this statement through SQLAlchemy"
                )
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if not bind.required:  # a value in the statement itself: `.values(status="running")`
                value = bind.effective_value
                constants[name] = process(value) if process is not None else value
            elif process is not None:
                processors[name] = process
        columns = [column.name for column in getattr(statement, "exported_columns", ())]
        row: Callable[[Sequence[Any]], Any] | None = None
        if columns:
            row = namedtuple("Row", columns)._make  # type: ignore[attr-defined]
        return cls(str(compiled), constants, tuple(processors.items()), row)

    def parameters(self, given: Mapping[str, Any]) -> dict[str, Any]:
        params = {**self.constants, **given}
        for name, process in self.processors:
            if name in params:
                params[name] = process(params[name])
        return params


class DirectResult:
    def __init__(self, row: Any) -> None:
        self._row = row

    def first(self) -> Any:
        return self._row


class DirectConnection:
    """A pooled psycopg connection in autocommit, running the job path's statements."""

    def __init__(
        self,
        driver: PsycopgConnection[Any],
        dialect: Dialect,
        compiled: dict[Executable, DirectStatement],
    ) -> None:
        self._driver = driver
        self._dialect = dialect
        self._compiled = compiled

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> DirectResult:
        if not isinstance(parameters, Mapping):
            raise TypeError("direct statements take one set of parameters")
        direct = self._compiled.get(statement)
        if direct is None:
            # The statements are built once per shape (statements.py), so this fills up once.
            direct = self._compiled.setdefault(
                statement, DirectStatement.compile(statement, self._dialect)
            )
        with self._driver.cursor(row_factory=tuple_row) as cursor:
            cursor.execute(direct.sql, direct.parameters(parameters))
            if direct.row is None:
                return DirectResult(None)
            values = cursor.fetchone()
        return DirectResult(None if values is None else direct.row(values))
