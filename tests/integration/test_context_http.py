"""`HttpNestApiClient` against the fake NestJS internal API over real loopback HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from tests.conftest import API_TOKEN
from vamu_tasks.context.http import HttpNestApiClient
from vamu_tasks.context.samples import SAMPLE_USERS
from vamu_tasks.domain import GeoPoint, RecentEvent, UserContext
from vamu_tasks.errors import UpstreamApiError, UserNotFound
from vamu_tasks.testing.fake_api import FakeNestApi

RETRIES = 2
TIMEOUT_S = 0.5


def make_client(base_url: str, token: str = API_TOKEN) -> HttpNestApiClient:
    return HttpNestApiClient(
        base_url=base_url,
        token=SecretStr(token),
        timeout_s=TIMEOUT_S,
        retries=RETRIES,
        backoff_s=0.01,
    )


@pytest.fixture
def client(fake_api: FakeNestApi) -> Iterator[HttpNestApiClient]:
    http = make_client(fake_api.url)
    yield http
    http.close()


def context_paths(fake_api: FakeNestApi) -> list[str]:
    return [r.path for r in fake_api.requests]


def test_a_sample_users_context_comes_back_with_camel_case_fields_mapped(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    context = client.get_context("u-ada")

    sample = SAMPLE_USERS["u-ada"]
    assert isinstance(context, UserContext)
    assert context.user_id == "u-ada"
    assert context.display_name == sample["displayName"] == "Ada Okafor-Lloyd"
    assert context.locale == "en-GB"
    assert context.timezone == "Europe/London"
    assert context.city == "London"
    assert context.location == GeoPoint(lat=51.5362, lng=-0.1030)
    assert context.interests == sample["interests"]
    assert context.recent_events[0] == RecentEvent(
        id="evt-ldn-ezra-collective",
        title="Ezra Collective at the Roundhouse",
        category="music",
        starts_at=datetime(2026, 11, 14, 20, 0, tzinfo=UTC),
    )
    assert len(context.recent_events) == len(sample["recentEvents"])
    assert context_paths(fake_api) == ["/internal/users/u-ada/context"]


def test_the_request_carries_the_bearer_token(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    client.get_context("u-bruno")

    [request] = fake_api.requests
    assert request.method == "GET"
    assert request.headers["authorization"] == f"Bearer {API_TOKEN}"
    assert request.headers["accept"] == "application/json"


def test_an_unknown_user_is_user_not_found_after_a_single_request(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    with pytest.raises(UserNotFound) as caught:
        client.get_context("u-nobody")

    assert caught.value.error_kind == "user_not_found"
    assert not caught.value.retryable
    assert "u-nobody" in str(caught.value)
    assert len(fake_api.requests) == 1


def test_two_503s_then_success_returns_the_context_on_the_third_request(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    fake_api.fail_next(2, status=503)

    context = client.get_context("u-chioma")

    assert context.display_name == "Chioma Nwosu"
    assert len(fake_api.requests) == 3


def test_a_503_on_every_try_is_upstream_api_error_after_retries_plus_one_requests(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    fake_api.fail_next(10, status=503)

    with pytest.raises(UpstreamApiError) as caught:
        client.get_context("u-ada")

    assert caught.value.error_kind == "upstream_api"
    assert caught.value.retryable
    assert "503" in str(caught.value)
    assert len(fake_api.requests) == RETRIES + 1


def test_an_api_slower_than_the_timeout_on_every_try_is_upstream_api_error(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    fake_api.fail_next(RETRIES + 1, status=200, hang=TIMEOUT_S + 0.5)

    with pytest.raises(UpstreamApiError) as caught:
        client.get_context("u-ada")

    assert "timed out" in str(caught.value)
    assert len(fake_api.requests) == RETRIES + 1


def test_one_slow_answer_is_retried_and_the_next_one_succeeds(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    fake_api.fail_next(1, status=200, hang=TIMEOUT_S + 0.5)

    context = client.get_context("u-ada")

    assert context.user_id == "u-ada"
    assert len(fake_api.requests) == 2


def test_a_wrong_token_is_upstream_api_error_naming_the_setting_but_not_the_token(
    fake_api: FakeNestApi,
) -> None:
    wrong = "wrong-token-5f2c9a"
    client = make_client(fake_api.url, token=wrong)
    try:
        with pytest.raises(UpstreamApiError) as caught:
            client.get_context("u-ada")
    finally:
        client.close()

    message = str(caught.value)
    assert "VAMU_API_TOKEN" in message
    assert "401" in message
    assert wrong not in message
    assert API_TOKEN not in message
    assert len(fake_api.requests) == 1  # a refused token is not retried


def test_a_user_id_with_spaces_is_fetched_as_that_user(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    fake_api.users["ada lovelace"] = {**SAMPLE_USERS["u-ada"], "userId": "ada lovelace"}

    context = client.get_context("ada lovelace")

    assert context.user_id == "ada lovelace"
    assert context_paths(fake_api) == ["/internal/users/ada%20lovelace/context"]


class _RawPathRecorder(BaseHTTPRequestHandler):
    """Records the request target exactly as sent, independently of the fake API."""

    server: _RecordingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        body = json.dumps({**SAMPLE_USERS["u-ada"], "userId": "whoever"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _RawPathRecorder)


@pytest.fixture
def recorder() -> Iterator[_RecordingServer]:
    server = _RecordingServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_user_id_with_a_slash_and_spaces_is_sent_as_one_encoded_path_segment(
    recorder: _RecordingServer,
) -> None:
    host, port = recorder.server_address[:2]
    client = make_client(f"http://{host!s}:{port}")
    try:
        client.get_context("team/ada lovelace")
        client.get_context("../admin")
    finally:
        client.close()

    assert recorder.paths == [
        "/internal/users/team%2Fada%20lovelace/context",
        "/internal/users/..%2Fadmin/context",
    ]


def test_a_user_id_with_a_slash_round_trips_through_the_fake_api(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    fake_api.users["team/ada"] = {**SAMPLE_USERS["u-ada"], "userId": "team/ada"}

    context = client.get_context("team/ada")

    assert context.user_id == "team/ada"


# --- every answer is checked against the contract (docs/openapi/internal-api.json) -----------


def test_a_search_returns_the_events_exactly_as_the_api_sent_them(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    fake_api.events[0]["ticketUrl"] = "https://tickets.example/jazz"  # a field not in the model

    events = client.search_events(q="jazz", limit=5)

    assert events == [fake_api.events[0]]
    assert events[0]["ticketUrl"] == "https://tickets.example/jazz"
    assert events[0]["startsAt"] == "2026-12-04T19:30:00Z"  # not re-serialised


def test_the_search_sends_only_the_given_parameters_and_times_with_an_offset(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    client.search_events(q="jazz", lat=None, **{"from": "2026-12-01T18:00:00", "limit": 3})

    [request] = fake_api.requests
    assert request.query == {"q": "jazz", "from": "2026-12-01T18:00:00Z", "limit": "3"}


def test_a_search_result_with_an_event_missing_a_required_field_is_upstream_api_error(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    del fake_api.events[0]["venue"]

    with pytest.raises(UpstreamApiError) as caught:
        client.search_events(q="jazz")

    assert caught.value.error_kind == "upstream_api"
    assert "event search result that does not match the contract" in str(caught.value)
    assert "events.0.venue: Field required" in str(caught.value)
    assert len(fake_api.requests) == 1  # a broken body is not retried at once


def test_an_event_whose_start_has_no_offset_is_upstream_api_error(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    fake_api.events[0]["startsAt"] = "2026-12-04T19:30:00"

    with pytest.raises(UpstreamApiError) as caught:
        client.get_event(fake_api.events[0]["id"])

    assert "startsAt" in str(caught.value)


def test_an_event_comes_back_as_the_api_sent_it_and_an_unknown_one_as_none(
    client: HttpNestApiClient, fake_api: FakeNestApi
) -> None:
    assert client.get_event("evt-par-pompidou-late") == next(
        e for e in fake_api.events if e["id"] == "evt-par-pompidou-late")
    assert client.get_event("evt-nope") is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("locale", "en_GB"), ("timezone", "GMT +1"), ("recentEvents", [{"id": "e"}])],
)
def test_a_user_context_that_breaks_the_contract_is_upstream_api_error(
    client: HttpNestApiClient, fake_api: FakeNestApi, field: str, value: object
) -> None:
    fake_api.users["u-ada"] = {**SAMPLE_USERS["u-ada"], field: value}

    with pytest.raises(UpstreamApiError) as caught:
        client.get_context("u-ada")

    assert caught.value.error_kind == "upstream_api"
    assert f"first: {field}" in str(caught.value)
    assert "^" not in str(caught.value)  # the problem in words, not the pattern
