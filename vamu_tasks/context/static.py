"""`StaticUserContextClient`: the bundled sample users, used when no NestJS API is configured."""

from __future__ import annotations

from collections.abc import Mapping
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
