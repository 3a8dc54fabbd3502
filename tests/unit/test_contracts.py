"""The JSON Schemas NestJS builds against stay generated from the models."""

from __future__ import annotations

import json
from pathlib import Path

from vamu_tasks.contracts import job_schemas, stale
from vamu_tasks.features import FEATURES

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
