"""The NestJS internal API's events, search and errors, as vamu-tasks reads them.

`HttpNestApiClient` validates every answer with these models (and `UserContext` in
`vamu_tasks.domain`), and `context/openapi.py` generates docs/openapi/internal-api.json from
them, so the file NestJS builds against says exactly what the client accepts.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from vamu_tasks.domain import ApiModel

# What the search does when vamu-tasks leaves a parameter out (the fake API does the same).
DEFAULT_SEARCH_LIMIT = 10
MAX_SEARCH_LIMIT = 50
DEFAULT_RADIUS_KM = 25.0


class Event(ApiModel):
    """One event, as `GET /internal/events/{id}` and the search return it.

    The agent's tools hand the object to the model as it came, other fields included: send
    nothing here that the user may not see.
    """

    id: str = Field(min_length=1)
    title: str
    category: str
    starts_at: AwareDatetime = Field(
        description="RFC 3339 date-time with an offset, e.g. 2026-12-04T19:30:00Z."
    )
    venue: str
    city: str
    lat: float = Field(ge=-90, le=90, description="Latitude of the venue in degrees (WGS 84).")
    lng: float = Field(ge=-180, le=180, description="Longitude of the venue in degrees (WGS 84).")
    price_cents: int | None = Field(
        default=None,
        ge=0,
        description="Ticket price in cents of the local currency. Absent or null: none given.",
    )


class EventSearchResult(ApiModel):
    """`GET /internal/events/search`: the matching events, earliest `startsAt` first."""

    events: list[Event]


class EventSearchQuery(BaseModel):
    """The query of `GET /internal/events/search`. Every parameter is optional.

    vamu-tasks sends only what the agent's model asked for (the tool's own bounds are
    narrower: `limit` 1-20, `radiusKm` up to 200), with `from` and `to` always carrying an
    offset.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    q: str | None = Field(
        default=None,
        description="Text that the title, category, venue or city contains (any case).",
    )
    lat: float | None = Field(
        default=None, ge=-90, le=90, description="Centre latitude; sent together with lng."
    )
    lng: float | None = Field(
        default=None, ge=-180, le=180, description="Centre longitude; sent together with lat."
    )
    radius_km: float | None = Field(
        default=DEFAULT_RADIUS_KM,
        alias="radiusKm",
        gt=0,
        description="Search radius around lat/lng in km; only with lat and lng.",
    )
    from_: datetime | None = Field(
        default=None, alias="from", description="Events starting at or after this time."
    )
    to: datetime | None = Field(default=None, description="Events starting at or before this time.")
    limit: int | None = Field(
        default=DEFAULT_SEARCH_LIMIT,
        ge=1,
        le=MAX_SEARCH_LIMIT,
        description="Most events to return.",
    )

    @field_validator("from_", "to")
    @classmethod
    def _read_naive_times_as_utc(cls, value: datetime | None) -> datetime | None:
        # The model may write "2026-12-10T18:00"; the wire carries RFC 3339 with an offset.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class NestError(BaseModel):
    """The error body NestJS's exception filter sends (`HttpException`)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status_code: int = Field(alias="statusCode")
    message: str | list[str] = Field(
        description="What went wrong; a list of problems for a 400 from a ValidationPipe."
    )
    error: str | None = Field(default=None, description="The status phrase, e.g. Not Found.")
