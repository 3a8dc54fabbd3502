"""One exception tree for every failure a job can meet, each with the `error_kind` of its row.

    VamuError                      error_kind, retryable
    ├── PermanentError             the job fails at once
    │   ├── InvalidJob             invalid_job
    │   ├── UserNotFound           user_not_found
    │   ├── QuotaExceeded          quota
    │   ├── BudgetExceeded         budget_exceeded (our own daily spend budget)
    │   ├── ContextLengthExceeded  context_length
    │   ├── ContentFiltered        content_filter
    │   ├── SchemaInvalid          schema_invalid
    │   ├── ProviderRejected       provider_error (bad request, auth, unknown model)
    │   ├── JobCancelled           cancelled
    │   └── InternalError          internal
    └── TransientError             retried by the task layer with backoff
        ├── UpstreamApiError       upstream_api (NestJS 5xx, timeouts)
        ├── RateLimited            rate_limited (carries Retry-After)
        ├── ProviderUnavailable    provider_error (5xx, 529, dropped connections)
        │   └── StreamInterrupted  provider_error (a stream broke or ended without a stop)
        ├── ProviderTimeout        timeout
        └── StoreUnavailable       internal (database down)

Only the task layer turns a TransientError into a Celery retry; use cases just raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from vamu_tasks.domain import PATTERN_PROBLEMS

ErrorKind = Literal[
    "invalid_job",
    "user_not_found",
    "upstream_api",
    "rate_limited",
    "quota",
    "budget_exceeded",
    "context_length",
    "content_filter",
    "schema_invalid",
    "provider_error",
    "timeout",
    "cancelled",
    "internal",
]
ERROR_KINDS: tuple[ErrorKind, ...] = ErrorKind.__args__  # type: ignore[attr-defined]


class VamuError(Exception):
    """Root of every error this package raises on purpose."""

    error_kind: ClassVar[ErrorKind] = "internal"
    retryable: ClassVar[bool] = False
    default_message: ClassVar[str] = "Unexpected failure; see the worker log for the traceback."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(VamuError):
    """Retrying cannot help: the job fails with this kind."""


class InvalidJob(PermanentError):
    error_kind = "invalid_job"
    default_message = "The job's input does not match its schema."

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> InvalidJob:
        """Field errors as `field: problem; ...` in JSON's terms, never echoing the input."""
        parts = []
        for err in exc.errors(include_url=False)[:10]:
            where = ".".join(str(p) for p in err["loc"]) or "(data)"
            parts.append(f"{where}: {_problem(err)}")
        return cls("; ".join(parts))


class UserNotFound(PermanentError):
    error_kind = "user_not_found"
    default_message = "The NestJS API does not know this user; check the userId sent."


class QuotaExceeded(PermanentError):
    error_kind = "quota"
    default_message = "The provider account is out of quota; top it up or switch provider."


class BudgetExceeded(PermanentError):
    error_kind = "budget_exceeded"
    default_message = "Today's spend budget is used up; it resets at midnight UTC."


class ContextLengthExceeded(PermanentError):
    error_kind = "context_length"
    default_message = "The prompt is longer than the model's context window."


class ContentFiltered(PermanentError):
    error_kind = "content_filter"
    default_message = "The provider refused the content under its safety policy."


class SchemaInvalid(PermanentError):
    error_kind = "schema_invalid"
    default_message = "The model's output did not match the result schema, even after a repair."


class ProviderRejected(PermanentError):
    error_kind = "provider_error"
    default_message = "The provider rejected the request (bad request, auth or unknown model)."


class JobCancelled(PermanentError):
    error_kind = "cancelled"
    default_message = "The job was cancelled by an operator."


class JobTimedOut(PermanentError):
    error_kind = "timeout"
    default_message = "The attempt ran past VAMU_TASK_SOFT_TIME_LIMIT_S and was stopped."


class InternalError(PermanentError):
    error_kind = "internal"


class TransientError(VamuError):
    """May succeed later: the task layer retries it with backoff."""

    retryable = True

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamApiError(TransientError):
    error_kind = "upstream_api"
    default_message = "The NestJS internal API failed or timed out; it will be retried."


class RateLimited(TransientError):
    error_kind = "rate_limited"
    default_message = "The provider rate-limited the request; it will be retried after Retry-After."


class ProviderUnavailable(TransientError):
    error_kind = "provider_error"
    default_message = "The provider is overloaded or failing (5xx, 529, dropped connection)."


class StreamInterrupted(ProviderUnavailable):
    default_message = "The provider's stream broke off before the answer was complete."


class ProviderTimeout(TransientError):
    error_kind = "timeout"
    default_message = "The provider did not answer in time."


class StoreUnavailable(TransientError):
    error_kind = "internal"
    default_message = "The database is unreachable; the job will be retried."


class LeaseHeld(Exception):
    """Another live worker runs this job now: this delivery is a duplicate and does nothing.

    Not a `VamuError`: it ends no job. The running worker keeps its lease fresh; if it dies,
    the reaper hands the job out again once the lease runs out.
    """


# --- invalid_job messages in JSON's terms ---

# pydantic's error types that mean "wrong type", and the JSON type that was expected.
_EXPECTED_JSON_TYPE = {
    "string_type": "string",
    "int_type": "integer",
    "float_type": "number",
    "bool_type": "boolean",
    "none_required": "null",
    "list_type": "array",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
}


def json_type_name(value: object) -> str:
    """The JSON (Schema) name of a parsed JSON value's type: what NestJS sent, not Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "a value JSON cannot hold"  # only a Python caller can pass one


def _problem(err: ErrorDetails) -> str:
    """One field's problem, as a NestJS developer reading the JSON Schema would put it.

    pydantic speaks Python (`Input should be a valid integer`, `Value error, ...`, the raw
    regex); the type names and the input's own type come from JSON instead. The input itself
    is only inspected, never quoted: it may be long or private.
    """
    expected = _EXPECTED_JSON_TYPE.get(err["type"])
    if expected is not None:
        return f"expected {expected}, got {json_type_name(err.get('input'))}"
    ctx = err.get("ctx") or {}
    if err["type"] == "value_error" and "error" in ctx:
        return str(ctx["error"])  # our own validator's words, without "Value error, "
    if err["type"] == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return PATTERN_PROBLEMS.get(pattern, f"expected a string matching {pattern}")
    return err["msg"]
