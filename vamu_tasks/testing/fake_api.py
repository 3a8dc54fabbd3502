"""A fake of the NestJS internal API served on loopback HTTP, shared by tests, bench and demo."""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

from vamu_tasks.context.models import DEFAULT_RADIUS_KM, DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT
from vamu_tasks.context.samples import SAMPLE_EVENTS, SAMPLE_USERS

EARTH_RADIUS_KM = 6371.0088

_USER_CONTEXT = re.compile(r"^/internal/users/(?P<user_id>[^/]+)/context$")
_EVENT = re.compile(r"^/internal/events/(?P<event_id>[^/]+)$")
_SEARCH = "/internal/events/search"

Json = dict[str, Any]

GENERATED_USER_PREFIX = "u-bench-"


def generated_users(count: int) -> dict[str, Json]:
    """`count` users `u-bench-00001`, `u-bench-00002`, ..., each shaped as a sample user (the
    samples in turn): enough users that a load test stays under the per-user hourly quota."""
    if count < 0:
        raise ValueError("count must not be negative")
    shapes = list(SAMPLE_USERS.values())
    users: dict[str, Json] = {}
    for n in range(1, count + 1):
        user_id = f"{GENERATED_USER_PREFIX}{n:05d}"
        shape = shapes[(n - 1) % len(shapes)]
        users[user_id] = {
            **copy.deepcopy(shape),
            "userId": user_id,
            "displayName": f"Bench User {n:05d}",
        }
    return users


