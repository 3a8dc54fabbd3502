"""The `ChatStore` contract, run against the in-memory fake, SQLite and PostgreSQL alike.

Chat rows reference `ai_jobs` ids, so every message here belongs to a job created first.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from vamu_tasks.domain import ChatMessageRecord, JobRecord, NewJob, Spend
from vamu_tasks.errors import InvalidJob
from vamu_tasks.store.chat import SqlAlchemyChatStore
from vamu_tasks.store.migrate import upgrade
from vamu_tasks.store.repository import Database, SqlAlchemyJobStore
from vamu_tasks.testing.memory import InMemoryChatStore, InMemoryJobStore

BACKENDS = ["memory", "sqlite", "postgres"]
ADA = "u-ada"
BRUNO = "u-bruno"
T = TypeVar("T")


@dataclass
class Stores:
    jobs: InMemoryJobStore | SqlAlchemyJobStore
    chats: InMemoryChatStore | SqlAlchemyChatStore
    backend: str

    def job(self, conversation: str, message: str = "hi", *, user: str = ADA) -> JobRecord:
        """A queued `chatbot.reply` job row, as the bridge creates it."""
        request = {"userId": user, "conversationId": conversation, "message": message}
        job, created = self.jobs.create_job(NewJob("chatbot", user, request, "cli"))
        assert created
        return job

    def turn(
        self, conversation: str, message: str, reply: str, *, user: str = ADA
    ) -> tuple[ChatMessageRecord, ChatMessageRecord]:
        job = self.job(conversation, message, user=user)
        asked = ask(self.chats, job.id, conversation, user, message)
        answered = self.chats.add_reply(job.id, conversation, reply)
        return asked, answered

    def everything(self, conversation: str) -> list[ChatMessageRecord]:
        return self.chats.history(conversation, before_seq=10**9, limit=10_000)


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "memory":
        jobs = InMemoryJobStore()
        yield Stores(jobs, InMemoryChatStore(jobs), "memory")
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'vamu.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("pg_url")
    db = Database.from_url(url)
    try:
        yield Stores(SqlAlchemyJobStore(db), SqlAlchemyChatStore(db), request.param)
    finally:
        db.close()


@pytest.fixture
def conversation() -> str:
    # The PostgreSQL database lives for the whole session: every test gets its own conversation.
    return f"conv-{uuid.uuid4().hex}"


def ask(
    chats: InMemoryChatStore | SqlAlchemyChatStore,
    job_id: uuid.UUID,
    conversation: str,
    user: str,
    content: str,
) -> ChatMessageRecord:
    """The user's message stored as the use case stores it: with the history before it."""
    return chats.add_user_message_and_history(job_id, conversation, user, content, limit=20)[0]


def texts(messages: list[ChatMessageRecord]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages]


def at_once(count: int, work: Callable[[int], T]) -> list[T]:
    """Run `work(0..count-1)` in threads released together, as racing redeliveries would."""
    start = threading.Barrier(count)

    def run(n: int) -> T:
        start.wait()
        return work(n)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


# --- writing once per job -----------------------------------------------------------------------


def test_the_users_message_is_stored_once_per_job_however_often_it_is_added(
    stores: Stores, conversation: str
) -> None:
    job = stores.job(conversation, "Any jazz this week?")

    first = ask(stores.chats, job.id, conversation, ADA, "Any jazz this week?")
    again = ask(stores.chats, job.id, conversation, ADA, "Any jazz this week?")

    assert again == first
    assert (first.job_id, first.role, first.content) == (job.id, "user", "Any jazz this week?")
    assert stores.everything(conversation) == [first]


def test_a_redelivery_with_other_text_keeps_the_first_stored_message(
    stores: Stores, conversation: str
) -> None:
    job = stores.job(conversation, "Any jazz this week?")
    first = ask(stores.chats, job.id, conversation, ADA, "Any jazz this week?")

    again = ask(stores.chats, job.id, conversation, ADA, "edited text")

    assert again == first
    assert texts(stores.everything(conversation)) == [("user", "Any jazz this week?")]


