#!/usr/bin/env python3
"""The database work of one chat reply in the LLM worker, alone: what each change saves.

    .venv/bin/python bench/chat_path.py [--replies 1000] [--turns 3]

Runs, in this process and against a PostgreSQL database of its own (dropped at the end), what
`chatbot.reply` does for one message, in order, with the worker's own code:

- turn: `chatbot.tasks._turn` (the job row, the earlier-turn check, the turn claim);
- start: `start_attempt` with a lease owner;
- use case: `reply_to_message` (the stored reply of an earlier attempt, the user's message,
  the history, the reply), with the sample user contexts in memory, an LLM that streams a
  300-character reply from memory and a chunk sink that sends nothing;
- end: `succeed` with the `chat-reply-ready` notification and its inline delivery
  (`deliver_fresh`, with a transport that sends nothing);
- release: `release_turn`.

Conversations have `--turns` messages, one after the other, so all but the first turn read a
history. Reported per reply: statements sent (SQLAlchemy's before_cursor_execute, and the
job path's sent straight to psycopg, by step), PostgreSQL transactions (pg_stat_database),
this process's CPU, and the CPU of the PostgreSQL backends that served it. The job rows are
created beforehand, as the bridge would, and not counted. No Celery, no Redis, no HTTP: the
figures move only when the worker's database work does. docs/performance.md gives them before
and after each change.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import temporary_database
from hot_path import Silent, count_statements, measure

from vamu_tasks.chatbot import tasks
from vamu_tasks.chatbot.service import parse_request, reply_to_message
from vamu_tasks.context.static import StaticUserContextClient
from vamu_tasks.domain import (
    ChatChunk,
    ChatRestart,
    LLMRequest,
    LLMResult,
    NewJob,
    StreamEvent,
    TextDelta,
    Usage,
)
from vamu_tasks.jobs import ready_notification
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.notify import service as notify_service
from vamu_tasks.settings import Settings
from vamu_tasks.store.chat import SqlAlchemyChatStore
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.store.repository import SqlAlchemyJobStore
from vamu_tasks.task_runner import JobRef

REPLY = ("Ezra Collective play the Roundhouse on Friday; tickets are still on sale. " * 5)[:300]
USERS = ["u-ada", "u-bruno", "u-chioma", "u-dev"]


class MemoryLLM:
    """Streams the same reply in 16-character deltas, as the bench's fake LLM does."""

    name = "openai"
    model = "gpt-5-mini"

    def complete(self, request: LLMRequest) -> LLMResult:
        return LLMResult(
            REPLY, self.name, self.model, Usage(input_tokens=500, output_tokens=80), "stop"
        )

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]:
        for start in range(0, len(REPLY), 16):
            yield TextDelta(REPLY[start : start + 16])
        yield self.complete(request)


class NoSink:
    """A chunk sink that sends nothing: the figures are the database's, not Redis's."""

    def chunk(self, chunk: ChatChunk) -> None:
        return None

    def restart(self, restart: ChatRestart) -> None:
        return None


def run(url: str, replies: int, turns: int) -> dict[str, Any]:
    store = SqlAlchemyJobStore.from_url(url, transports=["socketio"])
    chats = SqlAlchemyChatStore(store.db)
    settings = Settings()
    # What `_turn` reads of the worker's container.
    container: Any = SimpleNamespace(store=store, chats=chats, settings=settings)
    context, llm, sink = StaticUserContextClient(), MemoryLLM(), NoSink()
    transports = {"socketio": Silent()}
    statements: Counter[str] = Counter()
    step = ["setup"]


    def _count() -> None:
        statements[step[0]] += 1

    count_statements(store.db.engine, _count)

    def job_ids(count: int) -> list[uuid.UUID]:
        step[0] = "setup"
        prefix = uuid.uuid4().hex[:8]
        ids = []
        for n in range(count):
            user = USERS[n // turns % len(USERS)]
            request = {
                "userId": user,
                "conversationId": f"bench-{prefix}-{n // turns}",
                "message": f"Anything on this week? ({n})",
            }
            job, created = store.create_job(NewJob("chatbot", user, request, "bullmq"))
            assert created
            ids.append(job.id)
        return ids

    def one(job_id: uuid.UUID, measured: bool) -> None:
        def at(name: str) -> None:
            step[0] = name if measured else "warmup"

        at("turn")
        turn = tasks._turn(container, JobRef(job_id=job_id))
        assert not turn.blocked and turn.conversation_id, turn
        at("start")
        job = store.start_attempt(job_id, f"host:1:{job_id.hex[:6]}", 60.0)
        at("use_case")
        meter = SpendMeter()
        output = reply_to_message(
            job,
            parse_request(job.request),
            chats=chats,
            context=context,
            llm=llm,
            sink=sink,
            meter=meter,
            history_budget_tokens=settings.chat_history_budget_tokens,
            max_output_tokens=settings.chat_max_output_tokens,
        )
        at("end")
        note = ready_notification(job, output.ready_event, output.ready_data)
        done = store.succeed(job.id, output.result, meter.spend, [note])
        assert done.status == "succeeded", done
        left = notify_service.deliver_fresh(store, transports, [note], only={"socketio"})
        assert not left, left
        at("release")
        chats.release_turn(turn.conversation_id, job_id)

    admin = sa.create_engine(url)
    for job_id in job_ids(60):  # the statement caches
        one(job_id, measured=False)
    measured = job_ids(replies)

    def replies_measured() -> None:
        for job_id in measured:
            one(job_id, measured=True)

    window = measure(store, admin, replies_measured)
    admin.dispose()
    by_step = {k: round(v / replies, 2) for k, v in statements.items() if k in STEPS}
    return {
        "replies": replies,
        "turns_per_conversation": turns,
        "statements_per_reply": round(sum(by_step.values()), 2),
        "statements_per_reply_by_step": {k: by_step.get(k, 0.0) for k in STEPS},
        "pg_transactions_per_reply": round(window.transactions / replies, 2),
        "client_cpu_ms_per_reply": round(window.client_cpu_s / replies * 1000, 3),
        "postgres_cpu_ms_per_reply": round(window.postgres_cpu_s / replies * 1000, 3),
        "wall_ms_per_reply": round(window.wall_s / replies * 1000, 3),
    }


STEPS = ("turn", "start", "use_case", "end", "release")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=3, help="messages per conversation")
    args = parser.parse_args()
    with temporary_database() as url:
        upgrade(url)
        print(json.dumps(run(url, args.replies, args.turns), indent=1))


if __name__ == "__main__":
    main()
