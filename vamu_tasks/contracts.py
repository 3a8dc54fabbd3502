"""JSON Schemas of the contracts with NestJS, generated from the pydantic models.

Two kinds of file in `docs/schemas`: `<job name>.json`, each job's data on its own, and
`contracts.json`, every type NestJS builds against in one document (job data and results,
event payloads, the webhook body, failure kinds, the BullMQ return values, the `ai_jobs` row),
which the TypeScript types of `clients/node` are generated from.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema

from vamu_tasks.agent.schemas import Proposal
from vamu_tasks.bridge.contract import (
    AcceptedJob,
    BridgeRefusalKind,
    FailedReasonKind,
    SyncJobResult,
)
from vamu_tasks.domain import Feature, JobSource, JobStatus
from vamu_tasks.errors import ErrorKind
from vamu_tasks.events import EVENTS, WebhookBody
from vamu_tasks.features import FEATURES

SCHEMA_DIR = Path("docs/schemas")
CONTRACTS_FILE = "contracts.json"


def job_schemas() -> dict[str, dict[str, Any]]:
    """`{job name: JSON Schema of its data}`, as NestJS must send it (camelCase)."""
    schemas = {}
    for spec in FEATURES.values():
        schema = spec.request_model.model_json_schema(by_alias=True, mode="validation")
        schema["$id"] = f"https://vamu.app/schemas/jobs/{spec.job_name}.json"
        schema["title"] = f"{spec.job_name} job data"
        schemas[spec.job_name] = schema
    return schemas


def data_type_name(job_name: str) -> str:
    """The name of a job's data type: `inspiration.generate` → `InspirationGenerateData`."""
    return "".join(part.capitalize() for part in job_name.split(".")) + "Data"


def _one_of_types(*names: str, nullable: bool = False) -> WithJsonSchema:
    """The schema of a value of one of these `contracts.json` types (or null)."""
    choices: list[dict[str, str]] = [{"$ref": f"#/$defs/{name}"} for name in names]
    return WithJsonSchema({"anyOf": [*choices, {"type": "null"}] if nullable else choices})


class AiJobRow(BaseModel):
    """One `ai_jobs` row as NestJS reads it: every column, snake_case, null where the column is
    nullable. JSON types: uuids and timestamps are strings, `cost_usd` (numeric) a decimal
    string, `request` and `result` the job's data and result."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    feature: Feature
    user_id: str
    status: JobStatus
    request: Annotated[
        dict[str, Any], _one_of_types(*(data_type_name(s.job_name) for s in FEATURES.values()))
    ]
    result: Annotated[
        dict[str, Any] | None,
        _one_of_types(*(s.result_model.__name__ for s in FEATURES.values()), nullable=True),
    ]
    error_kind: ErrorKind | None
    error_message: str | None
    attempts: int
    source: JobSource
    source_ref: str | None
    provider: str | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    cost_usd: Decimal | None = Field(description="numeric(12,6), as a decimal string.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rerun_of: uuid.UUID | None
    notify: bool
    rerun_reason: str | None
    requested_by: str | None
    lease_owner: str | None
    lease_until: datetime | None
    retry_at: datetime | None
    deliver_by: datetime | None
    batch_id: uuid.UUID | None


def contract_types() -> Iterator[tuple[str, JsonSchemaMode, Any]]:
    """Every type of `contracts.json`: its name there, and the schema mode that fits it (what
    NestJS sends is validated, everything else is what vamu-tasks serialises)."""
    for spec in FEATURES.values():
        yield data_type_name(spec.job_name), "validation", spec.request_model
        yield spec.result_model.__name__, "serialization", spec.result_model
    yield "Proposal", "serialization", Proposal
    for model in EVENTS.values():
        yield model.__name__, "serialization", model
    yield "WebhookBody", "serialization", WebhookBody
    yield "ErrorKind", "serialization", ErrorKind
    yield "BridgeRefusalKind", "serialization", BridgeRefusalKind
    yield "FailedReasonKind", "serialization", FailedReasonKind
    yield "JobStatus", "serialization", JobStatus
    yield "Feature", "serialization", Feature
    yield "AcceptedJob", "serialization", AcceptedJob
    yield "SyncJobResult", "serialization", SyncJobResult
    yield "AiJobRow", "serialization", AiJobRow


class _ContractSchema(GenerateJsonSchema):
    """No per-field titles (generators turn them into aliases such as `Userid`), and no
    `default: null` on the fields that are left out instead of sent as null."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if "default" in json_schema and json_schema["default"] is None:
            del json_schema["default"]
        return json_schema


