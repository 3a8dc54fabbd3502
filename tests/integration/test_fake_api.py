"""The fake NestJS internal API answers per the contract over real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx2
import pytest

from vamu_tasks.context.samples import SAMPLE_EVENTS, SAMPLE_USERS
from vamu_tasks.testing.fake_api import FakeNestApi, generated_users

TOKEN = "test-api-token"
USER_KEYS = {"userId", "displayName", "locale", "timezone", "interests", "recentEvents"}
EVENT_KEYS = {"id", "title", "category", "startsAt", "venue", "city", "lat", "lng"}


@pytest.fixture(scope="module")
def api() -> Iterator[FakeNestApi]:
    with FakeNestApi() as fake:
        yield fake


@pytest.fixture
def fake(api: FakeNestApi) -> Iterator[FakeNestApi]:
    api.reset()
    yield api
    api.reset()


@pytest.fixture
def client(fake: FakeNestApi) -> Iterator[httpx2.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx2.Client(base_url=fake.url, headers=headers, timeout=5.0) as http:
        yield http


def search(client: httpx2.Client, **params: str | float) -> list[str]:
    response = client.get("/internal/events/search", params=params)
    assert response.status_code == 200, response.text
    return [event["id"] for event in response.json()["events"]]


def test_samples_follow_the_contract_shapes() -> None:
    assert len(SAMPLE_USERS) == 4
    assert {u["locale"] for u in SAMPLE_USERS.values()} == {"en-GB", "pt-BR", "fr-FR", "en-US"}
    for user_id, user in SAMPLE_USERS.items():
        assert user["userId"] == user_id
        assert USER_KEYS <= user.keys() <= USER_KEYS | {"city", "location"}
        for recent in user["recentEvents"]:
            assert set(recent) == {"id", "title", "category", "startsAt"}
    for event in SAMPLE_EVENTS:
        assert EVENT_KEYS <= event.keys() <= EVENT_KEYS | {"priceCents"}
        assert event["startsAt"].startswith("2026-12-") and event["startsAt"].endswith("Z")
    assert len({event["id"] for event in SAMPLE_EVENTS}) == len(SAMPLE_EVENTS)


def test_user_context_returns_the_user_as_json(client: httpx2.Client) -> None:
    response = client.get("/internal/users/u-bruno/context")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == SAMPLE_USERS["u-bruno"]


def test_users_added_by_a_test_are_served(fake: FakeNestApi, client: httpx2.Client) -> None:
    fake.users["u-new"] = {**SAMPLE_USERS["u-dev"], "userId": "u-new", "interests": []}

    assert client.get("/internal/users/u-new/context").json()["userId"] == "u-new"


def test_unknown_user_is_a_nestjs_404(client: httpx2.Client) -> None:
    response = client.get("/internal/users/u-nobody/context")

    assert response.status_code == 404
    assert response.json() == {"statusCode": 404, "message": "User not found", "error": "Not Found"}


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}"])
def test_a_missing_or_wrong_token_is_a_nestjs_401(
    fake: FakeNestApi, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx2.Client(base_url=fake.url, headers=headers) as anonymous:
        response = anonymous.get("/internal/users/u-ada/context")

    assert response.status_code == 401
    assert response.json() == {"statusCode": 401, "message": "Unauthorized"}


def test_event_by_id_and_unknown_event(client: httpx2.Client) -> None:
    found = client.get("/internal/events/evt-par-pompidou-late")
    missing = client.get("/internal/events/evt-nope")

    assert found.json() == next(e for e in SAMPLE_EVENTS if e["id"] == "evt-par-pompidou-late")
    assert missing.status_code == 404
    assert missing.json()["message"] == "Event not found"


def test_search_without_filters_returns_ten_events_in_start_order(client: httpx2.Client) -> None:
    response = client.get("/internal/events/search")
    events = response.json()["events"]

    assert len(events) == 10
    assert [e["startsAt"] for e in events] == sorted(e["startsAt"] for e in SAMPLE_EVENTS)[:10]
    assert all(EVENT_KEYS <= e.keys() for e in events)


def test_search_matches_q_case_insensitively_in_title_category_venue_and_city(
    client: httpx2.Client,
) -> None:
    assert search(client, q="RAMEN") == ["evt-nyc-chelsea-ramen"]
    assert search(client, q="comedy") == ["evt-nyc-standup-showcase"]
    assert search(client, q="barbican") == ["evt-ldn-barbican-code"]
    assert set(search(client, q="são paulo")) == {
        "evt-sp-samba-ibirapuera",
        "evt-sp-mercadao-food-tour",
        "evt-sp-pinacoteca-street-art",
    }


def test_search_keeps_events_within_the_radius(client: httpx2.Client) -> None:
    near_republique = {"lat": 48.8686, "lng": 2.3612}

    assert set(search(client, **near_republique, radiusKm=1.5)) == {"evt-par-pompidou-late"}
    assert len(search(client, **near_republique, radiusKm=5)) == 3
    assert search(client, **near_republique) == search(client, **near_republique, radiusKm=25)


def test_search_filters_on_start_time_and_limits(client: httpx2.Client) -> None:
    found = search(client, **{"from": "2026-12-10T00:00:00Z", "to": "2026-12-12T23:59:59Z"})
    starts = [e["startsAt"] for e in SAMPLE_EVENTS if e["id"] in found]

    assert len(found) == 4
    assert all("2026-12-10" <= s[:10] <= "2026-12-12" for s in starts)
    assert len(search(client, limit=3)) == 3
    assert len(search(client, limit=50)) == len(SAMPLE_EVENTS)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lat": "north", "lng": "2.3"}, "lat must be a number conforming to the specified"),
        ({"limit": "51"}, "limit must not be greater than 50"),
        ({"limit": "2.5"}, "limit must be an integer number"),
        ({"lat": "48.8"}, "lat and lng must be given together"),
        ({"lat": "1", "lng": "1", "radiusKm": "0"}, "radiusKm must be a positive number"),
        ({"from": "next tuesday"}, "from must be a valid ISO 8601 date string"),
    ],
)
def test_bad_search_parameters_are_a_nestjs_400(
    client: httpx2.Client, params: dict[str, str], message: str
) -> None:
    response = client.get("/internal/events/search", params=params)
    body = response.json()

    assert response.status_code == 400
    assert body["statusCode"] == 400 and body["error"] == "Bad Request"
    assert any(m.startswith(message) for m in body["message"]), body


def test_fail_next_answers_the_status_for_count_requests_under_the_prefix(
    fake: FakeNestApi, client: httpx2.Client
) -> None:
    fake.fail_next(2, status=503, path_prefix="/internal/users/")

    assert client.get("/internal/events/evt-ldn-winter-jazz").status_code == 200
    first = client.get("/internal/users/u-ada/context")
    second = client.get("/internal/users/u-ada/context")
    third = client.get("/internal/users/u-ada/context")

    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.json() == {"statusCode": 503, "message": "Service Unavailable"}


def test_fail_next_with_hang_makes_the_client_time_out_then_recovers(
    fake: FakeNestApi, client: httpx2.Client
) -> None:
    fake.fail_next(hang=2.0, status=200)

    with pytest.raises(httpx2.ReadTimeout):
        client.get("/internal/users/u-ada/context", timeout=0.2)
    assert client.get("/internal/users/u-ada/context").status_code == 200


def test_requests_are_recorded_with_query_and_lower_case_headers(
    fake: FakeNestApi, client: httpx2.Client
) -> None:
    client.get("/internal/events/search", params={"q": "jazz", "limit": 2})

    (recorded,) = fake.requests
    assert (recorded.method, recorded.path) == ("GET", "/internal/events/search")
    assert recorded.query == {"q": "jazz", "limit": "2"}
    assert recorded.headers["authorization"] == f"Bearer {TOKEN}"


def test_latency_delays_every_answer() -> None:
    with FakeNestApi(latency=0.2) as slow, httpx2.Client(base_url=slow.url) as http:
        started = time.monotonic()
        http.get("/internal/users/u-ada/context")
        assert time.monotonic() - started >= 0.2


def test_the_module_serves_standalone_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "vamu_tasks.testing.fake_api", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["url"]
        with httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            assert http.get("/internal/users/u-chioma/context").json()["locale"] == "fr-FR"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_generated_users_are_numbered_and_shaped_as_the_sample_users_in_turn() -> None:
    users = generated_users(5)

    assert list(users) == [f"u-bench-0000{n}" for n in range(1, 6)]
    shapes = list(SAMPLE_USERS.values())
    for n, (user_id, user) in enumerate(users.items()):
        shape = shapes[n % len(shapes)]
        assert user["userId"] == user_id
        assert user.keys() == shape.keys()
        assert user["locale"] == shape["locale"]
        assert user["interests"] == shape["interests"]
    assert users["u-bench-00001"]["displayName"] != users["u-bench-00005"]["displayName"]
    assert generated_users(0) == {}


def test_the_module_with_users_serves_the_generated_users_and_the_samples() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "vamu_tasks.testing.fake_api", "--port", "0", "--users", "3000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["url"]
        with httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            last = http.get("/internal/users/u-bench-03000/context")
            beyond = http.get("/internal/users/u-bench-03001/context")
            sample = http.get("/internal/users/u-ada/context")
        assert last.status_code == 200
        assert last.json()["userId"] == "u-bench-03000"
        assert USER_KEYS <= last.json().keys()
        assert beyond.status_code == 404
        assert sample.json() == SAMPLE_USERS["u-ada"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_the_module_refuses_a_negative_user_count() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vamu_tasks.testing.fake_api", "--users", "-1"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 2
    assert "--users must not be negative" in done.stderr
