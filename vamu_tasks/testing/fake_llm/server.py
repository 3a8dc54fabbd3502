"""The fake's HTTP server: routes, the control endpoints, and sending answers as JSON or SSE."""

from __future__ import annotations

import argparse
import dataclasses
import http
import json
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, cast

from vamu_tasks.testing.fake_llm import batch_http
from vamu_tasks.testing.fake_llm.anthropic_wire import AnthropicWire
from vamu_tasks.testing.fake_llm.batches import Answered
from vamu_tasks.testing.fake_llm.behaviours import (
    Answer,
    Behaviour,
    DropStream,
    Error,
    Hang,
    RecordedRequest,
    Responder,
    Spoken,
    StreamError,
    Text,
    Truncated,
    answer_for,
    behaviour_from_dict,
    default_responder,
)
from vamu_tasks.testing.fake_llm.caching import PromptCache
from vamu_tasks.testing.fake_llm.openai_wire import ChatWire, ResponsesWire
from vamu_tasks.testing.fake_llm.wire import RequestRefused, Wire, cut

_API_ROUTES: dict[str, type[Wire]] = {
    "/v1/responses": ResponsesWire,
    "/v1/chat/completions": ChatWire,
    "/v1/messages": AnthropicWire,
}


def _refusal(wire: Wire) -> Error | None:
    """The vendor's refusal of a body that breaks one of its rules (`rules.py`), if any."""
    try:
        wire.check()
    except RequestRefused as refused:
        return Error(
            refused.status, refused.message, error_type=refused.error_type, param=refused.param
        )
    return None


# Clients that time out or hang up leave broken pipes and resets behind; those are not bugs.
_QUIET_ERRORS = (OSError,)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Error"


