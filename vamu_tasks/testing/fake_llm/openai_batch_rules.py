"""What OpenAI's Files and Batch APIs refuse, each rule with the page it comes from.

Pages: platform.openai.com/docs/guides/batch (the input file), /docs/api-reference/files/create
and /docs/api-reference/batch/create. Wording recorded from the live API says so (llama-stack's
batch tests record the live answers they were written against); "not confirmed" marks wording
written in the API's style without such a record. A request refused outright raises
`RequestRefused`; an input file's problems are the `errors` of a batch that ends `failed`.
"""

from __future__ import annotations

import json
from typing import Any

from vamu_tasks.llm.pricing import OPENAI_MODELS, is_served
from vamu_tasks.testing.fake_llm.wire import RequestRefused

# The endpoints the API takes (openai-python's `BatchCreateParams`), and those the fake serves.
VENDOR_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/images/edits",
    "/v1/images/generations",
    "/v1/moderations",
    "/v1/responses",
    "/v1/videos",
)
SERVED_ENDPOINTS = ("/v1/responses", "/v1/chat/completions")
# Upload purposes whose File object openai-python can read back (`FileObject.purpose`).
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data")
FAKE_ORGANIZATION = "org-fakellm"
_JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "an integer"}
Request = tuple[str, dict[str, Any]]  # (custom_id, body)


def _missing(name: str) -> RequestRefused:
    # The synchronous endpoints' wording for a missing `model`; not confirmed here.
    return RequestRefused(
        400, "invalid_request_error", f"Missing required parameter: '{name}'.", name
    )


