"""docs/openapi/internal-api.json stays generated from the models the API client validates with,
and the schema it publishes accepts and refuses what the client does."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from tests.support.openapi import ANNOTATIONS, KEYWORDS, keywords_used, load, problems
from vamu_tasks.agent.tools import SearchEventsArgs
from vamu_tasks.context import models, openapi
from vamu_tasks.context.models import Event, EventSearchQuery, EventSearchResult
from vamu_tasks.context.samples import SAMPLE_EVENTS, SAMPLE_USERS
from vamu_tasks.domain import UserContext

ROOT = Path(__file__).resolve().parents[2]
CONTROLLER = ROOT / "clients/node/examples/nestjs/src/internal-api.controller.ts"
DOCUMENT = load()


def component(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = DOCUMENT["components"]["schemas"][name]
    return schema


def test_the_checked_in_openapi_file_types_and_samples_match_the_models():
    assert openapi.stale(ROOT) == [], "run `vamu-tasks contracts openapi` and commit the files"


def test_a_changed_or_missing_generated_file_is_reported_stale(tmp_path):
    openapi.export(tmp_path)
    assert openapi.stale(tmp_path) == []

    (tmp_path / openapi.TYPES_FILE).write_text("// edited by hand\n")
    (tmp_path / openapi.OPENAPI_FILE).unlink()

    assert set(openapi.stale(tmp_path)) == {openapi.TYPES_FILE, openapi.OPENAPI_FILE}


def test_the_document_is_openapi_3_1_with_the_three_get_endpoints_behind_bearer_auth():
    assert DOCUMENT["openapi"] == "3.1.0"
    assert DOCUMENT["security"] == [{"bearerAuth": []}]
    assert DOCUMENT["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": "The shared secret vamu-tasks has as VAMU_API_TOKEN."}
    paths = DOCUMENT["paths"]
    assert set(paths) == {"/internal/users/{userId}/context", "/internal/events/search",
                          "/internal/events/{id}"}
    assert all(set(operations) == {"get"} for operations in paths.values())
    statuses = {path: set(ops["get"]["responses"]) for path, ops in paths.items()}
    assert statuses == {
        "/internal/users/{userId}/context": {"200", "401", "404", "5XX"},
        "/internal/events/search": {"200", "400", "401", "5XX"},
        "/internal/events/{id}": {"200", "401", "404", "5XX"},
    }


def test_the_search_parameters_are_the_query_model_s_fields_all_optional():
    parameters = DOCUMENT["paths"]["/internal/events/search"]["get"]["parameters"]

    assert [p["name"] for p in parameters] == ["q", "lat", "lng", "radiusKm", "from", "to",
                                               "limit"]
    assert all(p["in"] == "query" and p["required"] is False for p in parameters)
    by_name = {p["name"]: p["schema"] for p in parameters}
    assert by_name["from"] == by_name["to"] == {"format": "date-time", "type": "string"}
    assert by_name["limit"] == {"default": 10, "maximum": 50, "minimum": 1, "type": "integer"}
    assert by_name["radiusKm"] == {"default": 25.0, "exclusiveMinimum": 0, "type": "number"}


def test_required_optional_and_nullable_fields_are_as_the_client_reads_them():
    user, event, recent = component("UserContext"), component("Event"), component("RecentEvent")

    assert user["required"] == ["userId", "displayName"]
    assert user["properties"]["locale"]["default"] == "en-GB"
    assert user["properties"]["timezone"]["default"] == "UTC"
    assert {"type": "null"} in user["properties"]["city"]["anyOf"]
    assert {"type": "null"} in user["properties"]["location"]["anyOf"]
    assert "anyOf" not in user["properties"]["interests"]  # absent is fine, null is not
    assert event["required"] == ["id", "title", "category", "startsAt", "venue", "city", "lat",
                                 "lng"]
    assert {"type": "null"} in event["properties"]["priceCents"]["anyOf"]
    assert recent["required"] == ["id", "title", "category", "startsAt"]
    for schema in (event, recent):
        assert schema["properties"]["startsAt"]["format"] == "date-time"


def test_the_document_uses_only_keywords_the_test_validator_implements():
    used = keywords_used(list(DOCUMENT["components"]["schemas"].values()))

    assert used - KEYWORDS - ANNOTATIONS == set()


@pytest.mark.parametrize("user_id", sorted(SAMPLE_USERS))
def test_every_sample_user_validates_against_the_user_context_schema(user_id):
    assert problems(DOCUMENT, component("UserContext"), SAMPLE_USERS[user_id]) == []


def test_every_sample_event_validates_against_the_event_schema():
    assert problems(DOCUMENT, component("EventSearchResult"), {"events": SAMPLE_EVENTS}) == []


def _ada(**changes: Any) -> dict[str, Any]:
    user = copy.deepcopy(SAMPLE_USERS["u-ada"])
    user.update(changes)
    return user


def _jazz(**changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(SAMPLE_EVENTS[0])
    event.update(changes)
    return event


def _without(value: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != key}


ACCEPTED: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
    ("UserContext", UserContext, {"userId": "u-min", "displayName": "Min"}),
    ("UserContext", UserContext, _ada(city=None, location=None, timezone="Etc/GMT+5")),
    ("UserContext", UserContext, _ada(locale="zh-Hant-TW",
                                      timezone="America/Argentina/Buenos_Aires")),
    ("UserContext", UserContext, _ada(nickname="extra fields are ignored")),
    ("UserContext", UserContext, _ada(recentEvents=[{"id": "e", "title": "T", "category": "c",
                                                     "startsAt": "2026-11-14T20:00:00+01:00"}])),
    ("Event", Event, _jazz(priceCents=None)),
    ("Event", Event, _without(_jazz(), "priceCents")),
    ("Event", Event, _jazz(startsAt="2026-12-04T19:30:00.250-03:00", url="https://x.example")),
]

REFUSED: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
    ("UserContext", UserContext, _without(_ada(), "displayName")),
    ("UserContext", UserContext, _ada(userId="")),
    ("UserContext", UserContext, _ada(locale="en_GB")),
    ("UserContext", UserContext, _ada(locale="not a locale!!")),
    ("UserContext", UserContext, _ada(timezone="Europe London")),
    ("UserContext", UserContext, _ada(timezone="+01:00")),
    ("UserContext", UserContext, _ada(interests=None)),
    ("UserContext", UserContext, _ada(location={"lat": 91, "lng": 0})),
    ("UserContext", UserContext, _ada(recentEvents=[{"id": "e", "title": "T", "category": "c",
                                                     "startsAt": "2026-11-14T20:00:00"}])),
    ("Event", Event, _without(_jazz(), "venue")),
    ("Event", Event, _jazz(startsAt="2026-12-04 19:30")),
    ("Event", Event, _jazz(startsAt="2026-12-04T19:30:00")),  # no offset
    ("Event", Event, _jazz(lat=-91.0)),
    ("Event", Event, _jazz(priceCents=-1)),
    ("Event", Event, _jazz(city=None)),
]


@pytest.mark.parametrize(("name", "model", "body"), ACCEPTED)
def test_bodies_the_client_accepts_are_valid_under_the_published_schema(name, model, body):
    model.model_validate(body)

    assert problems(DOCUMENT, component(name), body) == []


@pytest.mark.parametrize(("name", "model", "body"), REFUSED)
def test_bodies_the_client_refuses_are_invalid_under_the_published_schema(name, model, body):
    with pytest.raises(ValidationError):
        model.model_validate(body)

    assert problems(DOCUMENT, component(name), body) != []


def test_a_search_result_with_one_broken_event_is_refused_whole():
    body = {"events": [SAMPLE_EVENTS[0], _without(SAMPLE_EVENTS[1], "startsAt")]}

    with pytest.raises(ValidationError):
        EventSearchResult.model_validate(body)
    assert problems(DOCUMENT, component("EventSearchResult"), body) == [
        "$.events[1]: startsAt is required"]


def test_every_search_the_agent_s_tool_can_ask_for_is_within_the_published_parameters():
    widest = SearchEventsArgs.model_validate(
        {"q": "x" * 200, "lat": -90, "lng": 180, "radiusKm": 200, "limit": 20,
         "from": "2026-12-01T00:00:00", "to": "2026-12-31T23:59:59+01:00"})
    narrowest = SearchEventsArgs.model_validate({"lat": 90, "lng": -180, "radiusKm": 0.001,
                                                 "limit": 1})

    for args in (widest, narrowest):
        sent = EventSearchQuery.model_validate(
            args.model_dump(by_alias=True, exclude_none=True, mode="json")
        ).model_dump(by_alias=True, exclude_unset=True, mode="json")
        parameters = DOCUMENT["paths"]["/internal/events/search"]["get"]["parameters"]
        for parameter in parameters:
            if parameter["name"] in sent:
                assert problems(DOCUMENT, parameter["schema"], sent[parameter["name"]]) == [], (
                    parameter["name"])
    assert EventSearchQuery.model_validate({"from": "2026-12-01T00:00:00"}).from_ == datetime(
        2026, 12, 1, tzinfo=UTC)


def test_the_example_controller_uses_the_search_defaults_of_the_contract():
    source = CONTROLLER.read_text(encoding="utf-8")

    def constant(name: str) -> float:
        match = re.search(rf"^const {name} = ([0-9.]+);$", source, re.MULTILINE)
        assert match, f"{name} not found in {CONTROLLER.name}"
        return float(match[1])

    assert constant("DEFAULT_LIMIT") == models.DEFAULT_SEARCH_LIMIT
    assert constant("MAX_LIMIT") == models.MAX_SEARCH_LIMIT
    assert constant("DEFAULT_RADIUS_KM") == models.DEFAULT_RADIUS_KM
    assert "from './internal-api.types.js'" in source
    assert "from './internal-api.samples.js'" in source
