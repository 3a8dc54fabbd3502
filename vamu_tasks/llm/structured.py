"""Structured output: ask for JSON, validate it, and give the model one chance to repair it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from vamu_tasks.domain import LLMRequest, LLMResult, Message
from vamu_tasks.errors import SchemaInvalid
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.ports import LLMProvider

T = TypeVar("T", bound=BaseModel)

REPAIR_PROMPT = """\
Your previous answer did not match the required JSON schema: {problem}
Answer again with only the corrected JSON object."""


def complete_structured(
    llm: LLMProvider,
    request: LLMRequest,
    model_type: type[T],
    meter: SpendMeter,
    *,
    check: Callable[[T], T] | None = None,
    checkpoint: Callable[[], None] = lambda: None,
) -> T:
    """Return the model's answer as `model_type`; raise `SchemaInvalid` after one failed repair.

    `check` may tighten the schema (e.g. an exact count) by raising ValueError, and may
    normalise the value it returns.
    """
    checkpoint()
    result = llm.complete(request)
    meter.record(result)
    problem = parse_answer(result, model_type, check)
    if isinstance(problem, BaseModel):
        return problem
    repair = replace(
        request,
        messages=(
            *request.messages,
            Message("assistant", result.text[:8000] or "(empty)"),
            Message("user", REPAIR_PROMPT.format(problem=problem)),
        ),
    )
    checkpoint()
    result = llm.complete(repair)
    meter.record(result)
    second = parse_answer(result, model_type, check)
    if isinstance(second, BaseModel):
        return second
    raise SchemaInvalid(
        f"{result.provider}/{result.model} output did not match {model_type.__name__} "
        f"after one repair attempt: {second}"
    )


CUT_OFF = (
    "it was cut off at the output token limit before it was complete; answer again, more briefly"
)


def parse_answer(
    result: LLMResult, model_type: type[T], check: Callable[[T], T] | None = None
) -> T | str:
    """The answer as `model_type`, or what is wrong with it (for the repair prompt).

    An answer the token limit cut is never taken, even if what was written happens to parse.
    """
    if result.finish_reason == "length":
        return CUT_OFF
    return _parse_problem(result.text, model_type, check)


def _parse_problem(text: str, model_type: type[T], check: Callable[[T], T] | None) -> T | str:
    try:
        value = model_type.model_validate(json.loads(text))
        return check(value) if check else value
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg} at position {exc.pos})"
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        return f"{exc.error_count()} schema error(s): {errors}"
    except ValueError as exc:
        return str(exc)
