"""`SkipHousekeeping`: no traces for beat's periodic tasks.

The reaper runs every 2 s and the outbox sweep every 15 s: each would make a trace of nothing.
What they send again starts a trace of its own instead (`provider.detached`).
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from vamu_tasks.features import REAP_TASK, SWEEP_TASK

HOUSEKEEPING_SPANS = frozenset(
    f"{operation}/{task}"
    for operation in ("apply_async", "run")
    for task in (REAP_TASK, SWEEP_TASK)
)


class SkipHousekeeping(Sampler):
    """Drops the housekeeping tasks' spans; every other span is the configured sampler's."""

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if name in HOUSEKEEPING_SPANS:
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"SkipHousekeeping{{{self._inner.get_description()}}}"