@dataclass(frozen=True)
class RecordedApiRequest:
    """One request the fake received, as the client sent it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class _Failure:
    remaining: int
    status: int
    hang: float
    path_prefix: str


class _BadRequest(Exception):
    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def _error_body(status: int, message: str | list[str]) -> Json:
    # NestJS omits `error` for its built-in 401 but names it for 400/404.
    body: Json = {"statusCode": status, "message": message}
    if status in (HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND):
        body["error"] = _phrase(status)
    return body


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = phi2 - phi1, math.radians(lng2 - lng1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


@dataclass(frozen=True)
class _Search:
    q: str | None
    lat: float | None
    lng: float | None
    radius_km: float
    start: datetime | None
    end: datetime | None
    limit: int

    @classmethod
    def parse(cls, query: dict[str, str]) -> _Search:
        errors: list[str] = []
        lat = _number(query, "lat", errors, low=-90, high=90)
        lng = _number(query, "lng", errors, low=-180, high=180)
        radius = _number(query, "radiusKm", errors, low=None, high=None)
        limit = _number(query, "limit", errors, low=1, high=MAX_SEARCH_LIMIT, integer=True)
        if radius is not None and radius <= 0:
            errors.append("radiusKm must be a positive number")
        has_lat, has_lng = bool(query.get("lat")), bool(query.get("lng"))
        if has_lat != has_lng:
            errors.append("lat and lng must be given together")
        if query.get("radiusKm") and not (has_lat or has_lng):
            errors.append("radiusKm requires lat and lng")
        start = _timestamp(query, "from", errors)
        end = _timestamp(query, "to", errors)
        if errors:
            raise _BadRequest(errors)
        return cls(
            q=query.get("q") or None,
            lat=lat,
            lng=lng,
            radius_km=DEFAULT_RADIUS_KM if radius is None else radius,
            start=start,
            end=end,
            limit=DEFAULT_SEARCH_LIMIT if limit is None else int(limit),
        )

    def matches(self, event: Json) -> bool:
        if self.q is not None:
            needle = self.q.casefold()
            fields = (event.get(name, "") for name in ("title", "category", "venue", "city"))
            if not any(needle in str(value).casefold() for value in fields):
                return False
        if self.lat is not None and self.lng is not None:
            distance = _haversine_km(self.lat, self.lng, event["lat"], event["lng"])
            if distance > self.radius_km:
                return False
        starts_at = _parse_time(event["startsAt"])
        if self.start is not None and starts_at < self.start:
            return False
        return self.end is None or starts_at <= self.end

    def run(self, events: list[Json]) -> list[Json]:
        found = sorted(
            (e for e in events if self.matches(e)), key=lambda e: _parse_time(e["startsAt"])
        )
        return copy.deepcopy(found[: self.limit])


def _number(
    query: dict[str, str],
    name: str,
    errors: list[str],
    *,
    low: float | None,
    high: float | None,
    integer: bool = False,
) -> float | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        errors.append(f"{name} must be a number conforming to the specified constraints")
        return None
    if integer and not value.is_integer():
        errors.append(f"{name} must be an integer number")
    if low is not None and value < low:
        errors.append(f"{name} must not be less than {low:g}")
    if high is not None and value > high:
        errors.append(f"{name} must not be greater than {high:g}")
    return value


def _timestamp(query: dict[str, str], name: str, errors: list[str]) -> datetime | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        return _parse_time(raw)
    except ValueError:
        errors.append(f"{name} must be a valid ISO 8601 date string")
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: FakeNestApi) -> None:
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that times out or hangs up mid-response is expected here, not a fault.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; Nagle plus delayed ACK would stall each by ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        api = self.server.api
        split = urlsplit(self.path)
        # Match routes on the raw path and decode each parameter, as Express does.
        path = split.path
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, body = api._handle(RecordedApiRequest(self.command, path, query, headers))
        self._send(status, body)

    def _send(self, status: int, body: Json) -> None:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


class FakeNestApi:
    """The NestJS internal API (user context, event search, event by id) on a loopback port."""

    def __init__(
        self,
        *,
        users: dict[str, dict[str, Any]] | None = None,
        events: list[dict[str, Any]] | None = None,
        token: str = "test-api-token",
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
    ) -> None:
        self._initial_users = copy.deepcopy(SAMPLE_USERS if users is None else users)
        self._initial_events = copy.deepcopy(SAMPLE_EVENTS if events is None else events)
        self.users: dict[str, dict[str, Any]] = copy.deepcopy(self._initial_users)
        self.events: list[dict[str, Any]] = copy.deepcopy(self._initial_events)
        self.token = token
        self.latency = latency
        self._address = (host, port)
        self._lock = threading.Lock()
        self._requests: list[RecordedApiRequest] = []
        self._failures: list[_Failure] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self._address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-nest-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        with server.connections_lock:
            open_connections = list(server.connections)
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeNestApi is not started")
        return f"http://{self._address[0]}:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[RecordedApiRequest]:
        with self._lock:
            return list(self._requests)

    def fail_next(
        self, count: int = 1, *, status: int = 503, hang: float = 0.0, path_prefix: str = ""
    ) -> None:
        """Make the next `count` requests under `path_prefix` answer `status`, after `hang` s."""
        if count <= 0:
            return
        with self._lock:
            self._failures.append(_Failure(count, status, hang, path_prefix))

    def reset(self) -> None:
        """Forget recorded requests and pending failures; restore the initial users and events."""
        with self._lock:
            self._requests.clear()
            self._failures.clear()
        self.users.clear()
        self.users.update(copy.deepcopy(self._initial_users))
        self.events[:] = copy.deepcopy(self._initial_events)

    def _take_failure(self, path: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if path.startswith(failure.path_prefix):
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                    return failure
        return None

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and credentials.strip() == self.token

    def _handle(self, request: RecordedApiRequest) -> tuple[int, Json]:
        with self._lock:
            self._requests.append(request)
        failure = self._take_failure(request.path)
        if self.latency > 0:
            self._stopping.wait(self.latency)
        if failure is not None:
            if failure.hang > 0:
                self._stopping.wait(failure.hang)
            if failure.status != HTTPStatus.OK:
                return failure.status, _error_body(failure.status, _phrase(failure.status))
        return self._route(request)

    def _route(self, request: RecordedApiRequest) -> tuple[int, Json]:
        handler: Callable[[], tuple[int, Json]] | None = None
        if request.method == "GET":
            handler = self._resolve(request)
        if handler is None:
            return 404, _error_body(404, f"Cannot {request.method} {request.path}")
        if not self._authorized(request.headers):
            return 401, _error_body(401, "Unauthorized")
        return handler()

    def _resolve(self, request: RecordedApiRequest) -> Callable[[], tuple[int, Json]] | None:
        if request.path == _SEARCH:
            return lambda: self._search(request.query)
        if match := _USER_CONTEXT.match(request.path):
            user_id = unquote(match["user_id"])
            return lambda: self._user_context(user_id)
        if match := _EVENT.match(request.path):
            event_id = unquote(match["event_id"])
            return lambda: self._event(event_id)
        return None

    def _user_context(self, user_id: str) -> tuple[int, Json]:
        user = self.users.get(user_id)
        if user is None:
            return 404, _error_body(404, "User not found")
        return 200, copy.deepcopy(user)

    def _event(self, event_id: str) -> tuple[int, Json]:
        for event in self.events:
            if event["id"] == event_id:
                return 200, copy.deepcopy(event)
        return 404, _error_body(404, "Event not found")

    def _search(self, query: dict[str, str]) -> tuple[int, Json]:
        try:
            search = _Search.parse(query)
        except _BadRequest as exc:
            return 400, _error_body(400, exc.messages)
        return 200, {"events": search.run(list(self.events))}


def main(argv: list[str] | None = None) -> None:
    """Serve the fake until SIGTERM or SIGINT, announcing its URL as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m vamu_tasks.testing.fake_api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="test-api-token")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument(
        "--users",
        type=int,
        default=0,
        metavar="N",
        help="also serve N generated users u-bench-00001... (shaped as the sample users)",
    )
    args = parser.parse_args(argv)
    if args.users < 0:
        parser.error("--users must not be negative")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    users = {**SAMPLE_USERS, **generated_users(args.users)}
    api = FakeNestApi(
        users=users, host=args.host, port=args.port, token=args.token, latency=args.latency
    )
    with api:
        print(json.dumps({"url": api.url}), flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
