"""`ChunkCoalescer`: a token stream becomes a few ordered `chat-chunk` events (fake clock)."""

from __future__ import annotations

import pytest

from vamu_tasks.chatbot.streaming import ChunkCoalescer

MAX_CHARS = 20
MAX_DELAY_S = 0.125  # a binary fraction, so the fake clock adds up exactly


class FakeClock:
    """Stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Room:
    """What the user's room receives: (seq, delta) in emit order."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str]] = []

    def emit(self, seq: int, delta: str) -> None:
        self.events.append((seq, delta))

    @property
    def text(self) -> str:
        return "".join(delta for _, delta in self.events)

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.events]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def room() -> Room:
    return Room()


@pytest.fixture
def coalescer(room: Room, clock: FakeClock) -> ChunkCoalescer:
    return ChunkCoalescer(room.emit, max_chars=MAX_CHARS, max_delay_s=MAX_DELAY_S, clock=clock)


def test_the_first_delta_reaches_the_room_at_once_as_seq_0(
    coalescer: ChunkCoalescer, room: Room
) -> None:
    coalescer.add("Hel")

    assert room.events == [(0, "Hel")]


def test_later_deltas_wait_in_the_buffer_until_max_chars_is_reached(
    coalescer: ChunkCoalescer, room: Room
) -> None:
    coalescer.add("Hi")
    for piece in ["abcde", "fghij", "klmno"]:  # 15 chars: below MAX_CHARS
        coalescer.add(piece)

    assert room.events == [(0, "Hi")]

    coalescer.add("pqrst")  # 20 chars: a flush of everything buffered

    assert room.events == [(0, "Hi"), (1, "abcdefghijklmnopqrst")]


def test_a_small_buffer_is_flushed_once_max_delay_has_passed(
    coalescer: ChunkCoalescer, room: Room, clock: FakeClock
) -> None:
    coalescer.add("Hi")
    coalescer.add(" there")
    clock.advance(MAX_DELAY_S / 2)
    coalescer.add(",")

    assert room.events == [(0, "Hi")]

    clock.advance(MAX_DELAY_S / 2)
    coalescer.add(" you")

    assert room.events == [(0, "Hi"), (1, " there, you")]


def test_the_delay_counts_from_the_last_flush_not_from_the_start(
    coalescer: ChunkCoalescer, room: Room, clock: FakeClock
) -> None:
    clock.advance(10)  # a slow first token
    coalescer.add("Hi")
    coalescer.add(" there")

    assert room.events == [(0, "Hi")]


def test_flush_sends_what_is_buffered_and_an_empty_buffer_sends_nothing(
    coalescer: ChunkCoalescer, room: Room
) -> None:
    coalescer.flush()
    assert room.events == []

    coalescer.add("Hi")
    coalescer.add(" there")
    coalescer.flush()
    coalescer.flush()

    assert room.events == [(0, "Hi"), (1, " there")]


def test_empty_deltas_are_ignored(coalescer: ChunkCoalescer, room: Room) -> None:
    coalescer.add("")
    coalescer.flush()

    assert room.events == []
    assert coalescer.seq == 0


def test_seq_rises_by_one_from_0_and_the_pieces_join_into_the_whole_reply(
    coalescer: ChunkCoalescer, room: Room, clock: FakeClock
) -> None:
    reply = "".join(f"word{n} " for n in range(200))
    for start in range(0, len(reply), 3):
        coalescer.add(reply[start : start + 3])
        clock.advance(0.01)
    coalescer.flush()

    assert room.seqs == list(range(len(room.events)))
    assert room.text == reply
    assert all(delta for _, delta in room.events)


def test_a_2000_token_reply_arriving_at_once_is_tens_of_events_not_thousands(
    room: Room, clock: FakeClock
) -> None:
    coalescer = ChunkCoalescer(room.emit, clock=clock)  # the production thresholds
    deltas = [f"tok{n:04d} " for n in range(1000)]  # ~2,000 tokens: 8,000 chars in 8-char deltas
    assert {len(d) for d in deltas} == {8}

    for delta in deltas:
        coalescer.add(delta)
    coalescer.flush()

    assert 10 <= len(room.events) <= 60
    assert room.text == "".join(deltas)
    assert room.seqs == list(range(len(room.events)))


def test_a_slow_stream_still_reaches_the_room_every_max_delay_not_every_delta(
    room: Room, clock: FakeClock
) -> None:
    # Binary fractions keep the fake clock exact: a delta every 1/16 s, a flush every 1/8 s.
    coalescer = ChunkCoalescer(room.emit, max_chars=10_000, max_delay_s=0.125, clock=clock)
    for n in range(100):
        coalescer.add(f"t{n} ")
        clock.advance(0.0625)
    coalescer.flush()

    # Deltas 0, 2, 4 ... 98 each close a chunk; the final flush sends delta 99.
    assert len(room.events) == 51
    assert room.events[1] == (1, "t1 t2 ")
    assert room.text == "".join(f"t{n} " for n in range(100))
