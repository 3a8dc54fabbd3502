"""The "Inspire me" use case: the user's context in, validated event ideas out (no Celery here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from vamu_tasks.domain import LLMRequest, LLMResult, Message, OutputSchema, UserContext
from vamu_tasks.errors import InvalidJob
from vamu_tasks.guard import quotes_instructions
from vamu_tasks.inspiration import prompts
from vamu_tasks.inspiration.schemas import InspirationRequest, InspirationResult, llm_output_schema
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.llm.structured import complete_structured, parse_answer
from vamu_tasks.ports import LLMProvider, UserContextClient

READY_EVENT = "inspiration-ready"


def parse_request(data: Mapping[str, Any]) -> InspirationRequest:
    try:
        return InspirationRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidJob.from_validation_error(exc) from exc


def generate_ideas(
    request: InspirationRequest,
    *,
    context: UserContextClient,
    llm: LLMProvider,
    meter: SpendMeter,
    max_output_tokens: int = 2048,
    checkpoint: Callable[[], None] = lambda: None,
) -> InspirationResult:
    user = context.get_context(request.user_id)
    llm_request = build_llm_request(request, user, max_output_tokens)
    return complete_structured(
        llm,
        llm_request,
        InspirationResult,
        meter,
        check=check_ideas(request),
        checkpoint=checkpoint,
    )


def build_llm_request(
    request: InspirationRequest, user: UserContext, max_output_tokens: int
) -> LLMRequest:
    """The one LLM call of the job, the same whether it is sent now or in a vendor batch."""
    return LLMRequest(
        system=prompts.SYSTEM,
        messages=(
            Message("user", prompts.user_prompt(user, request.count, request.locale, request.hint)),
        ),
        output_schema=OutputSchema("event_ideas", llm_output_schema(request.count)),
        max_output_tokens=max_output_tokens,
        cache_key=f"inspiration:{request.user_id}",
        user_id=request.user_id,
    )


def check_ideas(request: InspirationRequest) -> Callable[[InspirationResult], InspirationResult]:
    """What an answer must be beyond its schema; raises ValueError with the problem."""

    def exactly_count(result: InspirationResult) -> InspirationResult:
        if len(result.ideas) < request.count:
            raise ValueError(f"expected {request.count} ideas, got {len(result.ideas)}")
        # Instructions injected in the profile can ask for the system prompt: such an answer is
        # sent back once, then the job fails as schema_invalid rather than show it to the user.
        texts = [v for idea in result.ideas for v in idea.model_dump().values() if v]
        if quotes_instructions("\n".join(map(str, texts)), prompts.SYSTEM):
            raise ValueError("the ideas quote your instructions; write ideas for the user only")
        # A model that gives more than asked is trimmed rather than sent back.
        return InspirationResult(ideas=result.ideas[: request.count])

    return exactly_count


def batch_llm_request(
    data: Mapping[str, Any], context: UserContextClient, max_output_tokens: int
) -> LLMRequest:
    """The call a batched job makes, built when its batch is collected."""
    request = parse_request(data)
    return build_llm_request(request, context.get_context(request.user_id), max_output_tokens)


def accept_answer(data: Mapping[str, Any], result: LLMResult) -> InspirationResult | str:
    """A batched answer through the same validation as `generate_ideas`: the ideas, or what
    is wrong with them (the job then runs synchronously, where it gets its one repair)."""
    return parse_answer(result, InspirationResult, check_ideas(parse_request(data)))
