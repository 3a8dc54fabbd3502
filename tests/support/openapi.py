"""Checks JSON values against the schemas of docs/openapi/internal-api.json, as NestJS would.

`jsonschema` is not a dependency, so this implements the keywords the file uses; `KEYWORDS`
pins that set, and a test fails when the file starts using another one (rather than this
validator silently ignoring it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

OPENAPI_FILE = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "internal-api.json"

# Keywords with a meaning for validation, and annotations that have none.
KEYWORDS = {"$ref", "type", "properties", "required", "anyOf", "items", "pattern", "format",
            "minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength"}
ANNOTATIONS = {"description", "default", "examples"}

# RFC 3339 `date-time`, the meaning of OpenAPI's `format: date-time`: the offset is required.
DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")


def load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    return document


def keywords_used(schema: Any) -> set[str]:
    """Every keyword in a schema and its subschemas."""
    if isinstance(schema, list):
        return set().union(*(keywords_used(item) for item in schema)) if schema else set()
    if not isinstance(schema, Mapping):
        return set()
    found = set(schema)
    for key, value in schema.items():
        if key == "properties":
            found |= keywords_used(list(value.values()))
        elif key in ("anyOf", "items"):
            found |= keywords_used(value)
    return found


def response_schema(document: Mapping[str, Any], path: str, status: str) -> dict[str, Any]:
    """The JSON body schema of one documented response (following `$ref`s to responses)."""
    response = document["paths"][path]["get"]["responses"][status]
    if "$ref" in response:
        response = resolve(document, response["$ref"])
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def resolve(document: Mapping[str, Any], ref: str) -> dict[str, Any]:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def problems(document: Mapping[str, Any], schema: Mapping[str, Any], value: Any,
             where: str = "$") -> list[str]:
    """What is wrong with `value` under `schema`; empty when it is valid."""
    if "$ref" in schema:
        return problems(document, resolve(document, schema["$ref"]), value, where)
    if "anyOf" in schema:
        if any(not problems(document, option, value, where) for option in schema["anyOf"]):
            return []
        return [f"{where}: matches none of anyOf"]
    kind = schema.get("type")
    if kind is not None and not _is_type(value, kind):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    found: list[str] = []
    if isinstance(value, dict):
        found += _object_problems(document, schema, value, where)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += problems(document, schema["items"], item, f"{where}[{i}]")
    if isinstance(value, str):
        found += _string_problems(schema, value, where)
    if _is_type(value, "number"):
        found += _number_problems(schema, value, where)
    return found


def _object_problems(document: Mapping[str, Any], schema: Mapping[str, Any],
                     value: dict[str, Any], where: str) -> list[str]:
    found = [f"{where}: {name} is required" for name in schema.get("required", [])
             if name not in value]
    for name, sub in schema.get("properties", {}).items():
        if name in value:
            found += problems(document, sub, value[name], f"{where}.{name}")
    return found


def _is_type(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False  # JSON's true is not a number, though Python's bool is an int
    return kind == "number" or float(value).is_integer()


def _string_problems(schema: Mapping[str, Any], value: str, where: str) -> list[str]:
    found = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        found.append(f"{where}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        found.append(f"{where}: longer than {schema['maxLength']}")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        found.append(f"{where}: does not match {schema['pattern']}")
    if schema.get("format") == "date-time" and DATE_TIME.match(value) is None:
        found.append(f"{where}: not an RFC 3339 date-time")
    return found


def _number_problems(schema: Mapping[str, Any], value: float, where: str) -> list[str]:
    found = []
    if "minimum" in schema and value < schema["minimum"]:
        found.append(f"{where}: below {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        found.append(f"{where}: above {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        found.append(f"{where}: not above {schema['exclusiveMinimum']}")
    return found