def _retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class _HTTPServer(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5; a burst of concurrent clients then waits
    # out a 1 s SYN retry.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], owner: FakeLLMServer) -> None:
        self.owner = owner
        self._open: set[socket.socket] = set()
        self._workers: list[threading.Thread] = []
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves a FQDN, which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Daemon threads so a stuck one never blocks interpreter exit; socketserver does not
        # join daemon threads, so they are tracked here and joined by close_all.
        worker = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="fake-llm-connection",
            daemon=True,
        )
        with self._open_lock:
            self._open.add(request)
            self._workers = [w for w in self._workers if w.is_alive()]
            self._workers.append(worker)
        worker.start()

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_all(self, timeout: float) -> None:
        """Hang up on every client, including idle keep-alive ones, and wait for the handlers."""
        with self._open_lock:
            connections, workers = list(self._open), list(self._workers)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], _QUIET_ERRORS):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-llm/1"
    # Headers, body and each SSE frame are separate writes: with Nagle on, every answer
    # stalls ~40 ms on the client's delayed ACK.
    disable_nagle_algorithm = True

    @property
    def _owner(self) -> FakeLLMServer:
        return cast(_HTTPServer, self.server).owner

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except _QUIET_ERRORS:
            self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        control = _CONTROL_ROUTES.get((self.command, path))
        if control is not None:
            control(self)
            return
        batch_route = batch_http.route(self.command, path)
        if batch_route is not None:
            self._serve_batches(batch_route)
            return
        wire = _API_ROUTES.get(path) if self.command == "POST" else None
        if wire is None:
            self._not_found(path)
            return
        self._serve_api(wire)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(parts)

    def _read_json(self) -> object:
        raw = self._read_body()
        return json.loads(raw) if raw.strip() else None

    def _not_found(self, path: str) -> None:
        self._read_body()
        vendor: type[Wire] = AnthropicWire if "anthropic-version" in self.headers else ChatWire
        wire = vendor({})
        message = f"Invalid URL ({self.command} {path})"
        if vendor is AnthropicWire:
            message = "Not Found"
        self._send_json(404, wire.error_body(404, message, None), wire.headers())

    def _serve_api(self, wire_cls: type[Wire]) -> None:
        try:
            body = self._read_json()
        except ValueError:
            body = None
        wire = wire_cls(body if isinstance(body, dict) else {})
        request = RecordedRequest(
            api=wire.api,
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=wire.body,
            stream=wire.body.get("stream") is True,
            received_at=time.monotonic(),
        )
        owner = self._owner
        owner._record(request)
        behaviour: Behaviour
        if not isinstance(body, dict):
            behaviour = Error(400, "We could not parse the JSON body of your request.")
        elif not owner._authorized(request.headers):
            behaviour = Error(401, wire.auth_message)
        else:
            behaviour = _refusal(wire) or owner._next(request)
        self._answer(wire, request, behaviour)

    def _serve_batches(self, found: batch_http.Route) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        raw = self._read_body()
        owner = self._owner
        reply = owner.batches.serve(found, headers, raw, authorized=owner._authorized(headers))
        if not isinstance(reply.payload, bytes):
            self._send_json(reply.status, reply.payload, reply.headers)
            return
        self.send_response(reply.status, _reason(reply.status))
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.payload)

    def _answer(self, wire: Wire, request: RecordedRequest, behaviour: Behaviour) -> None:
        owner = self._owner
        while isinstance(behaviour, Hang):
            if not owner._pause(behaviour.seconds):
                return
            behaviour = behaviour.then or owner._fallback(request)
        if not owner._pause(owner.latency):
            return
        if isinstance(behaviour, StreamError) and not request.stream:
            status = wire.error_status(behaviour.error_type)
            behaviour = Error(status, behaviour.message, error_type=behaviour.error_type)
        if isinstance(behaviour, Error):
            self._send_error(wire, behaviour)
        elif request.stream:
            self._send_stream(wire, behaviour)
        else:
            self._send_message(wire, behaviour)

    def _send_json(self, status: int, payload: object, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status, _reason(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, wire: Wire, error: Error) -> None:
        headers = wire.headers()
        if error.retry_after is not None:
            headers["Retry-After"] = _retry_after(error.retry_after)
        body = wire.error_body(error.status, error.message, error.error_type, error.param)
        self._send_json(error.status, body, headers)

    def _send_message(self, wire: Wire, behaviour: Spoken) -> None:
        body = wire.message(self._owner._answer(wire, behaviour))
        if not isinstance(behaviour, DropStream):
            self._send_json(200, body, wire.headers())
            return
        data = json.dumps(body).encode()
        self.send_response(200, "OK")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in wire.headers().items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self._drop()

    def _send_stream(self, wire: Wire, behaviour: Spoken) -> None:
        frames = wire.stream(self._owner._answer(wire, behaviour))
        if isinstance(behaviour, DropStream | StreamError | Truncated):
            frames = cut(frames, max(0, behaviour.after_chunks))
        payloads = [frame.payload for frame in frames]
        if isinstance(behaviour, StreamError):
            payloads += wire.stream_error(
                behaviour.error_type, behaviour.message, error_event=behaviour.openai_error_event
            )
        self.send_response(200, "OK")
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in wire.headers().items():
            self.send_header(name, value)
        self.end_headers()
        delay = behaviour.chunk_delay if isinstance(behaviour, Text) else 0.0
        for data in wire.encode(payloads):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if delay:
                time.sleep(delay)
        if isinstance(behaviour, DropStream):
            self._drop()
        else:
            self.wfile.write(b"0\r\n\r\n")

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _control_push(self) -> None:
        try:
            data = self._read_json()
            items = data.get("behaviours") if isinstance(data, dict) else data
            if not isinstance(items, list):
                raise ValueError("expected a JSON list of behaviours")
            behaviours = [behaviour_from_dict(item) for item in items]
        except ValueError as exc:
            self._send_json(400, {"error": str(exc)}, {})
            return
        self._owner.push(*behaviours)
        self._send_json(200, {"queued": self._owner._queued()}, {})

    def _control_reset(self) -> None:
        self._read_body()
        self._owner.reset()
        self._send_json(200, {"ok": True}, {})

    def _control_requests(self) -> None:
        self._send_json(200, [dataclasses.asdict(r) for r in self._owner.requests], {})

    def _control_config(self) -> None:
        try:
            data = self._read_json()
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            if "latency" in data:
                self._owner.latency = float(data["latency"])
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)}, {})
            return
        self._send_json(200, {"latency": self._owner.latency}, {})

    def _control_batches(self, *, expire: bool) -> None:
        """`{"id"?, "custom_ids"?, "finalizing"?}`: complete (or expire) batches now."""
        try:
            data = self._read_json() or {}
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            batch_id, custom_ids = data.get("id"), data.get("custom_ids")
            if batch_id is not None and not isinstance(batch_id, str):
                raise ValueError("id must be a batch id")
            if custom_ids is not None and not (
                isinstance(custom_ids, list) and all(isinstance(c, str) for c in custom_ids)
            ):
                raise ValueError("custom_ids must be a list of strings")
            if expire:
                moved = self._owner.expire_batches(batch_id)
            else:
                moved = self._owner.complete_batches(
                    batch_id,
                    custom_ids=custom_ids,
                    finalizing=bool(data.get("finalizing")),
                )
        except ValueError as exc:  # BatchControlError too
            self._send_json(400, {"error": str(exc)}, {})
            return
        self._send_json(200, {"batches": moved}, {})

    def _control_complete_batches(self) -> None:
        self._control_batches(expire=False)

    def _control_expire_batches(self) -> None:
        self._control_batches(expire=True)


_CONTROL_ROUTES: dict[tuple[str, str], Callable[[_Handler], None]] = {
    ("POST", "/_fake/push"): _Handler._control_push,
    ("POST", "/_fake/reset"): _Handler._control_reset,
    ("GET", "/_fake/requests"): _Handler._control_requests,
    ("POST", "/_fake/config"): _Handler._control_config,
    ("POST", "/_fake/batches/complete"): _Handler._control_complete_batches,
    ("POST", "/_fake/batches/expire"): _Handler._control_expire_batches,
}


