"""`StaticUserContextClient`: the bundled sample users, used when no NestJS API is configured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vamu_tasks.domain import UserContext
from vamu_tasks.errors import UserNotFound


class StaticUserContextClient:
    def __init__(self, users: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        if users is None:
            from vamu_tasks.context.samples import SAMPLE_USERS

            users = SAMPLE_USERS
        self._users = {key: UserContext.model_validate(value) for key, value in users.items()}

    def get_context(self, user_id: str) -> UserContext:
        try:
            return self._users[user_id]
        except KeyError:
            known = ", ".join(sorted(self._users))
            raise UserNotFound(
                f"No sample user {user_id!r} (VAMU_API_BASE_URL is unset; known: {known})."
            ) from None

    def close(self) -> None:
        pass


class StaticEventsClient:
    """The bundled sample events, searched by text only (no geography), for the demo."""

    def __init__(self, events: Sequence[Mapping[str, Any]] | None = None) -> None:
        if events is None:
            from vamu_tasks.context.samples import SAMPLE_EVENTS

            events = SAMPLE_EVENTS
        self._events = [dict(e) for e in events]

    def search_events(self, **params: Any) -> list[dict[str, Any]]:
        words = str(params.get("q") or "").lower().split()
        limit = int(params.get("limit") or 10)
        found = [
            e
            for e in self._events
            if all(
                any(w in str(e.get(f, "")).lower() for f in ("title", "category", "venue", "city"))
                for w in words
            )
        ]
        return found[:limit]

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        return next((e for e in self._events if e.get("id") == event_id), None)
