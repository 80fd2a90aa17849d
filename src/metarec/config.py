"""Typed, frozen configuration: one model per part of the pipeline, loadable from TOML.

A typo fails when the config loads (``extra="forbid"``, ``Literal`` fields), not an hour into
training. Run options (paths, device, progress bars) are not config: they are function arguments.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from metarec.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeedbackConfig(_Frozen):
    """What counts as a positive, and how much each interaction weighs (PROTOCOL.md §1)."""

    positive_threshold: float = 4.0
    positive_events: tuple[str, ...] | None = None  # None: every event is a positive
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "view": 0.25,
            "click": 0.5,
            "cart": 0.75,
            "order": 1.0,
            "read": 1.0,
            "rating": 1.0,
        }
    )
    default_event_weight: float = 1.0


class FeatureConfig(_Frozen):
    """Item and user feature encoding (features/)."""

    max_vocab_per_field: int = Field(
        default=64, ge=1
    )  # most frequent tokens of a field get own slots
    oov_buckets: int = Field(default=8, ge=1)  # the rest hash into this many slots per field
    numeric_fields: tuple[str, ...] = ("year", "price")
    categorical_fields: tuple[str, ...] = ("authors", "publisher", "brand")
    extra_fields: tuple[str, ...] = ("genres",)  # multi-valued extras, `|`-separated
    cf_rank: int = Field(
        default=32, ge=0
    )  # collaborative factors from the visible categories (0: off)
    cf_power: float = -1.0  # singular-value exponent of the factors; -1 whitens (features/cf.py)
    # Text features (features/text.py): titles, descriptions and category names embedded with
    # all-MiniLM-L6-v2 (pip extra `text`), cached in the store, PCA-projected to text_dim.
    text: bool = False
    text_model: Literal["all-MiniLM-L6-v2"] = "all-MiniLM-L6-v2"
    text_dim: int = Field(default=16, ge=1)  # PCA components fitted on the training items


class TaskConfig(_Frozen):
    """How tasks are cut from categories (tasks/, PROTOCOL.md §2)."""

    kind: Literal["category", "user"] = "category"
    shots: int = Field(default=5, ge=0)  # support positives per user at evaluation / launch
    train_shots: tuple[int, ...] = (1, 3, 5, 10)  # sampled per meta-training task
    min_users: int = Field(default=20, ge=1)
    negatives: int = Field(default=4, ge=1)  # sampled negatives per positive row
    max_support: int = Field(
        default=512, ge=1
    )  # rows per task after padding (positives + negatives)
    max_query: int = Field(default=512, ge=1)


class ModelConfig(_Frozen):
    """The scorer: a three-layer MLP head over user, item and interaction features."""

    hidden: tuple[int, ...] = (64, 32)
    # Category-conditioned initialisation (models/conditioning.py): "film" modulates every
    # hidden unit of the meta-initialisation by a scale and shift computed from the category's
    # features before any interaction; film_hidden is the width of that hypernetwork.
    condition: Literal["none", "film"] = "none"
    film_hidden: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.condition == "film" and not self.hidden:
            raise ValueError(
                "model.condition = 'film' modulates hidden units and model.hidden is empty; "
                "add a hidden layer or set model.condition = 'none'"
            )
        return self


class MetaConfig(_Frozen):
    """Meta-learning: the inner loop (adaptation) and the outer loop (meta-training).

    ``algorithm`` lists exactly the keys of :data:`metarec.meta.ALGORITHMS`; the fields after
    ``weight_decay`` are read by one algorithm each, or choose how training is computed.
    """

    algorithm: Literal["maml", "fomaml", "meta_sgd", "reptile", "anil", "melu_local"] = "maml"
    first_order: bool = False
    inner_steps: int = Field(default=5, ge=0)
    inner_lr: float = Field(default=0.1, gt=0)  # Meta-SGD: the initial value of every learned rate
    outer_lr: float = Field(default=3e-3, gt=0)  # Reptile: its outer step (Adam follows it)
    meta_batch_size: int = Field(default=16, ge=1)
    meta_steps: int = Field(default=300, ge=1)
    weight_decay: float = Field(default=0.0, ge=0)
    anil_head_layers: int = Field(default=1, ge=1)  # ANIL: trailing scorer layers that adapt
    melu_frozen_layers: int = Field(default=1, ge=1)  # MeLU: leading layers fixed in the inner loop
    batching: Literal["bmm", "vmap"] = "bmm"  # training: hand-batched matmuls, or vmap(adapt)
    compile: bool = False  # training: torch.compile the meta-gradient (minutes of compile)


class TrainConfig(_Frozen):
    """Everything `metarec train` needs besides paths."""

    seed: int = Field(default=0, ge=0)  # numpy's generators refuse negative seeds
    # what `metarec train` fits: "auto" both the MLP meta-learner (meta.algorithm) and
    # metarec-ridge, keeping the better on validation; "mlp" or "ridge" only that one
    method: Literal["auto", "mlp", "ridge"] = "auto"
    feedback: FeedbackConfig = FeedbackConfig()
    features: FeatureConfig = FeatureConfig()
    tasks: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    meta: MetaConfig = MetaConfig()
    hold_out: tuple[str, ...] = ()  # categories sealed from meta-training

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.tasks.max_support < self.tasks.negatives + 1:
            raise ValueError("tasks.max_support must hold at least one positive and its negatives")
        return self


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Load a :class:`TrainConfig` from TOML, then apply top-level keyword overrides.

    Raises:
        ConfigError: the file is missing, not TOML, or has unknown or invalid keys.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid config{where}: {describe(exc)}") from exc


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], values: dict[str, Any], what: str = "option") -> M:
    """``model`` validated from ``values`` (command-line options, a copy with updates), a
    :class:`~metarec.errors.ConfigError` naming each bad field otherwise.

    ``model_copy(update=...)`` does not validate, so an update from user input goes through
    here: a negative step count must fail now, not as an unreadable model after training.
    """
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"invalid {what}: {describe(exc)}") from exc


def describe(exc: ValidationError, hide: Collection[str] = ()) -> str:
    """Pydantic's errors as one line: each field, what was wrong, and the value given (not for
    the fields in ``hide``: secrets)."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        shown = field and field not in hide and "input" in error
        value = repr(error.get("input"))
        value = value if len(value) <= 60 else value[:57] + "..."  # a whole table, say
        given = f" (got {value})" if shown else ""
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{field + ': ' if field else ''}{message}{given}")
    return "; ".join(parts)


