"""How long a provider asked us to wait, read from its response headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import anthropic
import httpx2
import openai
import pytest

from vamu_tasks.errors import RateLimited
from vamu_tasks.llm.anthropic import map_anthropic_error
from vamu_tasks.llm.openai import map_openai_error
from vamu_tasks.llm.retry_after import retry_after_seconds


def http_date(delta_s: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=delta_s), usegmt=True)


@pytest.mark.parametrize("headers", [None, {}, {"content-type": "application/json"}])
def test_no_retry_after_header_means_no_wait_was_asked(headers: dict[str, str] | None) -> None:
    assert retry_after_seconds(headers) is None


@pytest.mark.parametrize(("value", "seconds"), [("20", 20.0), ("0", 0.0), ("1.5", 1.5)])
def test_retry_after_in_seconds_is_read(value: str, seconds: float) -> None:
    assert retry_after_seconds({"retry-after": value}) == seconds


def test_header_names_are_matched_whatever_their_case() -> None:
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({"Retry-After-Ms": "250"}) == 0.25


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "60"}) == 1.5


def test_a_bad_retry_after_ms_falls_back_to_retry_after() -> None:
    assert retry_after_seconds({"retry-after-ms": "soon", "retry-after": "4"}) == 4.0


def test_an_http_date_in_the_future_gives_the_seconds_until_then() -> None:
    wait = retry_after_seconds({"retry-after": http_date(30)})

    assert wait is not None
    assert 27 <= wait <= 30


def test_an_http_date_in_the_past_means_no_wait() -> None:
    assert retry_after_seconds({"retry-after": http_date(-3600)}) == 0.0


@pytest.mark.parametrize("headers", [{"retry-after": "-5"}, {"retry-after-ms": "-100"}])
def test_a_negative_wait_is_read_as_no_wait(headers: dict[str, str]) -> None:
    assert retry_after_seconds(headers) == 0.0


def test_an_empty_retry_after_is_ignored() -> None:
    assert retry_after_seconds({"retry-after": ""}) is None


@pytest.mark.parametrize("value", ["soon", "Fri, 99 Foo 2026 25:61:00 GMT"])
def test_a_malformed_retry_after_is_ignored(value: str) -> None:
    assert retry_after_seconds({"retry-after": value}) is None


def rate_limit_errors(retry_after: str) -> list[tuple[Exception, object]]:
    headers = {"retry-after": retry_after}
    openai_response = httpx2.Response(
        429, headers=headers, request=httpx2.Request("POST", "https://api.openai.com/v1/responses")
    )
    anthropic_response = httpx2.Response(
        429,
        headers=headers,
        request=httpx2.Request("POST", "https://api.anthropic.com/v1/messages"),
    )
    return [
        (openai.RateLimitError("429", response=openai_response, body=None), map_openai_error),
        (
            anthropic.RateLimitError("429", response=anthropic_response, body=None),
            map_anthropic_error,
        ),
    ]


@pytest.mark.parametrize(("error", "mapper"), rate_limit_errors("12"), ids=["openai", "anthropic"])
def test_a_providers_429_carries_its_retry_after_into_rate_limited(error, mapper) -> None:
    mapped = mapper(error)

    assert isinstance(mapped, RateLimited)
    assert mapped.retry_after == 12.0


@pytest.mark.parametrize(
    ("error", "mapper"), rate_limit_errors("soon"), ids=["openai", "anthropic"]
)
def test_a_providers_429_with_a_malformed_retry_after_is_still_rate_limited(error, mapper) -> None:
    mapped = mapper(error)

    assert isinstance(mapped, RateLimited)
    assert mapped.retry_after is None
