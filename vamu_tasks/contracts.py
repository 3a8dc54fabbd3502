"""JSON Schemas of the BullMQ job data, generated from the pydantic models for the NestJS team."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vamu_tasks.features import FEATURES

SCHEMA_DIR = Path("docs/schemas")


def job_schemas() -> dict[str, dict[str, Any]]:
    """`{job name: JSON Schema of its data}`, as NestJS must send it (camelCase)."""
    schemas = {}
    for spec in FEATURES.values():
        schema = spec.request_model.model_json_schema(by_alias=True, mode="validation")
        schema["$id"] = f"https://vamu.app/schemas/jobs/{spec.job_name}.json"
        schema["title"] = f"{spec.job_name} job data"
        schemas[spec.job_name] = schema
    return schemas


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in job_schemas().items():
        path = directory / f"{name}.json"
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Job names whose checked-in schema differs from the models (missing counts as stale)."""
    out = []
    for name, schema in job_schemas().items():
        path = directory / f"{name}.json"
        if not path.exists() or path.read_text(encoding="utf-8") != render(schema):
            out.append(name)
    return out
