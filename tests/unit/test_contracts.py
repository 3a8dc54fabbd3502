"""The JSON Schemas NestJS builds against stay generated from the models, and mean the same."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vamu_tasks.bridge.contract import Refused
from vamu_tasks.bridge.service import accept_job
from vamu_tasks.cli import main
from vamu_tasks.contracts import contracts_schema, export, job_schemas, stale
from vamu_tasks.domain import DATE_TIME_PATTERN, LOCALE_PATTERN, NO_NUL_PATTERN
from vamu_tasks.events import EVENTS
from vamu_tasks.features import FEATURES, FeatureSpec
from vamu_tasks.store.models import AiJob
from vamu_tasks.testing.memory import InMemoryJobStore

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_the_checked_in_job_schemas_match_the_pydantic_models():
    assert stale(SCHEMAS) == [], "run `vamu-tasks contracts export` and commit docs/schemas"


def test_every_bullmq_job_name_has_a_camel_case_schema():
    schemas = job_schemas()

    assert set(schemas) == {spec.job_name for spec in FEATURES.values()}
    inspiration = schemas["inspiration.generate"]
    assert inspiration["required"] == ["userId"]
    assert {"userId", "count", "hint", "locale", "requestId", "traceparent"} <= set(
        inspiration["properties"])
    assert json.loads(
        (SCHEMAS / "inspiration.generate.json").read_text())["additionalProperties"] is False


# --- the bridge and the published schemas agree ----------------------------------------------
#
# `jsonschema` is not a dependency, so `schema_accepts` below implements the few keywords the
# job schemas use. The first test pins that set: a model change that brings in another
# keyword fails here, rather than being silently ignored by the check.

KEYWORDS = {"$id", "title", "description", "type", "properties", "required",
            "additionalProperties", "anyOf", "default", "minLength", "maxLength", "pattern",
            "minimum", "maximum",
            # An annotation (JSON Schema's default for `format`): `deliverBy` has a pattern too.
            "format"}


def keywords_in(schema: Mapping[str, Any]) -> set[str]:
    found = set(schema)
    for sub in schema.get("properties", {}).values():
        found |= keywords_in(sub)
    for sub in schema.get("anyOf", []):
        found |= keywords_in(sub)
    return found


def json_type_is(value: object, kind: str) -> bool:
    if kind == "integer":  # JSON Schema: any number without a fractional part
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    types = {"string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}
    return isinstance(value, types[kind])


def schema_accepts(schema: Mapping[str, Any], value: object) -> bool:
    """JSON Schema 2020-12 validation, for the keywords in KEYWORDS only."""
    if "anyOf" in schema and not any(schema_accepts(s, value) for s in schema["anyOf"]):
        return False
    if "type" in schema and not json_type_is(value, schema["type"]):
        return False
    if isinstance(value, str):
        return string_accepted(schema, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return schema.get("minimum", -math.inf) <= value <= schema.get("maximum", math.inf)
    if isinstance(value, dict):
        return object_accepted(schema, value)
    return True


def string_accepted(schema: Mapping[str, Any], value: str) -> bool:
    if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf):
        return False
    # ECMA-262's `$` is the end of the text; Python's also matches before a final newline.
    pattern = schema.get("pattern")
    return pattern is None or re.search(re.sub(r"\$$", r"\\Z", pattern), value) is not None


def object_accepted(schema: Mapping[str, Any], value: dict[str, object]) -> bool:
    if any(key not in value for key in schema.get("required", [])):
        return False
    properties = schema.get("properties", {})
    for key, item in value.items():
        if key in properties:
            if not schema_accepts(properties[key], item):
                return False
        elif schema.get("additionalProperties", True) is False:
            return False
    return True


class NoQuota:
    limit = 0

    def take(self, user_id: str) -> bool:
        return True

    def give_back(self, user_id: str) -> None:
        pass


class NullSender:
    def send(self, spec: FeatureSpec, job_id: uuid.UUID, headers: Any = None, **_: Any) -> str:
        return "task"


def bridge_accepts(job_name: str, data: object) -> bool:
    """What the bridge does with this job data (its real code path, on an in-memory store)."""
    try:
        accept_job(InMemoryJobStore(), NullSender(), NoQuota(), name=job_name, data=data,
                   queue="vamu-ai", bullmq_job_id="1")
    except Refused:
        return False
    return True


VALID = {
    "inspiration.generate": {"userId": "u-ada"},
    "chatbot.reply": {"userId": "u-ada", "conversationId": "c-1", "message": "Jazz tonight?"},
    "agent.run": {"userId": "u-ada", "goal": "jazz this weekend"},
}
GOOD_LOCALES = ["en-GB", "pt-BR", "zh-Hant-TW", "es-419", "de", "DE-at", "sr-Latn-RS",
                "de-CH-1996", "en-US-x-twain", "zh-yue-HK"]
BAD_LOCALES = ["not a locale!!", "en_GB", "", "e", "en-", "-en", "en--GB", "en-GB-", "123",
               "en GB", "en-GB\n", "en-\u0000", "x" * 36]
# Values of every JSON type, and numbers that only a careless coercion would take.
OTHER_TYPES: list[object] = [None, True, False, 0, 3, 3.0, 2.5, -1, "3", "", [], ["a"], {},
                             {"a": 1}]


def value_samples(prop: Mapping[str, Any]) -> list[object]:
    """Values around every limit of one property, plus one of every other JSON type."""
    string = next((s for s in [prop, *prop.get("anyOf", [])] if s.get("type") == "string"), None)
    samples = list(OTHER_TYPES)
    if string is not None:
        longest = string.get("maxLength", 50)
        samples += ["a", "a" * longest, "a" * (longest + 1), "a\u0000b", "\u0000", "é" * longest,
                    "line\nbreak", "😀" * min(longest, 10)]
    if prop.get("type") == "integer":
        samples += [prop["minimum"] - 1, prop["minimum"], prop["maximum"], prop["maximum"] + 1,
                    float(prop["maximum"]), 10**30, str(prop["minimum"])]
    return samples


def sample_payloads() -> list[tuple[str, object]]:
    payloads: list[tuple[str, object]] = []
    for name, schema in job_schemas().items():
        valid = VALID[name]
        payloads.append((name, valid))
        for key, prop in schema["properties"].items():
            payloads += [(name, {**valid, key: v}) for v in value_samples(prop)]
        for key in schema["required"]:
            payloads.append((name, {k: v for k, v in valid.items() if k != key}))
        payloads += [(name, {**valid, "extra": 1}), (name, {**valid, "user_id": "u-ada"}),
                     (name, {"user_id": "u-ada", **{k: v for k, v in valid.items()
                                                    if k != "userId"}})]
        payloads += [(name, not_an_object) for not_an_object in [None, "u-ada", 3, ["u-ada"]]]
    payloads += [("inspiration.generate", {"userId": "u-ada", "locale": locale})
                 for locale in GOOD_LOCALES + BAD_LOCALES]
    return payloads


def test_the_schemas_use_only_the_keywords_the_agreement_check_understands():
    for name, schema in job_schemas().items():
        assert keywords_in(schema) <= KEYWORDS, name


def test_the_bridge_accepts_exactly_the_job_data_its_published_schema_accepts():
    schemas = job_schemas()
    payloads = sample_payloads()

    disagreements = [(name, data, schema_accepts(schemas[name], data))
                     for name, data in payloads
                     if schema_accepts(schemas[name], data) != bridge_accepts(name, data)]

    assert disagreements == []
    # Both answers occur often, so the check is not vacuous.
    accepted = sum(bridge_accepts(name, data) for name, data in payloads)
    assert accepted > 50 and len(payloads) - accepted > 50


def test_every_text_field_of_every_job_refuses_nul_in_the_schema_too():
    # PostgreSQL cannot store U+0000: a text field without a NUL-free pattern would let it
    # through to the insert, where it becomes a database error that BullMQ retries.
    for name, schema in job_schemas().items():
        for key, prop in schema["properties"].items():
            for sub in [prop, *prop.get("anyOf", [])]:
                if sub.get("type") == "string":
                    patterns = (NO_NUL_PATTERN, LOCALE_PATTERN, DATE_TIME_PATTERN)
                    assert sub.get("pattern") in patterns, (name, key)
                    assert not schema_accepts(sub, "a\u0000b"), (name, key)


def test_the_locale_pattern_is_in_the_published_schema():
    locale = json.loads((SCHEMAS / "inspiration.generate.json").read_text())["properties"][
        "locale"]

    assert {"type": "string", "maxLength": 35, "pattern": LOCALE_PATTERN} in locale["anyOf"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (["u-ada"], "invalid_job: job data must be a JSON object, got array"),
        ("u-ada", "invalid_job: job data must be a JSON object, got string"),
        (None, "invalid_job: job data must be a JSON object, got null"),
        ({"userId": "u-ada", "count": "3"}, "invalid_job: count: expected integer, got string"),
        ({"userId": ["u-ada"]}, "invalid_job: userId: expected string, got array"),
    ],
)
def test_the_bridge_refuses_data_of_the_wrong_json_type_in_json_terms(data: object, reason: str):
    with pytest.raises(Refused) as caught:
        accept_job(InMemoryJobStore(), NullSender(), NoQuota(), name="inspiration.generate",
                   data=data, queue="vamu-ai", bullmq_job_id="1")

    assert caught.value.failed_reason == reason


# --- contracts.json: every type the TypeScript package is generated from ----------------------

CONTRACT_TYPES = {
    # job data and results
    "InspirationGenerateData", "ChatbotReplyData", "AgentRunData",
    "InspirationResult", "Idea", "ChatReplyResult", "AgentResult",
    "Proposal", "ProposeRsvpProposal", "ProposeCreateEventProposal", "ProposeMessageProposal",
    # events and the webhook
    "InspirationReadyEvent", "AiJobFailedEvent", "ChatChunkEvent", "ChatRestartEvent",
    "ChatReplyReadyEvent", "AgentStepEvent", "AgentFinishedEvent", "WebhookBody",
    # kinds, BullMQ return values, the row
    "ErrorKind", "BridgeRefusalKind", "FailedReasonKind", "JobStatus", "Feature",
    "AcceptedJob", "SyncJobResult", "AiJobRow",
}


def refs_in(value: object) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if isinstance(value.get("$ref"), str) else set()
        return found.union(*(refs_in(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(refs_in(item) for item in value))
    return set()


def test_contracts_json_names_every_type_the_typescript_side_builds_on():
    doc = contracts_schema()
    defs = doc["$defs"]

    assert CONTRACT_TYPES <= set(defs)
    # The rest are the argument types of the proposals, referenced from them.
    assert set(defs) - CONTRACT_TYPES == {
        "ProposeRsvpArgs", "ProposeCreateEventArgs", "ProposeMessageArgs"}
    assert all(schema["title"] == name for name, schema in defs.items())
    assert json.loads((SCHEMAS / "contracts.json").read_text()) == doc


def test_every_reference_in_contracts_json_resolves_to_one_of_its_types():
    doc = contracts_schema()
    refs = refs_in(doc)

    assert all(ref.startswith("#/$defs/") for ref in refs)
    assert {ref.removeprefix("#/$defs/") for ref in refs} <= set(doc["$defs"])


def test_the_job_and_event_maps_point_at_the_data_result_and_payload_types():
    doc = contracts_schema()
    defs = doc["$defs"]

    assert doc["x-vamu-jobs"] == {
        "inspiration.generate": {"data": "InspirationGenerateData", "result": "InspirationResult"},
        "chatbot.reply": {"data": "ChatbotReplyData", "result": "ChatReplyResult"},
        "agent.run": {"data": "AgentRunData", "result": "AgentResult"},
    }
    assert doc["x-vamu-events"] == {event: model.__name__ for event, model in EVENTS.items()}
    for job_name, types in doc["x-vamu-jobs"].items():
        published = job_schemas()[job_name]
        assert defs[types["data"]]["required"] == published["required"]
        assert set(defs[types["data"]]["properties"]) == set(published["properties"])


def test_the_kinds_are_named_wherever_they_occur():
    defs = contracts_schema()["$defs"]

    assert defs["AiJobFailedEvent"]["properties"]["errorKind"] == {"$ref": "#/$defs/ErrorKind"}
    assert defs["AiJobRow"]["properties"]["status"] == {"$ref": "#/$defs/JobStatus"}
    assert defs["AgentResult"]["properties"]["proposals"]["items"] == {
        "$ref": "#/$defs/Proposal"}
    assert set(defs["FailedReasonKind"]["enum"]) == (
        set(defs["ErrorKind"]["enum"]) | set(defs["BridgeRefusalKind"]["enum"]) | {"sync_timeout"})


def test_the_row_type_has_every_ai_jobs_column_with_its_nullability():
    row = contracts_schema()["$defs"]["AiJobRow"]

    def nullable(prop: dict[str, Any]) -> bool:
        return {"type": "null"} in prop.get("anyOf", [])

    columns = {column.name: column.nullable for column in AiJob.__table__.columns}
    assert set(row["properties"]) == set(columns)
    assert set(row["required"]) == set(columns)
    assert {name: nullable(prop) for name, prop in row["properties"].items()} == columns


def test_the_export_check_fails_when_contracts_json_is_stale(tmp_path: Path):
    export(tmp_path)
    assert stale(tmp_path) == []
    contracts = tmp_path / "contracts.json"
    contracts.write_text(contracts.read_text().replace('"AcceptedJob"', '"Accepted"', 1))

    result = CliRunner().invoke(main, ["contracts", "export", "--check", "--dir", str(tmp_path)])

    assert stale(tmp_path) == ["contracts.json"]
    assert result.exit_code == 1
    assert "out of date: contracts.json" in result.output
