"""`HttpNestApiClient`: the NestJS internal API (users, events) over HTTP with a bearer token."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx2
from pydantic import SecretStr, ValidationError

from vamu_tasks.domain import UserContext
from vamu_tasks.errors import UpstreamApiError, UserNotFound

RETRY_STATUSES = frozenset({502, 503, 504})


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
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "vamu-tasks"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self._client = httpx2.Client(base_url=base_url, headers=headers, timeout=timeout_s)
        self._retries = retries
        self._backoff_s = backoff_s

    def close(self) -> None:
        self._client.close()

    def get_context(self, user_id: str) -> UserContext:
        response = self._get(f"/internal/users/{quote(user_id, safe='')}/context")
        if response.status_code == 404:
            raise UserNotFound(f"The NestJS API has no user {user_id!r}.")
        body = self._json(response, f"user context for {user_id!r}")
        try:
            return UserContext.model_validate(body)
        except ValidationError as exc:
            raise UpstreamApiError(
                f"The NestJS API sent a user context that does not match the contract: "
                f"{exc.error_count()} field error(s), first: {exc.errors()[0]['loc']}"
            ) from exc

    def search_events(self, **params: Any) -> list[dict[str, Any]]:
        query = {key: value for key, value in params.items() if value is not None}
        response = self._get("/internal/events/search", params=query)
        body = self._json(response, "event search")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            raise UpstreamApiError("The NestJS API's event search did not return {events: [...]}.")
        return [event for event in events if isinstance(event, dict)]

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        response = self._get(f"/internal/events/{quote(event_id, safe='')}")
        if response.status_code == 404:
            return None
        body = self._json(response, f"event {event_id!r}")
        if not isinstance(body, dict):
            raise UpstreamApiError(f"The NestJS API sent a malformed event {event_id!r}.")
        return body

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx2.Response:
        last_problem = ""
        for attempt in range(self._retries + 1):
            if attempt:
                time.sleep(self._backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.get(path, params=params)
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
