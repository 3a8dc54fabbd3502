"""The batch APIs over HTTP: their routes, multipart uploads, and answers with the vendors' errors.

OpenAI: `POST /v1/files`, `GET /v1/files/{id}` and `/content`, `POST /v1/batches`,
`GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`. Anthropic: `POST /v1/messages/batches`,
`GET /v1/messages/batches/{id}`, `POST …/{id}/cancel`, `GET …/{id}/results`.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from vamu_tasks.testing.fake_llm.anthropic_batches import AnthropicBatches
from vamu_tasks.testing.fake_llm.anthropic_wire import AnthropicWire
from vamu_tasks.testing.fake_llm.batches import Answerer, BatchControlError
from vamu_tasks.testing.fake_llm.openai_batches import OpenAIBatches
from vamu_tasks.testing.fake_llm.openai_wire import ChatWire
from vamu_tasks.testing.fake_llm.wire import RequestRefused, Wire

_ID = r"(?P<id>[A-Za-z0-9_-]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/v1/files"), "openai.upload"),
    ("GET", re.compile(rf"/v1/files/{_ID}"), "openai.file"),
    ("GET", re.compile(rf"/v1/files/{_ID}/content"), "openai.content"),
    ("POST", re.compile(r"/v1/batches"), "openai.create"),
    ("GET", re.compile(rf"/v1/batches/{_ID}"), "openai.retrieve"),
    ("POST", re.compile(rf"/v1/batches/{_ID}/cancel"), "openai.cancel"),
    ("POST", re.compile(r"/v1/messages/batches"), "anthropic.create"),
    ("GET", re.compile(rf"/v1/messages/batches/{_ID}"), "anthropic.retrieve"),
    ("POST", re.compile(rf"/v1/messages/batches/{_ID}/cancel"), "anthropic.cancel"),
    ("GET", re.compile(rf"/v1/messages/batches/{_ID}/results"), "anthropic.results"),
]
_NOT_JSON = "We could not parse the JSON body of your request."


@dataclass(frozen=True)
class Route:
    action: str
    id: str

    @property
    def vendor(self) -> str:
        return self.action.split(".", 1)[0]


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: a JSON payload, or bytes (a file's content, a results file)."""

    status: int
    payload: object
    headers: dict[str, str]
    content_type: str = "application/json"


def route(method: str, path: str) -> Route | None:
    for verb, pattern, action in _ROUTES:
        found = pattern.fullmatch(path) if verb == method else None
        if found is not None:
            return Route(action, found.groupdict().get("id") or "")
    return None


class BatchApis:
    """Both vendors' batch stores behind one HTTP entry and one control."""

    def __init__(self) -> None:
        self.openai = OpenAIBatches()
        self.anthropic = AnthropicBatches()

    def clear(self) -> None:
        self.openai.clear()
        self.anthropic.clear()

    def custom_ids(self) -> dict[str, list[str]]:
        """Every batch either vendor holds, with its requests' custom_ids (for tests)."""
        return self.openai.custom_ids() | self.anthropic.custom_ids()

    def serve(
        self, found: Route, headers: dict[str, str], raw: bytes, *, authorized: bool
    ) -> Reply:
        wire: Wire = AnthropicWire({}) if found.vendor == "anthropic" else ChatWire({})
        if not authorized:  # the synchronous endpoints' refusal
            return Reply(401, wire.error_body(401, wire.auth_message, None), wire.headers())
        try:
            payload = self._act(found, headers, raw)
        except RequestRefused as refused:
            body = wire.error_body(
                refused.status, refused.message, refused.error_type, refused.param
            )
            return Reply(refused.status, body, wire.headers())
        if isinstance(payload, bytes):
            # The content types are not confirmed; the SDKs read the bytes whatever they say.
            binary = "application/binary" if found.vendor == "anthropic" else None
            return Reply(200, payload, wire.headers(), binary or "application/octet-stream")
        return Reply(200, payload, wire.headers())

    def _act(self, found: Route, headers: dict[str, str], raw: bytes) -> object:
        base_url = "http://" + headers.get("host", "127.0.0.1")
        match found.action:
            case "openai.upload":
                return self.openai.upload(*_multipart(headers.get("content-type", ""), raw))
            case "openai.file":
                return self.openai.file(found.id)
            case "openai.content":
                return self.openai.content(found.id)
            case "openai.create":
                return self.openai.create(_json(raw))
            case "openai.retrieve":
                return self.openai.retrieve(found.id)
            case "openai.cancel":
                return self.openai.cancel(found.id)
        return self._anthropic(found, raw, base_url)

    def _anthropic(self, found: Route, raw: bytes, base_url: str) -> object:
        if found.action == "anthropic.create":
            return self.anthropic.create(_json(raw), base_url)
        if found.action == "anthropic.cancel":
            return self.anthropic.cancel(found.id, base_url)
        if found.action == "anthropic.results":
            return self.anthropic.results(found.id)
        return self.anthropic.retrieve(found.id, base_url)

    def complete(
        self,
        answer: Answerer,
        batch_id: str | None = None,
        custom_ids: Collection[str] | None = None,
        *,
        finalizing: bool = False,
    ) -> list[str]:
        if custom_ids is not None and batch_id is None:
            raise BatchControlError("custom_ids needs the id of their batch")
        if batch_id is None:
            return self.openai.complete(answer, finalizing=finalizing) + self.anthropic.complete(
                answer
            )
        if batch_id.startswith("msgbatch_"):
            return self.anthropic.complete(answer, batch_id, custom_ids)
        return self.openai.complete(answer, batch_id, custom_ids, finalizing=finalizing)

    def expire(self, batch_id: str | None = None) -> list[str]:
        if batch_id is None:
            return self.openai.expire() + self.anthropic.expire()
        if batch_id.startswith("msgbatch_"):
            return self.anthropic.expire(batch_id)
        return self.openai.expire(batch_id)


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        raise RequestRefused(400, "invalid_request_error", _NOT_JSON) from None


def _multipart(content_type: str, raw: bytes) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """The form fields and the uploaded file (name, bytes) of a multipart/form-data body."""
    if not content_type.startswith("multipart/form-data"):
        # Not confirmed: the API's answer to a JSON upload.
        raise RequestRefused(
            400, "invalid_request_error", "Missing required parameter: 'file'.", "file"
        )
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    head = b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
    message = parser.parsebytes(head + raw)
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data: Any = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if name == "file":
            upload = (filename or "upload", bytes(data))
        elif isinstance(name, str):
            fields[name] = bytes(data).decode()
    return fields, upload
