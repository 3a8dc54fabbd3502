"""Coalescing a token stream into a few `chat-chunk` events, numbered from 0 per attempt."""

from __future__ import annotations

import time
from collections.abc import Callable


class ChunkCoalescer:
    """Buffers deltas; flushes the first at once, then every `max_chars` or `max_delay_s`.

    The first flush is immediate because time to first text is what the user feels; after it,
    a 2,000-token reply becomes tens of events instead of thousands.
    """

    def __init__(
        self,
        emit: Callable[[int, str], None],
        *,
        max_chars: int = 240,
        max_delay_s: float = 0.15,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._max_chars = max_chars
        self._max_delay_s = max_delay_s
        self._clock = clock
        self._buffer: list[str] = []
        self._size = 0
        self._last_flush = clock()
        self.seq = 0

    def add(self, delta: str) -> None:
        if not delta:
            return
        self._buffer.append(delta)
        self._size += len(delta)
        due = self._clock() - self._last_flush >= self._max_delay_s
        if self.seq == 0 or self._size >= self._max_chars or due:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        text = "".join(self._buffer)
        self._buffer.clear()
        self._size = 0
        self._last_flush = self._clock()
        self._emit(self.seq, text)
        self.seq += 1