def test_a_message_added_again_uses_up_no_seq_so_the_turns_stay_gapless(
    stores: Stores, conversation: str
) -> None:
    first = stores.job(conversation, "Any jazz this week?")
    ask(stores.chats, first.id, conversation, ADA, "Any jazz this week?")
    ask(stores.chats, first.id, conversation, ADA, "Any jazz this week?")
    stores.chats.add_reply(first.id, conversation, "Ezra Collective on Friday.")
    stores.chats.add_reply(first.id, conversation, "Ezra Collective on Friday.")
    second = stores.job(conversation, "And on Saturday?")

    asked = ask(stores.chats, second.id, conversation, ADA, "And on Saturday?")

    assert [m.seq for m in stores.everything(conversation)] == [1, 2, 3]
    assert asked.seq == 3


def test_the_reply_is_stored_once_per_job_and_the_first_reply_wins(
    stores: Stores, conversation: str
) -> None:
    job = stores.job(conversation, "Any jazz this week?")
    ask(stores.chats, job.id, conversation, ADA, "Any jazz this week?")

    reply = stores.chats.add_reply(job.id, conversation, "Ezra Collective on Friday.")
    again = stores.chats.add_reply(job.id, conversation, "A second, different answer.")

    assert again == reply
    assert (reply.job_id, reply.role) == (job.id, "assistant")
    assert texts(stores.everything(conversation)) == [
        ("user", "Any jazz this week?"),
        ("assistant", "Ezra Collective on Friday."),
    ]


def test_reply_for_finds_a_jobs_reply_only_once_it_is_stored(
    stores: Stores, conversation: str
) -> None:
    job = stores.job(conversation, "Any jazz this week?")
    ask(stores.chats, job.id, conversation, ADA, "Any jazz this week?")

    assert stores.chats.reply_for(job.id) is None

    reply = stores.chats.add_reply(job.id, conversation, "Ezra Collective on Friday.")

    assert stores.chats.reply_for(job.id) == reply
    assert stores.chats.reply_for(uuid.uuid4()) is None


def test_racing_deliveries_of_one_job_store_its_message_and_reply_once(
    stores: Stores, conversation: str
) -> None:
    if stores.backend == "sqlite":
        pytest.skip("SQLite serialises writers; the race needs concurrent transactions")
    job = stores.job(conversation, "Any jazz this week?")

    asked = at_once(
        4, lambda _: ask(stores.chats, job.id, conversation, ADA, "Any jazz?")
    )
    answered = at_once(4, lambda n: stores.chats.add_reply(job.id, conversation, f"reply {n}"))

    assert len(set(asked)) == 1
    assert len(set(answered)) == 1
    assert [m.role for m in stores.everything(conversation)] == ["user", "assistant"]


CONCURRENT_TRIALS = 10


def messages_from_racing_jobs(
    stores: Stores, conversation: str, count: int
) -> tuple[list[ChatMessageRecord], list[Exception]]:
    """`count` different jobs add their user message to the conversation at the same moment."""
    jobs = [stores.job(conversation, f"message {n}") for n in range(count)]
    errors: list[Exception] = []

    def add(n: int) -> ChatMessageRecord | None:
        try:
            return ask(stores.chats, jobs[n].id, conversation, ADA, f"message {n}")
        except Exception as exc:  # the test reports every failure, whatever its type
            errors.append(exc)
            return None

    stored = [m for m in at_once(count, add) if m is not None]
    return stored, errors


def test_concurrent_messages_of_different_jobs_in_one_conversation_get_their_own_seqs(
    stores: Stores,
) -> None:
    for trial in range(CONCURRENT_TRIALS):  # one trial can miss the race; ten do not
        conversation = f"conv-{uuid.uuid4().hex}"
        stores.turn(conversation, "first", "first reply")

        stored, errors = messages_from_racing_jobs(stores, conversation, 4)

        assert errors == [], f"trial {trial}: {errors[0]!r}"
        seqs = [m.seq for m in stores.everything(conversation)]
        assert len(seqs) == 6 and len(set(seqs)) == 6
        assert sorted(m.content for m in stored) == [f"message {n}" for n in range(4)]