class EvalConfig(_Frozen):
    """The benchmark run (PROTOCOL.md §2 and §3); see :mod:`metarec.evaluation.harness`."""

    protocol: Literal["loco", "launch", "melu"] = "loco"  # melu: DBook's shipped user splits
    methods: tuple[str, ...] | None = None  # None: every registered method
    shots: tuple[int, ...] = (0, 1, 3, 5, 10)
    folds: int = Field(default=5, ge=2)
    test_categories: tuple[str, ...] | None = None  # one fixed fold instead of rotating folds
    seed: int = Field(default=0, ge=0)
    quick: bool = False  # one fold, short training, first grid setting only
    tuning_budget: int = Field(default=3, ge=1)  # settings tried per method, the same for all
    ks: tuple[int, ...] = (5, 10, 20)
    min_users: int = Field(default=20, ge=1)
    validation_share: float = Field(default=0.2, gt=0, lt=1)
    launch_window: float = Field(default=0.05, gt=0, lt=1)  # §3: share of a category's positives
    n_resamples: int = Field(default=1000, ge=10)
    # validation users scored per validation category, a seeded sample (None: all of them);
    # test launches are always scored over every user (evaluation.cases.VALIDATION_USERS)
    validation_users: int | None = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if not self.shots or min(self.shots) < 0:
            raise ValueError("shots must be a non-empty list of counts >= 0")
        if not self.ks or min(self.ks) < 1:
            raise ValueError("ks must be a non-empty list of cutoffs >= 1")
        return self