def contracts_schema() -> dict[str, Any]:
    """`contracts.json`: one JSON Schema document whose `$defs` are every contract type, with
    `x-vamu-jobs` (job name → data and result type) and `x-vamu-events` (event → payload)."""
    types = list(contract_types())
    by_key, generated = TypeAdapter.json_schemas(
        [(name, mode, TypeAdapter(kind)) for name, mode, kind in types],
        ref_template="#/$defs/{model}",
        schema_generator=_ContractSchema,
    )
    defs: dict[str, Any] = dict(generated.get("$defs", {}))
    # pydantic names a model's def after its class; the contract's name wins (InspirationRequest
    # becomes InspirationGenerateData). Types that are not models come back inline.
    renames: dict[str, str] = {}
    inline: dict[str, Any] = {}
    for name, mode, _ in types:
        schema = by_key[(name, mode)]
        ref = schema.get("$ref", "")
        if set(schema) == {"$ref"} and ref.startswith("#/$defs/"):
            renames[ref.removeprefix("#/$defs/")] = name
        else:
            inline[name] = schema
    defs = {renames.get(name, name): schema for name, schema in defs.items()}
    defs, inline = _renamed(defs, renames), _renamed(inline, renames)
    # Shared types (the kinds, the proposal union) are referenced by name wherever they occur.
    for name, schema in inline.items():
        defs = {
            key: {field: _named(part, schema, name) for field, part in value.items()}
            for key, value in defs.items()
        }
        defs[name] = schema
    for name, schema in defs.items():
        schema["title"] = name
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://vamu.app/schemas/contracts.json",
        "title": "vamu-tasks contracts",
        "description": "Generated from the pydantic models by `vamu-tasks contracts export`; "
        "see docs/contracts.md.",
        "$defs": defs,
        "x-vamu-jobs": {
            spec.job_name: {
                "data": data_type_name(spec.job_name),
                "result": spec.result_model.__name__,
            }
            for spec in FEATURES.values()
        },
        "x-vamu-events": {event: model.__name__ for event, model in EVENTS.items()},
    }


def _renamed(value: Any, renames: dict[str, str]) -> Any:
    """`value` with every `#/$defs/<old>` reference pointing at the new name."""
    if isinstance(value, dict):
        return {key: _renamed(item, renames) for key, item in value.items()}
    if isinstance(value, list):
        return [_renamed(item, renames) for item in value]
    if isinstance(value, str) and value.startswith("#/$defs/"):
        old = value.removeprefix("#/$defs/")
        return f"#/$defs/{renames.get(old, old)}"
    return value


def _named(value: Any, schema: Any, name: str) -> Any:
    """`value` with every subschema equal to `schema` replaced by a reference to `name`."""
    if value == schema:
        return {"$ref": f"#/$defs/{name}"}
    if isinstance(value, dict):
        return {key: _named(item, schema, name) for key, item in value.items()}
    if isinstance(value, list):
        return [_named(item, schema, name) for item in value]
    return value


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def all_files() -> dict[str, dict[str, Any]]:
    """Every generated file, by its name in the schema directory."""
    files = {f"{name}.json": schema for name, schema in job_schemas().items()}
    files[CONTRACTS_FILE] = contracts_schema()
    return files


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_files().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Files whose checked-in text differs from the models (missing counts as stale)."""
    out = []
    for name, schema in all_files().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(schema):
            out.append(name)
    return out