class FakeLLMServer:
    """A loopback HTTP server that the official SDKs accept as OpenAI or Anthropic."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        responder: Responder | None = None,
        api_key: str | None = None,
    ) -> None:
        self.latency = latency
        self._address = (host, port)
        self._api_key = api_key
        self._responder = responder
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()
        self.prompt_cache = PromptCache()
        self.batches = batch_http.BatchApis()
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeLLMServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(self._address, self)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_all(timeout=5.0)
        httpd.server_close()
        if thread is not None:
            thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeLLMServer is not started")
        host, port = self._httpd.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def push(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def set_responder(self, responder: Responder | None) -> None:
        with self._lock:
            self._responder = responder

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self._responder = None
        self.prompt_cache.clear()
        self.batches.clear()

    def complete_batches(
        self,
        batch_id: str | None = None,
        *,
        custom_ids: Collection[str] | None = None,
        finalizing: bool = False,
    ) -> list[str]:
        """Process batches now: every batch in progress, or `batch_id`; returns their ids.

        Each pending request (or only `custom_ids`, which need `batch_id`) is answered as a
        synchronous request to its endpoint would be: the script, then the responder, after the
        rules. A batch whose requests are all answered ends (an OpenAI batch passes through
        `finalizing`, where `finalizing=True` holds it until the next call); a cancelling batch
        ends cancelled. Raises `BatchControlError` for an unknown batch or one already ended.
        """
        return self.batches.complete(
            self._answer_batched, batch_id, custom_ids, finalizing=finalizing
        )

    def expire_batches(self, batch_id: str | None = None) -> list[str]:
        """The 24-hour window of every batch in progress (or `batch_id`) closes now: requests
        answered so far keep their results, the rest are expired."""
        return self.batches.expire(batch_id)

    def _answer_batched(self, path: str, body: dict[str, Any], batch_id: str) -> Answered:
        """One request of a batch, answered as `path` would answer it synchronously."""
        wire = _API_ROUTES[path](body)
        request = RecordedRequest(
            api=wire.api,
            method="POST",
            path=path,
            headers={},
            body=body,
            stream=False,
            received_at=time.monotonic(),
            batch_id=batch_id,
        )
        self._record(request)
        behaviour = _refusal(wire) or self._next(request)
        while isinstance(behaviour, Hang):  # nobody waits on a batched request
            behaviour = behaviour.then or self._fallback(request)
        if isinstance(behaviour, StreamError):
            status = wire.error_status(behaviour.error_type)
            behaviour = Error(status, behaviour.message, error_type=behaviour.error_type)
        if isinstance(behaviour, Error):
            error = wire.error_body(
                behaviour.status, behaviour.message, behaviour.error_type, behaviour.param
            )
            return Answered(behaviour.status, error)
        return Answered(200, wire.message(self._answer(wire, behaviour)))

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _queued(self) -> int:
        with self._lock:
            return len(self._script)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self._api_key is None:
            return True
        bearer = headers.get("authorization", "")
        return bearer == f"Bearer {self._api_key}" or headers.get("x-api-key") == self._api_key

    def _next(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self._fallback(request)

    def _answer(self, wire: Wire, behaviour: Spoken) -> Answer:
        """What the model says, with the cache reads and writes the vendor would report."""
        answer = answer_for(behaviour, wire.max_output_tokens)
        if wire.api == "anthropic.messages":
            return replace(answer, usage=self.prompt_cache.anthropic(wire.body, answer.usage))
        if wire.api == "openai.responses":
            return replace(answer, usage=self.prompt_cache.openai(wire.body, answer.usage))
        return answer

    def _fallback(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            responder = self._responder or default_responder
        try:
            return responder(request)
        except Exception as exc:
            return Error(500, f"fake responder failed: {exc!r}")

    def _pause(self, seconds: float) -> bool:
        """Sleep unless the server stops first; False means it is stopping."""
        if seconds <= 0:
            return not self._stopping.is_set()
        return not self._stopping.wait(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vamu_tasks.testing.fake_llm",
        description="Serve a fake OpenAI/Anthropic API until SIGTERM or SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--api-key", default=None, help="reject requests without this key")
    parser.add_argument(
        "--ideas",
        action="store_true",
        help='answer "Inspire me" requests with valid ideas (default: echo the prompt)',
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = FakeLLMServer(
        host=args.host, port=args.port, latency=args.latency, api_key=args.api_key
    )
    if args.ideas:
        from vamu_tasks.testing.answers import ideas_responder

        server.set_responder(ideas_responder)
    with server:
        print(json.dumps({"url": server.url}), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