def _supported(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + ", and " + quoted[-1]
    return f"Supported values are: {listed}."


def check_upload(purpose: str | None, upload: tuple[str, bytes] | None) -> tuple[str, str, bytes]:
    """POST /v1/files: the purpose, file name and content, or the refusal."""
    if purpose is None or upload is None:
        raise _missing("purpose" if purpose is None else "file")
    if purpose not in PURPOSES:  # not confirmed
        message = f"Invalid value: '{purpose}'. {_supported(PURPOSES)}"
        raise RequestRefused(400, "invalid_value", message, "purpose")
    filename, content = upload
    if purpose == "batch" and not _looks_like_jsonl(filename, content):
        # Reported by many clients of the live API. Whether it also reads the content (the fake
        # reads the first line, as llama-stack's tests of the live API suggest) is not confirmed.
        raise RequestRefused(
            400, "invalid_request_error", "Invalid file format for Batch API. Must be .jsonl"
        )
    return purpose, filename, content


def _looks_like_jsonl(filename: str, content: bytes) -> bool:
    lines = [line for line in content.splitlines() if line.strip()]
    if not filename.endswith(".jsonl") or not lines:
        return False
    try:
        return isinstance(json.loads(lines[0]), dict)
    except ValueError:
        return False


def check_create(body: object) -> tuple[str, str, dict[str, str] | None]:
    """POST /v1/batches: the endpoint, input file id and metadata, or the refusal."""
    if not isinstance(body, dict):
        raise RequestRefused(
            400, "invalid_request_error", "We could not parse the JSON body of your request."
        )
    for name in ("input_file_id", "endpoint", "completion_window"):
        if name not in body:
            raise _missing(name)
    endpoint = body["endpoint"]
    if endpoint not in VENDOR_ENDPOINTS:
        # Recorded from the live API (when it took four endpoints; the list is the SDK's now).
        message = f"Invalid value: '{endpoint}'. {_supported(VENDOR_ENDPOINTS)}"
        raise RequestRefused(400, "invalid_value", message, "endpoint")
    if endpoint not in SERVED_ENDPOINTS:
        message = f"The fake LLM serves batches for {' and '.join(SERVED_ENDPOINTS)} only."
        raise RequestRefused(400, "invalid_value", message, "endpoint")
    window = body["completion_window"]
    if window != "24h":  # the endpoint refusal's wording; not confirmed for the window
        message = f"Invalid value: '{window}'. {_supported(('24h',))}"
        raise RequestRefused(400, "invalid_value", message, "completion_window")
    return endpoint, str(body["input_file_id"]), _metadata(body.get("metadata"))


def _metadata(metadata: object) -> dict[str, str] | None:
    """/docs/api-reference/batch/create: at most 16 pairs of strings. The refusal of a value that
    is not a string is recorded from the live API; the other two are not confirmed."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        got = _JSON_TYPES.get(type(metadata), "a string")
        message = f"Invalid type for 'metadata': expected an object, but got {got} instead."
        raise RequestRefused(400, "invalid_type", message, "metadata")
    if len(metadata) > 16:
        message = (
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(metadata)} properties instead."
        )
        raise RequestRefused(400, "invalid_request_error", message, "metadata")
    for key, value in metadata.items():
        if not isinstance(value, str):
            got = _JSON_TYPES.get(type(value), "null" if value is None else "a number")
            where = f"metadata.{key}"
            message = f"Invalid type for '{where}': expected a string, but got {got} instead."
            raise RequestRefused(400, "invalid_type", message, where)
    return dict(metadata)


def error(code: str, line: int | None, message: str, param: str | None = None) -> dict[str, Any]:
    """A `BatchError` of a failed batch's `errors.data`."""
    return {"code": code, "line": line, "message": message, "param": param}


def missing_file(file_id: str) -> dict[str, Any]:
    """Recorded from the live API: a batch of an unknown file is created, then fails."""
    message = (
        f"Cannot find file {file_id}, or organization {FAKE_ORGANIZATION} does not have access "
        "to it."
    )
    return error("invalid_request", None, message, "file_id")


def check_input(endpoint: str, content: bytes) -> tuple[list[Request], list[dict[str, Any]]]:
    """The validating step: the input file's requests, and one error a line that is wrong.

    Recorded from the live API: `invalid_json_line`, `missing_required_parameter`, `invalid_url`,
    `model_not_found`, `streaming_unsupported` (for Chat Completions) and a missing model or
    messages. `duplicate_custom_id` and `mismatched_model` (the guide: "each input file can only
    include requests to a single model") are worded as OpenAI-compatible batch APIs copy them;
    the method refusal is not confirmed.
    """
    requests: list[Request] = []
    errors: list[dict[str, Any]] = []
    for number, raw in enumerate(content.decode(errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        parsed = _parse_line(number, raw, endpoint)
        if isinstance(parsed, dict):
            errors.append(parsed)
            continue
        custom_id, body = parsed
        model = requests[0][1]["model"] if requests else body["model"]
        if any(custom_id == seen for seen, _ in requests):
            message = (
                f"The custom_id '{custom_id}' for this request is a duplicate of another request. "
                "The custom_id parameter must be unique for each request in a batch."
            )
            errors.append(error("duplicate_custom_id", number, message, "custom_id"))
        elif body["model"] != model:
            message = (
                f"The model '{body['model']}' for this request does not match the rest of the "
                "batch. Each batch must contain requests for a single model."
            )
            errors.append(error("mismatched_model", number, message, "body.model"))
        else:
            requests.append(parsed)
    return requests, errors


def _parse_line(number: int, raw: str, endpoint: str) -> Request | dict[str, Any]:
    """One input line as a request, or the first thing wrong with it."""
    try:
        request = json.loads(raw)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return error("invalid_json_line", number, "This line is not parseable as valid JSON.")
    for name in ("custom_id", "method", "url", "body"):
        if name not in request:
            message = f"Missing required parameter: '{name}'."
            return error("missing_required_parameter", number, message, name)
    if request["method"] != "POST":
        message = "The method for this request must be 'POST'."
        return error("invalid_request", number, message, "method")
    if request["url"] != endpoint:
        message = "The URL provided for this request does not match the batch endpoint."
        return error("invalid_url", number, message, "url")
    body = request["body"]
    if not isinstance(body, dict):
        return error("invalid_request", number, "Body must be a JSON object.", "body")
    return _body_problem(number, body, endpoint) or (str(request["custom_id"]), body)


def _body_problem(number: int, body: dict[str, Any], endpoint: str) -> dict[str, Any] | None:
    chat = endpoint == "/v1/chat/completions"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error("invalid_request", number, "Model parameter is required.", "body.model")
    if chat and "messages" not in body:
        message = "Messages parameter is required."
        return error("invalid_request", number, message, "body.messages")
    if body.get("stream"):
        api = "Chat Completions" if chat else "Responses"  # the Responses wording: not confirmed
        message = f"{api}: Streaming is not supported in the Batch API."
        return error("streaming_unsupported", number, message, "body.stream")
    if not is_served(OPENAI_MODELS, model):
        message = f"The provided model '{model}' is not supported by the Batch API."
        return error("model_not_found", number, message, "body.model")
    return None
