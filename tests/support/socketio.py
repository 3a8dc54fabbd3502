"""Runs the Node Socket.IO listener and collects the events its clients receive."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any, Self

from tests.support.node import NODE_DIR, require_node_modules

READY_TIMEOUT = 20.0
LISTENER = NODE_DIR / "socketio_listener.js"

Event = dict[str, Any]


class SocketIOListener:
    """A Socket.IO server on `@socket.io/redis-adapter` with one connected client per user."""

    def __init__(
        self,
        redis_url: str,
        users: list[str],
        key: str = "socket.io",
        sentinels: list[tuple[str, int]] | None = None,
        sentinel_master: str = "mymaster",
    ) -> None:
        self.redis_url = redis_url
        self.sentinels = list(sentinels or [])
        self.sentinel_master = sentinel_master
        self.users = list(users)
        self.key = key
        self.port: int | None = None
        self._events: list[Event] = []
        self._stderr: list[str] = []
        self._changed = threading.Condition()
        self._ready = False
        self._exited = False
        self._process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []

    def __enter__(self) -> Self:
        node = require_node_modules()
        args = ["--redis", self.redis_url, "--key", self.key, "--users", ",".join(self.users)]
        if self.sentinels:
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            args += ["--sentinels", hosts, "--sentinel-master", self.sentinel_master]
        self._process = subprocess.Popen(
            [str(node), str(LISTENER), *args],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self._process.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            self._wait_ready()
        except BaseException:
            self._shutdown()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._shutdown()

    @property
    def events(self) -> list[Event]:
        with self._changed:
            return list(self._events)

    def wait_for(
        self,
        event: str,
        *,
        user: str | None = None,
        predicate: Callable[[Event], bool] | None = None,
        timeout: float = 10.0,
    ) -> Event:
        """Return the first received event that matches, waiting up to `timeout` seconds."""

        def find() -> Event | None:
            for seen in self._events:
                if seen["event"] != event or (user is not None and seen["user"] != user):
                    continue
                if predicate is None or predicate(seen):
                    return seen
            return None

        with self._changed:
            found = self._changed.wait_for(lambda: find() or self._exited, timeout)
            if isinstance(found, dict):
                return found
            seen_events = list(self._events)
        wanted = f"{event!r}" + (f" for user {user!r}" if user else "")
        raise AssertionError(
            f"no Socket.IO event {wanted} within {timeout}s; events seen: {seen_events}"
            + self._stderr_note()
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        with self._changed:
            while not self._ready and not self._exited:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            if self._ready:
                return
        state = "exited" if self._exited else f"not ready after {READY_TIMEOUT}s"
        raise RuntimeError(f"socketio_listener.js {state}" + self._stderr_note())

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            with self._changed:
                if not isinstance(message, dict):
                    self._stderr.append(f"(stdout) {line.rstrip()}")
                elif message.get("ready"):
                    self.port = int(message["port"])
                    self._ready = True
                else:
                    self._events.append(message)
                self._changed.notify_all()
        with self._changed:
            self._exited = True
            self._changed.notify_all()

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self._stderr.append(line.rstrip())

    def _stderr_note(self) -> str:
        with self._changed:
            lines = self._stderr[-20:]
        return ("\nlistener stderr:\n" + "\n".join(lines)) if lines else ""

    def _shutdown(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