def test_concurrent_first_messages_of_different_jobs_all_open_the_conversation(
    stores: Stores,
) -> None:
    for trial in range(CONCURRENT_TRIALS):
        conversation = f"conv-{uuid.uuid4().hex}"

        stored, errors = messages_from_racing_jobs(stores, conversation, 4)

        assert errors == [], f"trial {trial}: {errors[0]!r}"
        assert len({m.seq for m in stores.everything(conversation)}) == 4
        assert len(stored) == 4


# --- order and history --------------------------------------------------------------------------


def test_seq_rises_through_the_turns_of_a_conversation(stores: Stores, conversation: str) -> None:
    u1, a1 = stores.turn(conversation, "U1", "A1")
    u2, a2 = stores.turn(conversation, "U2", "A2")

    seqs = [m.seq for m in (u1, a1, u2, a2)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert stores.everything(conversation) == [u1, a1, u2, a2]


def test_a_reply_is_stored_after_everything_already_in_the_conversation(
    stores: Stores, conversation: str
) -> None:
    # A message whose reply failed for good, then the next turn: the new reply comes last.
    lost = stores.job(conversation, "U1")
    u1 = ask(stores.chats, lost.id, conversation, ADA, "U1")
    u2, a2 = stores.turn(conversation, "U2", "A2")

    assert u1.seq < u2.seq < a2.seq
    assert texts(stores.everything(conversation)) == [
        ("user", "U1"),
        ("user", "U2"),
        ("assistant", "A2"),
    ]


def test_history_is_the_last_messages_before_a_seq_oldest_first(
    stores: Stores, conversation: str
) -> None:
    u1, a1 = stores.turn(conversation, "U1", "A1")
    u2, a2 = stores.turn(conversation, "U2", "A2")
    u3, _ = stores.turn(conversation, "U3", "A3")

    assert stores.chats.history(conversation, before_seq=u3.seq, limit=50) == [u1, a1, u2, a2]
    assert stores.chats.history(conversation, before_seq=u3.seq, limit=3) == [a1, u2, a2]
    assert stores.chats.history(conversation, before_seq=a2.seq, limit=2) == [a1, u2]
    assert stores.chats.history(conversation, before_seq=u1.seq, limit=50) == []


def test_history_holds_only_its_own_conversation(stores: Stores, conversation: str) -> None:
    other = f"{conversation}-other"
    mine, _ = stores.turn(conversation, "U1", "A1")
    stores.turn(other, "elsewhere", "elsewhere too")

    assert texts(stores.everything(conversation)) == [("user", "U1"), ("assistant", "A1")]
    assert stores.chats.history(f"{conversation}-unknown", before_seq=10**9, limit=50) == []
    assert mine in stores.everything(conversation)


def test_a_message_stored_with_its_history_gets_the_last_messages_before_it_oldest_first(
    stores: Stores, conversation: str
) -> None:
    first = stores.job(conversation, "U1")
    asked, earlier = stores.chats.add_user_message_and_history(
        first.id, conversation, ADA, "U1", limit=3
    )
    assert (asked.seq, earlier) == (1, [])
    a1 = stores.chats.add_reply(first.id, conversation, "A1")
    u2, a2 = stores.turn(conversation, "U2", "A2")
    stores.turn(f"{conversation}-other", "elsewhere", "elsewhere too")
    third = stores.job(conversation, "U3")

    asked, earlier = stores.chats.add_user_message_and_history(
        third.id, conversation, ADA, "U3", limit=3
    )

    assert earlier == [a1, u2, a2]
    assert asked.seq == a2.seq + 1
    assert stores.everything(conversation)[-1] == asked


def test_a_message_stored_again_with_its_history_returns_the_first_message_and_its_history(
    stores: Stores, conversation: str
) -> None:
    u1, a1 = stores.turn(conversation, "U1", "A1")
    job = stores.job(conversation, "U2")
    first = stores.chats.add_user_message_and_history(job.id, conversation, ADA, "U2", limit=50)

    again = stores.chats.add_user_message_and_history(job.id, conversation, ADA, "U2", limit=50)

    assert again == first == (again[0], [u1, a1])
    assert len(stores.everything(conversation)) == 3


def test_a_message_with_its_history_into_another_users_conversation_is_an_invalid_job(
    stores: Stores, conversation: str
) -> None:
    stores.turn(conversation, "mine", "ok")
    job = stores.job(conversation, "yours?", user=BRUNO)

    with pytest.raises(InvalidJob):
        stores.chats.add_user_message_and_history(job.id, conversation, BRUNO, "yours?", limit=50)

    assert texts(stores.everything(conversation)) == [("user", "mine"), ("assistant", "ok")]


def test_replies_to_different_conversations_do_not_share_a_sequence(
    stores: Stores, conversation: str
) -> None:
    other = f"{conversation}-other"
    u1, a1 = stores.turn(conversation, "U1", "A1")
    o1, p1 = stores.turn(other, "O1", "P1")
    u2, _ = stores.turn(conversation, "U2", "A2")

    # Each conversation counts on its own: the other's turn left no gap in this one.
    assert (u1.seq, a1.seq) == (o1.seq, p1.seq)
    assert stores.chats.history(conversation, before_seq=u2.seq, limit=2) == [u1, a1]


# --- ownership ----------------------------------------------------------------------------------


def test_a_message_into_another_users_conversation_is_an_invalid_job_and_not_stored(
    stores: Stores, conversation: str
) -> None:
    stores.turn(conversation, "Any jazz this week?", "Ezra Collective on Friday.", user=ADA)
    intruder = stores.job(conversation, "What did Ada ask?", user=BRUNO)

    with pytest.raises(InvalidJob, match=conversation) as caught:
        ask(stores.chats, intruder.id, conversation, BRUNO, "What did Ada ask?")

    assert caught.value.error_kind == "invalid_job"
    assert texts(stores.everything(conversation)) == [
        ("user", "Any jazz this week?"),
        ("assistant", "Ezra Collective on Friday."),
    ]


def test_a_reply_to_a_conversation_that_does_not_exist_is_refused(
    stores: Stores, conversation: str
) -> None:
    job = stores.job(conversation)

    with pytest.raises(LookupError):
        stores.chats.add_reply(job.id, conversation, "to nobody")

    assert stores.chats.reply_for(job.id) is None


# --- double texting -----------------------------------------------------------------------------


def test_an_earlier_queued_turn_holds_the_later_one_until_it_succeeds(
    stores: Stores, conversation: str
) -> None:
    first = stores.job(conversation, "Any jazz this week?")
    second = stores.job(conversation, "And comedy?")

    assert stores.chats.earlier_turn_open(second, conversation)
    assert not stores.chats.earlier_turn_open(first, conversation)  # a later job holds nothing

    stores.jobs.start_attempt(first.id)

    assert stores.chats.earlier_turn_open(second, conversation)

    stores.jobs.succeed(first.id, {"reply": "Yes", "messageId": "m"}, Spend(), [])

    assert not stores.chats.earlier_turn_open(second, conversation)


def test_an_earlier_turn_that_failed_or_was_requeued_is_told_apart(
    stores: Stores, conversation: str
) -> None:
    first = stores.job(conversation, "Any jazz this week?")
    second = stores.job(conversation, "And comedy?")
    stores.jobs.start_attempt(first.id)
    stores.jobs.requeue(first.id, "provider_error", "stream broke")

    assert stores.chats.earlier_turn_open(second, conversation)  # waiting for its retry

    stores.jobs.start_attempt(first.id)
    stores.jobs.fail(first.id, "provider_error", "gave up", Spend(), [])

    assert not stores.chats.earlier_turn_open(second, conversation)


def test_an_open_turn_in_another_conversation_holds_nothing(
    stores: Stores, conversation: str
) -> None:
    stores.job(f"{conversation}-other", "Elsewhere")
    mine = stores.job(conversation, "And comedy?")

    assert not stores.chats.earlier_turn_open(mine, conversation)


def test_the_third_message_waits_while_either_earlier_one_is_open(
    stores: Stores, conversation: str
) -> None:
    first = stores.job(conversation, "one")
    second = stores.job(conversation, "two")
    third = stores.job(conversation, "three")

    stores.jobs.start_attempt(first.id)
    stores.jobs.succeed(first.id, {"reply": "1", "messageId": "m1"}, Spend(), [])

    assert stores.chats.earlier_turn_open(third, conversation)
    assert not stores.chats.earlier_turn_open(second, conversation)


# --- one reply at a time ----------------------------------------------------------------------


def test_a_conversation_held_by_one_job_turns_another_away_until_released(stores: Stores) -> None:
    conversation = f"conv-{uuid.uuid4().hex}"
    first, second = stores.job(conversation, "one"), stores.job(conversation, "two")

    assert stores.chats.claim_turn(conversation, ADA, first.id, ttl_s=60)
    assert stores.chats.claim_turn(conversation, ADA, first.id, ttl_s=60)  # a retry of it
    assert not stores.chats.claim_turn(conversation, ADA, second.id, ttl_s=60)

    stores.chats.release_turn(conversation, second.id)  # not the holder: changes nothing
    assert not stores.chats.claim_turn(conversation, ADA, second.id, ttl_s=60)
    stores.chats.release_turn(conversation, first.id)
    assert stores.chats.claim_turn(conversation, ADA, second.id, ttl_s=60)


def test_a_turn_whose_holder_died_is_free_once_its_lease_runs_out(stores: Stores) -> None:
    conversation = f"conv-{uuid.uuid4().hex}"
    dead, next_one = stores.job(conversation, "one"), stores.job(conversation, "two")

    assert stores.chats.claim_turn(conversation, ADA, dead.id, ttl_s=0.2)
    assert not stores.chats.claim_turn(conversation, ADA, next_one.id, ttl_s=60)
    time.sleep(0.3)

    assert stores.chats.claim_turn(conversation, ADA, next_one.id, ttl_s=60)


def claim_after_earlier(stores: Stores, conversation: str, job: JobRecord) -> bool:
    """The turn claim of `chatbot.reply`: also held back while an earlier turn is open."""
    return stores.chats.claim_turn(
        conversation, job.user_id, job.id, ttl_s=60, created_at=job.created_at
    )


def test_a_later_turn_is_not_claimed_while_an_earlier_one_is_open(
    stores: Stores, conversation: str
) -> None:
    first, second = stores.job(conversation, "one"), stores.job(conversation, "two")

    # No conversation yet: the later turn must not create it held by itself.
    assert not claim_after_earlier(stores, conversation, second)
    assert claim_after_earlier(stores, conversation, first)
    stores.chats.release_turn(conversation, first.id)
    # The conversation is free, but the first turn has not ended.
    assert not claim_after_earlier(stores, conversation, second)
    stores.jobs.start_attempt(first.id)
    assert not claim_after_earlier(stores, conversation, second)

    stores.jobs.succeed(first.id, {"reply": "1", "messageId": "m1"}, Spend(), [])

    assert claim_after_earlier(stores, conversation, second)


def test_a_turn_that_stopped_waiting_for_a_stuck_earlier_one_claims_the_free_conversation(
    stores: Stores, conversation: str
) -> None:
    stores.job(conversation, "one")  # never ends
    second = stores.job(conversation, "two")

    assert not claim_after_earlier(stores, conversation, second)
    assert stores.chats.claim_turn(conversation, ADA, second.id, ttl_s=60)


def test_a_turn_into_another_users_conversation_is_let_through_to_fail_and_holds_nothing(
    stores: Stores, conversation: str
) -> None:
    ada = stores.job(conversation, "mine")
    assert claim_after_earlier(stores, conversation, ada)
    bruno = stores.job(conversation, "yours?", user=BRUNO)
    stores.chats.release_turn(conversation, ada.id)

    # Not held back: the use case fails it as an invalid job.
    assert claim_after_earlier(stores, conversation, bruno)

    later = stores.job(conversation, "mine again")
    assert not claim_after_earlier(stores, conversation, later)  # ada's first turn is open
    stores.jobs.start_attempt(ada.id)
    stores.jobs.succeed(ada.id, {"reply": "1", "messageId": "m1"}, Spend(), [])
    assert claim_after_earlier(stores, conversation, later)  # bruno took nothing over
