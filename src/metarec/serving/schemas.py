"""Request and response bodies of the HTTP service (pydantic: a malformed body is a 422).

Numbers must be finite (``NaN`` and ``Infinity``, which Python's JSON parser accepts, are refused)
and within the range the store accepts (:data:`metarec.data.values.NUMBER_LIMITS`, shown in the
OpenAPI schema), ids and category paths hold no control characters, and unknown fields are
refused, so a typo in a field name fails loudly instead of being ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from metarec.data.values import MAX_TIME_VALUE, NUMBER_LIMITS

# No C0/C1 control characters (NUL, newline, escape...): such a name cannot be put in a URL path
# or a log line unambiguously (a category launched with one was then 404 on every path).
_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"
Id = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=256, pattern=_PRINTABLE),
]
Text = Annotated[str, StringConstraints(max_length=10_000)]
CategoryPath = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=512, pattern=_PRINTABLE),
]
Attribute = Annotated[float, Field(ge=-1e12, le=1e12)]


def _bounded(column: str, description: str) -> Any:
    """An optional number field bounded like the store's column of that name."""
    low, high = NUMBER_LIMITS[column]
    return Field(default=None, ge=low, le=high, description=description)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Event(_Body):
    """One interaction. ``event_id`` is the client's key: re-sending it never duplicates."""

    event_id: Id
    user_id: Id
    item_id: Id
    timestamp: (
        Annotated[int, Field(gt=-MAX_TIME_VALUE, lt=MAX_TIME_VALUE)]
        | Annotated[str, StringConstraints(max_length=64)]
        | None
    ) = Field(default=None, description="unix seconds, or ISO-8601 text (UTC without an offset)")
    event: Annotated[str, StringConstraints(max_length=64, pattern=_PRINTABLE)] | None = Field(
        default=None, description="view, click, cart, order, read, rating, ..."
    )
    rating: float | None = _bounded("rating", "explicit rating")
    weight: float | None = _bounded(
        "weight", "how much this positive counts (default: by event kind)"
    )


class EventsRequest(_Body):
    events: list[Event] = Field(min_length=1)


class RejectedRow(BaseModel):
    """Why one row of a batch was refused."""

    index: int = Field(description="0-based position in the batch")
    column: str
    reason: str
    value: str | None = None


class EventsResponse(BaseModel):
    received: int
    inserted: int
    duplicates: int = Field(description="events whose event_id was already stored")
    rejected: list[RejectedRow] = Field(
        default_factory=list, description="bad rows skipped (only with skip_bad_rows=true)"
    )


class Item(_Body):
    """One item of a launched category (the items table of PROTOCOL.md §1)."""

    item_id: Id
    title: Text | None = None
    description: Text | None = None
    authors: Text | list[Text] | None = Field(default=None, description="'|'-separated or a list")
    publisher: Text | None = None
    brand: Text | None = None
    year: float | None = _bounded("year", "e.g. of publication")
    price: float | None = _bounded("price", "in any one currency")
    attributes: dict[Id, Text | bool | Attribute | list[Text]] = Field(
        default_factory=dict, description="any other attribute (e.g. genres), kept as extra"
    )


class LaunchRequest(_Body):
    category: CategoryPath = Field(description="category path, e.g. 'Books > Poetry'")
    description: Text | None = None
    items: list[Item] = Field(min_length=1)


class LaunchResponse(BaseModel):
    category: str
    n_items: int = Field(description="items the category has now")
    inserted: int
    updated: int
    unchanged: int


class AdaptationInfo(BaseModel):
    version: int
    support_size: int = Field(description="support positives the adaptation used")
    n_users: int
    adapted_at: float = Field(description="unix seconds")
    seconds: float = Field(description="wall time of the inner loop")
    as_of: int | None = Field(description="only interactions up to this unix time were used")


JobState = Literal["queued", "running", "done", "failed"]


class JobInfo(BaseModel):
    job_id: str
    kind: Literal["adapt", "swap"]
    category: str | None
    state: JobState
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    adaptation_version: int | None = None


class CategoryStatus(BaseModel):
    category: str
    n_items: int
    n_users: int = Field(description="users with a positive in the category")
    support_size: int = Field(description="positives in the category so far")
    model_version: str
    adaptation: AdaptationInfo | None
    job: JobInfo | None = Field(description="the category's latest adaptation job")
    events_since_adaptation: int


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    title: str | None


class Recommendation(BaseModel):
    user_id: str
    category: str
    model_version: str
    adaptation_version: int | None
    fallback: Literal["popularity", "zero-shot"] | None = Field(
        description="null when personalised with adapted parameters"
    )
    fallback_reason: str | None
    items: list[RecommendedItem]


class ModelSwapRequest(_Body):
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=_PRINTABLE)] = (
        Field(description="a model folder under one of the service's model roots")
    )


class ModelSwapResponse(BaseModel):
    model_version: str
    previous_version: str
    adapted_categories: list[str] = Field(description="categories the new model has adapted")
    readapting: list[str] = Field(description="categories queued for re-adaptation")
    seconds: float


class Error(BaseModel):
    error: str = Field(description="the error's class, e.g. UnknownCategoryError")
    detail: str
    rejected: list[RejectedRow] | None = None


class Health(BaseModel):
    status: Literal["live", "ready", "starting", "stopping", "stuck"]
    model_version: str | None = None
    data_version: int | None = None
    detail: str | None = Field(default=None, description="why not ready, when stuck")
