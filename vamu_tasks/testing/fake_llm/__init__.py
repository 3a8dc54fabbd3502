"""A wire-faithful fake of the OpenAI Responses/Chat and Anthropic Messages HTTP APIs.

It refuses what the vendors refuse (`rules.py`: schema limits, tool-call pairing, required
fields, unknown models) with their own status and error JSON, and sends what they send,
including the awkward cases (`behaviours.py`). Modules: `behaviours` (what the model does),
`wire` (what the wires share), `openai_wire` and `anthropic_wire` (the vendors' JSON and SSE),
`rules` (what they refuse), `server` (HTTP and the control endpoints). The batch tiers:
`openai_batches` (Files and Batch API), `anthropic_batches` (Message Batches), `batches` (what they
share) and `batch_http` (their routes).
"""

from __future__ import annotations

from vamu_tasks.testing.fake_llm.batches import BatchControlError
from vamu_tasks.testing.fake_llm.behaviours import (
    Behaviour,
    DropStream,
    Error,
    Hang,
    MaxTokens,
    RecordedRequest,
    Refusal,
    Responder,
    StreamError,
    Text,
    ToolCall,
    Truncated,
    Turn,
    behaviour_from_dict,
    behaviour_to_dict,
    default_responder,
)
from vamu_tasks.testing.fake_llm.server import FakeLLMServer, main

__all__ = [
    "BatchControlError",
    "Behaviour",
    "DropStream",
    "Error",
    "FakeLLMServer",
    "Hang",
    "MaxTokens",
    "RecordedRequest",
    "Refusal",
    "Responder",
    "StreamError",
    "Text",
    "ToolCall",
    "Truncated",
    "Turn",
    "behaviour_from_dict",
    "behaviour_to_dict",
    "default_responder",
    "main",
]
