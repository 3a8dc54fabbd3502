"""The fake NestJS internal API answers what docs/openapi/internal-api.json says, over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.support.openapi import load, problems, response_schema
from vamu_tasks.context.samples import SAMPLE_EVENTS, SAMPLE_USERS
from vamu_tasks.testing.fake_api import FakeNestApi

TOKEN = "test-api-token"
DOCUMENT = load()
USER_PATH = "/internal/users/{userId}/context"
SEARCH_PATH = "/internal/events/search"
EVENT_PATH = "/internal/events/{id}"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with FakeNestApi(token=TOKEN) as fake, httpx2.Client(
        base_url=fake.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5.0
    ) as http:
        yield http


def assert_documented(response: httpx2.Response, path: str) -> Any:
    """The answer's status is documented for `path`, and its JSON body fits that schema."""
    documented = DOCUMENT["paths"][path]["get"]["responses"]
    status = str(response.status_code)
    assert status in documented, f"{path} answered {status}, which the contract does not list"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert problems(DOCUMENT, response_schema(DOCUMENT, path, status), body) == []
    return body


@pytest.mark.parametrize("user_id", sorted(SAMPLE_USERS))
def test_each_sample_user_s_context_is_a_documented_200(client, user_id):
    body = assert_documented(client.get(f"/internal/users/{user_id}/context"), USER_PATH)

    assert body["userId"] == user_id


@pytest.mark.parametrize("event_id", [event["id"] for event in SAMPLE_EVENTS])
def test_each_sample_event_is_a_documented_200(client, event_id):
    body = assert_documented(client.get(f"/internal/events/{event_id}"), EVENT_PATH)

    assert body["id"] == event_id


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": "jazz"},
        {"q": "nothing matches this"},
        {"lat": 48.8686, "lng": 2.3612, "radiusKm": 5},
        {"from": "2026-12-10T00:00:00Z", "to": "2026-12-12T23:59:59+01:00", "limit": 3},
        {"limit": 50},
    ],
)
def test_searches_are_documented_200s(client, params):
    body = assert_documented(client.get(SEARCH_PATH, params=params), SEARCH_PATH)

    starts = [event["startsAt"] for event in body["events"]]
    assert starts == sorted(starts)  # earliest first, as the contract says


@pytest.mark.parametrize(
    ("path", "documented"),
    [("/internal/users/u-nobody/context", USER_PATH), ("/internal/events/evt-nope", EVENT_PATH)],
)
def test_unknown_users_and_events_are_documented_404s(client, path, documented):
    response = client.get(path)

    assert response.status_code == 404
    assert_documented(response, documented)


@pytest.mark.parametrize(
    "params",
    [{"limit": 51}, {"lat": 1}, {"radiusKm": 3}, {"from": "tomorrow"}, {"lat": "north", "lng": 1}],
)
def test_bad_search_parameters_are_documented_400s(client, params):
    response = client.get(SEARCH_PATH, params=params)

    assert response.status_code == 400
    assert_documented(response, SEARCH_PATH)


@pytest.mark.parametrize(
    ("path", "documented"),
    [("/internal/users/u-ada/context", USER_PATH), (SEARCH_PATH, SEARCH_PATH),
     ("/internal/events/evt-ldn-winter-jazz", EVENT_PATH)],
)
def test_a_wrong_token_is_a_documented_401_on_every_endpoint(client, path, documented):
    response = client.get(path, headers={"Authorization": "Bearer wrong"})

    assert response.status_code == 401
    assert_documented(response, documented)

