"""The Celery entry point of the chatbot: wait for earlier turns, then run the use case."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import Task, shared_task

from vamu_tasks.bootstrap import Container, get_container
from vamu_tasks.chatbot.service import parse_request, reply_to_message
from vamu_tasks.domain import TERMINAL_STATUSES, FeatureResult, JobRecord
from vamu_tasks.errors import StoreUnavailable, VamuError
from vamu_tasks.jobs import Handler, cancel_checkpoint
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.task_runner import JobRef, TaskOutcome, execute

# How often a message that arrived while its conversation was busy checks again.
TURN_WAIT_S = 0.25


def make_handler(container: Container, ref: JobRef) -> Handler:
    def handle(job: JobRecord, meter: SpendMeter) -> FeatureResult:
        settings = container.settings
        return reply_to_message(
            job,
            parse_request(job.request),
            chats=container.chats,
            context=container.context,
            llm=container.llm(ref.provider, ref.model),
            sink=container.chunk_sink,
            meter=meter,
            history_budget_tokens=settings.chat_history_budget_tokens,
            max_output_tokens=settings.chat_max_output_tokens,
            checkpoint=cancel_checkpoint(
                container.store, job.id, time_limit_s=container.settings.task_soft_time_limit_s
            ),
        )

    return handle


@dataclass(frozen=True)
class Turn:
    """The turn check's answer: the job's conversation (when its request names one), and
    whether the job must wait for it."""

    conversation_id: str | None = None
    blocked: bool = False


def _turn(container: Container, ref: JobRef) -> Turn:
    """Whether this job may run now, and the conversation it holds while it does."""
    job = container.store.get_job(ref.job_id)
    if job is None:
        return Turn()
    if job.is_terminal:
        # A redelivery of an ended job: it may still hold the turn (the release was lost).
        return Turn(str(job.request.get("conversationId", "")) or None)
    try:
        request = parse_request(job.request)
    except VamuError:
        return Turn()  # run_job will fail it with the field errors
    chats = container.chats
    conversation = request.conversation_id
    waited_s = (datetime.now(UTC) - job.created_at).total_seconds()
    # An earlier turn that has not ended after a full lease is stuck (lost, or never sent):
    # stop waiting for it, or the whole conversation would stall behind it.
    after = job.created_at if waited_s < _lease_s(container) else None
    if not chats.claim_turn(
        conversation, job.user_id, job.id, _lease_s(container), created_at=after
    ):
        return Turn(conversation, blocked=True)
    return Turn(conversation)


def _lease_s(container: Container) -> float:
    # Long enough for the longest attempt plus the longest retry wait.
    settings = container.settings
    return settings.task_time_limit_s + settings.retry_backoff_max_s


# max_retries=None: the retry budget is RetryPolicy's (task_runner), not Celery's default of 3.
@shared_task(bind=True, name="vamu.chatbot.reply", pydantic=True, max_retries=None)
def reply(self: Task[Any, Any], ref: JobRef) -> TaskOutcome:
    # Double texting: a conversation's messages are answered one at a time, in arrival order,
    # so replies never interleave in its history. Waiting is not an attempt.
    container = get_container()
    try:
        turn = _turn(container, ref)
    except StoreUnavailable as exc:
        raise self.retry(countdown=TURN_WAIT_S * 8) from exc
    if turn.blocked:
        raise self.retry(countdown=TURN_WAIT_S)
    outcome = execute(self, ref, make_handler)
    # Still running means a retry is scheduled (or a live worker has the job): the turn stays
    # held until the job ends. The outcome says so; the row is not read again.
    if outcome.status in TERMINAL_STATUSES and turn.conversation_id:
        container.chats.release_turn(turn.conversation_id, ref.job_id)
    return outcome
