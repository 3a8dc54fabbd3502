"""The agent's allow-listed tools: read-only lookups that run, proposals that never do.

A tool the model names that is not in `TOOLS`, or arguments that do not validate, come back to
the model as an error result; nothing outside this module can be called.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vamu_tasks.domain import ToolCall, ToolSpec
from vamu_tasks.ports import EventsClient, UserContextClient


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchEventsArgs(_Args):
    q: str | None = Field(default=None, max_length=200, description="Words to look for")
    lat: float | None = Field(default=None, ge=-90, le=90)
    lng: float | None = Field(default=None, ge=-180, le=180)
    radiusKm: float | None = Field(default=None, gt=0, le=200)
    from_: datetime | None = Field(default=None, alias="from", description="ISO-8601 start")
    to: datetime | None = Field(default=None, description="ISO-8601 end")
    limit: int = Field(default=5, ge=1, le=20)


class GetEventArgs(_Args):
    eventId: str = Field(min_length=1, max_length=64)


class NoArgs(_Args):
    pass


class ProposeRsvpArgs(_Args):
    eventId: str = Field(min_length=1, max_length=64)
    note: str | None = Field(default=None, max_length=300)


class ProposeCreateEventArgs(_Args):
    title: str = Field(min_length=1, max_length=200)
    startsAt: datetime
    venue: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=1000)


class ProposeMessageArgs(_Args):
    toUserId: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1, max_length=500)


@dataclass(frozen=True)
class ToolContext:
    """What a tool may touch: the run's own user, and read-only API clients."""

    user_id: str
    events: EventsClient
    users: UserContextClient


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[_Args]
    run: Callable[[Any, ToolContext], Any] | None  # None: a proposal, never executed

    @property
    def spec(self) -> ToolSpec:
        schema = self.args.model_json_schema(by_alias=True)
        schema.pop("title", None)
        return ToolSpec(self.name, self.description, schema)

    @property
    def is_proposal(self) -> bool:
        return self.run is None


def _search(args: SearchEventsArgs, ctx: ToolContext) -> Any:
    params = args.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {"events": ctx.events.search_events(**params)}


def _event(args: GetEventArgs, ctx: ToolContext) -> Any:
    return ctx.events.get_event(args.eventId) or {"error": f"no event {args.eventId!r}"}


def _my_context(_args: NoArgs, ctx: ToolContext) -> Any:
    # Only the run's own user: the model cannot ask for anyone else's profile.
    return ctx.users.get_context(ctx.user_id).model_dump(mode="json", by_alias=True)


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in [
        Tool(
            "search_events",
            "Search upcoming events in the VAMU app by words, place and dates. Use it first "
            "for any goal about finding something to do. `q` matches titles, categories, "
            "venues and cities; give `lat`, `lng` and `radiusKm` together to search around a "
            "place, and `from`/`to` (ISO-8601) for a date range. Returns up to `limit` events "
            "(id, title, category, startsAt, venue, city, price); an empty list means nothing "
            "matched, so try fewer or broader words.",
            SearchEventsArgs,
            _search,
        ),
        Tool(
            "get_event",
            "Get one event's full details by its id (as returned by search_events): "
            "description, venue, start time and price. Use it before recommending or "
            "proposing an event, to check it fits the user's goal. An unknown id returns an "
            "error you can tell the user about.",
            GetEventArgs,
            _event,
        ),
        Tool(
            "get_my_context",
            "Get the profile of the user you are helping: display name, city, location, "
            "time zone, locale, interests and the events they went to recently. Use it when "
            "the goal depends on where they are or what they like. It takes no arguments and "
            "only ever returns this user's own profile.",
            NoArgs,
            _my_context,
        ),
        Tool(
            "propose_rsvp",
            "Propose that the user RSVPs to an event. Nothing is booked: the app shows the "
            "proposal and the user confirms it. Use it only for an event you have checked "
            "with get_event, and add a short note saying why it fits.",
            ProposeRsvpArgs,
            None,
        ),
        Tool(
            "propose_create_event",
            "Propose creating a new event the user would host, with a title, start time, "
            "venue and description. Nothing is created: the app shows the proposal and the "
            "user confirms it. Use it when the goal is to organise something, not to find "
            "an existing event.",
            ProposeCreateEventArgs,
            None,
        ),
        Tool(
            "propose_message",
            "Propose a short message from the user to another VAMU user, for example to "
            "invite a friend to an event. Nothing is sent: the app shows the draft and the "
            "user confirms it. Keep it friendly and under 500 characters.",
            ProposeMessageArgs,
            None,
        ),
    ]
}


@dataclass(frozen=True)
class ToolOutcome:
    content: str  # what the model reads
    is_error: bool
    proposal: dict[str, Any] | None = None


def run_tool(call: ToolCall, ctx: ToolContext, *, max_chars: int = 4000) -> ToolOutcome:
    """Run one allow-listed tool; every refusal or failure is an error result for the model."""
    tool = TOOLS.get(call.name)
    if tool is None:
        allowed = ", ".join(sorted(TOOLS))
        return ToolOutcome(f"Unknown tool {call.name!r}. Allowed tools: {allowed}.", True)
    try:
        raw = json.loads(call.arguments or "{}")
        args = tool.args.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        return ToolOutcome(f"Invalid arguments for {call.name}: {_describe(exc)}", True)
    if tool.run is None:
        proposal = {
            "action": tool.name.removeprefix("propose_"),
            "arguments": args.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        return ToolOutcome(
            "Proposal recorded; the user will confirm it in the app. It has not been carried out.",
            False,
            proposal,
        )
    try:
        value = tool.run(args, ctx)
    except Exception as exc:  # the model gets the failure as data and may try another way
        return ToolOutcome(f"{call.name} failed: {type(exc).__name__}: {exc}"[:500], True)
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > max_chars:
        text = text[:max_chars] + "…(truncated)"
    return ToolOutcome(text, False)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)[:5]
        )
    return "arguments are not a JSON object"
