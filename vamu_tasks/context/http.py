"""`HttpNestApiClient`: the NestJS internal API (users, events) over HTTP with a bearer token."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx2
from pydantic import BaseModel, SecretStr, ValidationError

from vamu_tasks.context.models import Event, EventSearchQuery, EventSearchResult
from vamu_tasks.domain import IANA_TIMEZONE_PATTERN, PATTERN_PROBLEMS, UserContext
from vamu_tasks.errors import UpstreamApiError, UserNotFound

RETRY_STATUSES = frozenset({502, 503, 504})

_M = TypeVar("_M", bound=BaseModel)

# What a value that misses one of the contract's patterns should have been (pydantic would quote
# the whole regex).
_PATTERN_PROBLEMS = {
    **PATTERN_PROBLEMS,
    IANA_TIMEZONE_PATTERN: "expected an IANA time zone name, such as Europe/London",
}


class HttpNestApiClient:
    """A few quick retries on 5xx and timeouts; what still fails becomes `UpstreamApiError`.

    The quick retries smooth over a NestJS pod restarting; longer outages are the task layer's
    to retry with backoff, so no worker thread sleeps for long here.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: SecretStr | None,
        timeout_s: float = 5.0,
        retries: int = 2,
        backoff_s: float = 0.2,
        trace_headers: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "vamu-tasks"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self._client = httpx2.Client(base_url=base_url, headers=headers, timeout=timeout_s)
        self._retries = retries
        self._backoff_s = backoff_s
        # With traces on: the current trace context, so NestJS's spans join the job's trace.
        self._trace_headers = trace_headers

    def close(self) -> None:
        self._client.close()

    def get_context(self, user_id: str) -> UserContext:
        response = self._get(f"/internal/users/{quote(user_id, safe='')}/context")
        if response.status_code == 404:
            raise UserNotFound(f"The NestJS API has no user {user_id!r}.")
        body = self._json(response, f"user context for {user_id!r}")
        return _validated(UserContext, body, "a user context")

    def search_events(self, **params: Any) -> list[dict[str, Any]]:
        """The matching events, each as the API sent it (checked against `Event` first)."""
        given = {key: value for key, value in params.items() if value is not None}
        # Only what was given goes out (the API applies its own defaults), times with an offset.
        query = EventSearchQuery.model_validate(given).model_dump(
            mode="json", by_alias=True, exclude_unset=True
        )
        response = self._get("/internal/events/search", params=query)
        body = self._json(response, "event search")
        _validated(EventSearchResult, body, "an event search result")
        # The agent shows the model the events as NestJS sent them: validation only guards.
        events: list[dict[str, Any]] = body["events"]
        return events

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        """The event as the API sent it (checked against `Event` first); None on a 404."""
        response = self._get(f"/internal/events/{quote(event_id, safe='')}")
        if response.status_code == 404:
            return None
        body = self._json(response, f"event {event_id!r}")
        _validated(Event, body, f"event {event_id!r}")
        event: dict[str, Any] = body
        return event

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx2.Response:
        last_problem = ""
        for attempt in range(self._retries + 1):
            if attempt:
                time.sleep(self._backoff_s * 2 ** (attempt - 1))
            try:
                headers = self._trace_headers() if self._trace_headers else None
                response = self._client.get(path, params=params, headers=headers)
            except httpx2.TimeoutException:
                last_problem = "timed out"
                continue
            except httpx2.TransportError as exc:
                last_problem = f"unreachable ({type(exc).__name__})"
                continue
            if response.status_code in RETRY_STATUSES or response.status_code >= 500:
                last_problem = f"answered {response.status_code}"
                continue
            return response
        raise UpstreamApiError(f"The NestJS API {last_problem} on GET {path}.")

    def _json(self, response: httpx2.Response, what: str) -> Any:
        if response.status_code in (401, 403):
            raise UpstreamApiError(
                f"The NestJS API refused our token ({response.status_code}) for {what}; "
                "check VAMU_API_TOKEN."
            )
        if response.status_code >= 400:
            raise UpstreamApiError(f"The NestJS API answered {response.status_code} for {what}.")
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamApiError(f"The NestJS API sent invalid JSON for {what}.") from exc


def _validated(model: type[_M], body: Any, what: str) -> _M:
    """`body` as `model`; a body that breaks the contract is an `UpstreamApiError`."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(body)"
        problem = _PATTERN_PROBLEMS.get(str(first.get("ctx", {}).get("pattern")), first["msg"])
        raise UpstreamApiError(
            f"The NestJS API sent {what} that does not match the contract "
            f"(docs/openapi/internal-api.json): {exc.error_count()} field error(s), "
            f"first: {where}: {problem}"
        ) from exc
