"""The chatbot use case: answer one message in a conversation, streaming the reply (no Celery)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from vamu_tasks.chatbot import prompts
from vamu_tasks.chatbot.schemas import ChatReplyResult, ChatRequest
from vamu_tasks.chatbot.streaming import ChunkCoalescer
from vamu_tasks.domain import (
    ChatChunk,
    ChatMessageRecord,
    ChatRestart,
    FeatureResult,
    JobRecord,
    LLMRequest,
    LLMResult,
    Message,
    TextDelta,
)
from vamu_tasks.errors import InvalidJob, StreamInterrupted
from vamu_tasks.events import ChatReplyReadyEvent, request_id_of
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.ports import ChatStore, ChunkSink, LLMProvider, UserContextClient

READY_EVENT = "chat-reply-ready"
HISTORY_LIMIT = 50
# The history is cut at a multiple of this many messages (by seq), never one message at a time:
# the prompt's prefix then stays the same from turn to turn, so the vendors' prompt caches keep
# hitting, until the budget forces the next cut.
TRIM_STEP = 10


def parse_request(data: Mapping[str, Any]) -> ChatRequest:
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidJob.from_validation_error(exc) from exc


def estimate_tokens(text: str) -> int:
    # About four characters a token for English; the provider's real count is on the row.
    return len(text) // 4 + 1


def fit_history(
    history: Sequence[ChatMessageRecord],
    budget_tokens: int,
    *,
    step: int = TRIM_STEP,
    limit: int = HISTORY_LIMIT,
) -> list[Message]:
    """The recent messages that fit the budget, oldest first, starting with a user turn.

    `history` is the conversation's latest messages, oldest first. They are kept from just
    after a cut at a multiple of `step` (by `seq`): the lowest such cut that leaves at most
    `limit` messages within `budget_tokens` and none that `history` does not hold. So the kept
    part starts at the same message turn after turn, and moves on by a step at a time.

    Consecutive messages of one role (a turn whose reply failed) are joined, since the
    providers expect user and assistant to alternate.
    """
    if not history:
        return []
    cut = 0
    while True:
        kept = [record for record in history if record.seq > cut]
        complete = cut >= history[0].seq - 1
        fits = sum(estimate_tokens(r.content) for r in kept) <= budget_tokens
        if complete and fits and len(kept) <= limit:
            break
        cut += step
    while kept and kept[0].role != "user":
        kept.pop(0)
    messages: list[Message] = []
    for record in kept:
        if messages and messages[-1].role == record.role:
            messages[-1] = Message(record.role, f"{messages[-1].content}\n\n{record.content}")
        else:
            messages.append(Message(record.role, record.content))
    return messages


def reply_to_message(
    job: JobRecord,
    request: ChatRequest,
    *,
    chats: ChatStore,
    context: UserContextClient,
    llm: LLMProvider,
    sink: ChunkSink,
    meter: SpendMeter,
    history_budget_tokens: int = 3000,
    max_output_tokens: int = 1024,
    checkpoint: Callable[[], None] = lambda: None,
) -> FeatureResult:
    """Store the user's message once, stream the reply to the room, store the reply once."""
    # Only a later attempt can find a reply stored: each attempt is counted on the row before
    # it runs, and the reply is written inside one, so the first has nothing to read.
    existing = chats.reply_for(job.id) if job.attempts > 1 else None
    if existing is None:
        user = context.get_context(request.user_id)
        _, history = chats.add_user_message_and_history(
            job.id,
            request.conversation_id,
            request.user_id,
            request.message,
            limit=HISTORY_LIMIT + TRIM_STEP,
        )
        messages = fit_history(history, history_budget_tokens)
        if messages and messages[-1].role == "user":
            messages[-1] = Message("user", f"{messages[-1].content}\n\n{request.message}")
        else:
            messages.append(Message("user", request.message))
        llm_request = LLMRequest(
            prompts.system_prompt(user),
            tuple(messages),
            max_output_tokens=max_output_tokens,
            cache_key=f"chat:{request.conversation_id}",
            user_id=request.user_id,
        )
        checkpoint()
        final = _stream_reply(job, request, llm, llm_request, sink, checkpoint)
        meter.record(final)
        existing = chats.add_reply(job.id, request.conversation_id, final.text, final.finish_reason)
    # "length": the token limit cut the reply; it is stored and shown, but not as complete.
    finish = existing.finish_reason or "stop"
    result = ChatReplyResult(
        reply=existing.content, messageId=str(existing.id), finishReason=finish
    )
    ready = ChatReplyReadyEvent.of(
        job, conversationId=request.conversation_id, messageId=existing.id, finishReason=finish
    )
    return FeatureResult(result.model_dump(mode="json"), READY_EVENT, ready.payload())


def _stream_reply(
    job: JobRecord,
    request: ChatRequest,
    llm: LLMProvider,
    llm_request: LLMRequest,
    sink: ChunkSink,
    checkpoint: Callable[[], None] = lambda: None,
) -> LLMResult:
    attempt = job.attempts
    request_id = request_id_of(job.request)
    if attempt > 1:
        sink.restart(
            ChatRestart(
                job.id, request.user_id, request.conversation_id, attempt, request_id, job.rerun_of
            )
        )

    def emit(seq: int, delta: str) -> None:
        # Each coalesced chunk is a checkpoint: a cancelled reply stops within one chunk.
        checkpoint()
        sink.chunk(
            ChatChunk(
                job.id,
                request.user_id,
                request.conversation_id,
                attempt,
                seq,
                delta,
                request_id=request_id,
                rerun_of=job.rerun_of,
            )
        )

    coalescer = ChunkCoalescer(emit)
    final: LLMResult | None = None
    for event in llm.stream(llm_request):
        if isinstance(event, TextDelta):
            coalescer.add(event.text)
        else:
            final = event
    coalescer.flush()
    if final is None:
        raise StreamInterrupted("The stream ended without a final answer.")
    return final
