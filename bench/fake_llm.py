"""The package's wire-faithful fake LLM server, with answers a benchmark can run on.

`python bench/fake_llm.py --port 0 [--latency S] [--chat-chunk-size N] [--chat-chunk-delay S]`
serves `vamu_tasks.testing.fake_llm.FakeLLMServer` unchanged on the wire, with three changes
for long runs:

- a responder that gives each structured-output ("Inspire me") request exactly the ideas its
  schema asks for, and each other request (a chat reply) a ~300 character text streamed in
  `--chat-chunk-size` character frames, `--chat-chunk-delay` seconds apart;
- the time the first text delta of each stream leaves the server (after the socket write
  returns), keyed by the `[bench:<conversation id>]` tag the driver puts in each chat message,
  recorded with `probe.py`'s recorder as stage `fake_first_token`;
- no request log (the stock server keeps every request body in memory, for the tests).

The latency is still set with `POST /_fake/config {"latency": S}`. Prints `{"url": ...}`.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import threading
import time
from typing import Any

import probe

from vamu_tasks.testing.answers import ideas_responder, requested_schema
from vamu_tasks.testing.fake_llm import Behaviour, FakeLLMServer, RecordedRequest, Text
from vamu_tasks.testing.fake_llm import server as fake_server
from vamu_tasks.testing.fake_llm.behaviours import last_user_text

TAG = re.compile(r"\[bench:([^\]]+)\]")
CHAT_REPLY = (
    "Here are a few things worth a look this week: a late jazz set at the Roundhouse on "
    "Friday, the riverside street food market on Saturday afternoon, and a small tech meetup "
    "with live demos on Tuesday evening. Want me to check tickets for any of them?"
)


def make_responder(chunk_size: int, chunk_delay: float) -> Any:
    def respond(request: RecordedRequest) -> Behaviour:
        if requested_schema(request) is not None:
            return ideas_responder(request)
        return Text(CHAT_REPLY, input_tokens=600, chunk_size=chunk_size, chunk_delay=chunk_delay)

    return respond


class _FirstDeltaWriter:
    """Stands in for the handler's socket writer; notes when the first text delta is sent."""

    MARKERS = (b"output_text.delta", b"content_block_delta", b'"delta": {"content"')

    def __init__(self, raw: Any, key: str | None) -> None:
        self._raw = raw
        self._key = key
        self._seen = key is None

    def write(self, data: bytes) -> Any:
        written = self._raw.write(data)
        if not self._seen and any(m in data for m in self.MARKERS):
            self._seen = True
            probe.record("fake_first_token", self._key, time.time(), 0.0)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def install_first_token_probe() -> None:
    answer = fake_server._Handler._answer
    send_stream = fake_server._Handler._send_stream

    def _answer(self: Any, wire: Any, request: RecordedRequest, behaviour: Behaviour) -> None:
        match = TAG.search(last_user_text(request.body)) if request.stream else None
        self._bench_key = match.group(1) if match else None
        answer(self, wire, request, behaviour)

    def _send_stream(self: Any, wire: Any, behaviour: Any) -> None:
        raw = self.wfile
        self.wfile = _FirstDeltaWriter(raw, getattr(self, "_bench_key", None))
        try:
            send_stream(self, wire, behaviour)
        finally:
            self.wfile = raw

    fake_server._Handler._answer = _answer  # type: ignore[method-assign]
    fake_server._Handler._send_stream = _send_stream  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/fake_llm.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--chat-chunk-size", type=int, default=16)
    parser.add_argument("--chat-chunk-delay", type=float, default=0.02)
    args = parser.parse_args()
    probe.start_recorder("fake-llm")
    install_first_token_probe()
    server = FakeLLMServer(host=args.host, port=args.port, latency=args.latency,
                           responder=make_responder(args.chat_chunk_size, args.chat_chunk_delay))
    server._record = lambda request: None  # type: ignore[method-assign]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with server:
        print(json.dumps({"url": server.url}), flush=True)
        while not stop.wait(0.5):
            pass
    probe.flush()


if __name__ == "__main__":
    main()
