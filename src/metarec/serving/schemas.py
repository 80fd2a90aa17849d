"""Request and response bodies of the HTTP service (pydantic: a malformed body is a 422).

Numbers must be finite (``NaN`` and ``Infinity``, which Python's JSON parser accepts, are refused)
and unknown fields are refused, so a typo in a field name fails loudly instead of being ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
Text = Annotated[str, StringConstraints(max_length=10_000)]
CategoryPath = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Event(_Body):
    """One interaction. ``event_id`` is the client's key: re-sending it never duplicates."""

    event_id: Id
    user_id: Id
    item_id: Id
    timestamp: int | Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="unix seconds, or ISO-8601 text (UTC without an offset)"
    )
    event: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="view, click, cart, order, read, rating, ..."
    )
    rating: float | None = None
    weight: float | None = None


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
    year: float | None = None
    price: float | None = None
    attributes: dict[Id, Text | float | bool | list[Text]] = Field(
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
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="a model folder on the server's machine"
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
    status: Literal["live", "ready", "starting", "stopping"]
    model_version: str | None = None
    data_version: int | None = None
