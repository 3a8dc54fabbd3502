"""A real HTTP webhook receiver that checks `X-Vamu-Signature` the way an app backend would."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from vamu_tasks.notify.signing import SIGNATURE_HEADER, SignatureError, verify_signature


class WebhookReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.deliveries: list[dict[str, Any]] = []
        # What was delivered, as received: (raw body, X-Vamu-Signature), for clients/node.
        self.raw_deliveries: list[tuple[bytes, str]] = []
        self.rejected: list[str] = []
        self.fail_with: int | None = None
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver._receive(body, self.headers.get(SIGNATURE_HEADER))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/vamu"

    def _receive(self, body: bytes, header: str | None) -> int:
        if self.fail_with is not None:
            return self.fail_with
        try:
            verify_signature(body, header, self.secret)
        except SignatureError as exc:
            self.rejected.append(str(exc))
            return 401
        with self._changed:
            self.deliveries.append(json.loads(body))
            self.raw_deliveries.append((body, header or ""))
            self._changed.notify_all()
        return 204

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for delivery in self.deliveries:
                    if predicate(delivery):
                        return delivery
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching webhook delivery; got {self.deliveries}")
                self._changed.wait(left)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
