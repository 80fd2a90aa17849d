"""The simulator's config and summary models, and the constants of what it writes."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from metarec.data.simulate.vocabulary import (
    _FIRST,
    _LAST,
    _N_BOOK_SUBDOMAINS,
    _PUBLISHER_HEADS,
    _PUBLISHER_TAILS,
    _SYLLABLES,
    LEAVES,
)

EVENTS: tuple[str, ...] = ("view", "click", "cart", "order")
POSITIVE_EVENTS: tuple[str, ...] = ("click", "cart", "order")
FILES: tuple[str, ...] = (
    "items.csv",
    "interactions.csv",
    "users.csv",
    "categories.csv",
    "metarec.toml",
)
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-49", "50-64", "65+")
AGE_BAND_SHARES: tuple[float, ...] = (0.15, 0.30, 0.28, 0.17, 0.10)
REGIONS: tuple[str, ...] = ("north", "south", "east", "west")


class SimulationConfig(BaseModel):
    """Sizes and knobs of the simulated bookstore (see the module docstring for the process).

    The defaults give about 3,000 users, 4,000 items, 22 leaf categories and 250k event rows,
    sized so that the whole demo runs in a few minutes on two cores.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # sizes
    n_users: int = Field(default=3000, ge=1)
    n_items: int = Field(default=4000, ge=1)
    n_authors: int = Field(default=1000, ge=1, le=len(_FIRST) * len(_LAST))
    n_publishers: int = Field(
        default=40, ge=_N_BOOK_SUBDOMAINS, le=len(_PUBLISHER_HEADS) * len(_PUBLISHER_TAILS)
    )  # at least one per book subdomain
    brands_per_category: int = Field(default=8, ge=1, le=len(_SYLLABLES) ** 2 // len(LEAVES))
    min_items_per_category: int = Field(default=80, ge=1)
    latent_dim: int = Field(default=16, ge=2)
    # time
    start_time: int = 1_640_995_200  # 2022-01-01T00:00:00Z
    span_days: int = Field(default=730, ge=1)
    initial_categories: int = Field(default=8, ge=1, le=len(LEAVES))
    last_launch_fraction: float = Field(default=0.5, gt=0, lt=1)
    # latent structure (stds per dimension; they add up in variance)
    category_std: tuple[float, float, float] = (0.5, 0.4, 0.4)  # domain, subdomain, leaf
    author_std: float = Field(default=0.4, ge=0)
    author_second_category_prob: float = Field(default=0.3, ge=0, le=1)
    author_productivity_sigma: float = Field(default=1.0, ge=0)
    publisher_std: float = Field(default=0.2, ge=0)
    publisher_span: int = Field(default=3, ge=1)
    author_publisher_loyalty: float = Field(default=0.8, ge=0, le=1)
    item_noise_std: float = Field(default=0.5, ge=0)
    quality_std: float = Field(default=1.0, ge=0)
    category_size_sigma: float = Field(default=0.25, ge=0)
    non_book_size_weight: float = Field(default=0.5, gt=0)  # a bookstore carries fewer other goods
    price_sigma: float = Field(default=0.35, ge=0)
    # users
    age_taste_weight: float = Field(default=0.3, ge=0)
    region_taste_weight: float = Field(default=0.15, ge=0)
    mean_visits_per_user: float = Field(default=16.0, gt=0)
    activity_sigma: float = Field(default=1.0, ge=0)
    interest_taste_weight: float = Field(default=1.5, ge=0)
    interest_concentration: float = Field(default=2.0, gt=0)
    # funnel
    mean_views_per_visit: float = Field(default=4.0, ge=1)
    max_views_per_visit: int = Field(default=12, ge=1)
    expose_quality: float = 1.0
    expose_affinity: float = 0.3
    click_bias: float = -2.2
    click_affinity: float = 1.0
    click_quality: float = 0.3
    cart_bias: float = -1.5
    cart_affinity: float = 0.6
    order_bias: float = -0.3
    order_affinity: float = 0.4
    price_sensitivity: float = Field(default=0.3, ge=0)
    rating_fraction: float = Field(default=0.2, ge=0, le=1)
    rating_bias: float = 3.0

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        if self.n_items < self.min_items_per_category * len(LEAVES):
            raise ValueError(
                f"n_items={self.n_items} is below min_items_per_category * {len(LEAVES)} "
                f"leaf categories = {self.min_items_per_category * len(LEAVES)}; raise n_items "
                "or lower min_items_per_category"
            )
        if self.age_taste_weight**2 + self.region_taste_weight**2 >= 1:
            raise ValueError(
                "age_taste_weight² + region_taste_weight² must be below 1 (they are shares of "
                "the taste variance); lower them"
            )
        return self


class CategoryLaunch(BaseModel):
    """One leaf category of the simulated store."""

    model_config = ConfigDict(frozen=True)

    category: str
    launch_time: int  # unix seconds; no event in the category happens before it
    n_items: int
    n_events: int


class SimulationSummary(BaseModel):
    """What :func:`simulate` wrote."""

    model_config = ConfigDict(frozen=True)

    seed: int
    n_users: int
    n_items: int
    n_events: int
    events: dict[str, int]  # rows per event type
    n_ratings: int
    categories: tuple[CategoryLaunch, ...]  # in launch order
    files: tuple[Path, ...]
