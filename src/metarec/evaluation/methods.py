"""Every method the benchmark can run, in one visible registry.

``METHODS`` maps a registry key to a class implementing
:class:`metarec.baselines.base.Method`; ``metarec evaluate --methods`` takes these keys.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import numpy as np
import torch

from metarec.baselines.base import Family, FitContext, Launch, Method
from metarec.baselines.content_knn import ContentKNN
from metarec.baselines.dropoutnet import DropoutNet
from metarec.baselines.emcdr import EMCDR
from metarec.baselines.ials import IALSRefit
from metarec.baselines.melu import MeLU
from metarec.baselines.mf import ALS, BPR
from metarec.baselines.pretrain import Pretrain, PretrainFinetune
from metarec.baselines.simple import Popularity, Random
from metarec.baselines.user_knn import UserKNN
from metarec.config import TrainConfig
from metarec.errors import ConfigError
from metarec.evaluation.cases import pooled_score
from metarec.evaluation.records import VALIDATION_K
from metarec.evaluation.ridge import GUARD_STANDARD_ERRORS, MetarecRidge
from metarec.evaluation.stats import gain_in_standard_errors
from metarec.meta.model import MetaModel, train_on
from metarec.ranking import category_scores


class MetarecMAML:
    """metarec's own method: second-order MAML over category tasks (Finn et al. 2017).

    Meta-trains the scorer on the fold's training categories with the run's config, selecting
    the checkpoint on the validation categories; at launch, adapts on the support with the
    configured inner loop (``meta.inner_steps`` at ``meta.inner_lr``) and ranks every item.
    """

    name: ClassVar[str] = "metarec-maml"
    family: ClassVar[Family] = "metarec"
    grid: ClassVar[list[dict[str, Any]]] = [{}, {"inner_lr": 0.3}, {"first_order": True}]
    model_settings: ClassVar[dict[str, Any]] = {}  # ModelConfig fields this method sets

    def __init__(self, **meta_overrides: Any) -> None:
        self.meta_overrides = meta_overrides
        self.model: MetaModel | None = None

    def fit(self, context: FitContext) -> None:
        meta = context.config.meta.model_copy(update={"algorithm": "maml", **self.meta_overrides})
        if context.quick:
            meta = meta.model_copy(update={"meta_steps": min(meta.meta_steps, 40)})
        model = context.config.model.model_copy(update=self.model_settings)
        config = context.config.model_copy(update={"meta": meta, "model": model})
        splits = {"train": context.train, "validation": [], "hold_out": []}
        validate = None
        if context.validate is not None:
            score = context.validate

            def validate(candidate: MetaModel) -> float:
                return score(ModelAsMethod(candidate))

        self.model = train_on(
            context.catalog,
            config,
            splits,
            progress=False,
            validate_every=max(10, meta.meta_steps // 6),
            validate=validate,
        )

    def scores(self, launch: Launch) -> torch.Tensor:
        if self.model is None:
            raise ConfigError("fit() must run before scores()")
        return ModelAsMethod(self.model).scores(launch)


class MetarecFiLM(MetarecMAML):
    """metarec with a category-conditioned initialisation: :class:`MetarecMAML` whose
    meta-initialisation is modulated per category by FiLM (``model.condition = "film"``,
    :mod:`metarec.models.conditioning`; Perez et al. 2018, as in Vuorio et al. 2019) from what
    is known before any interaction: the category's path, its items' mean attributes and,
    with ``features.text``, its name's text embedding. At zero shots it ranks with a model of
    the category's own.
    """

    name: ClassVar[str] = "metarec-film"
    model_settings: ClassVar[dict[str, Any]] = {"condition": "film"}


DEFAULT_MEASURE = f"NDCG@{VALIDATION_K} on the validation categories at tasks.shots, users pooled"
"""What the default's candidates are compared on (here and in ``metarec train``)."""

DefaultCandidate = tuple[str, type[Method], dict[str, Any]]
"""``(label, class, setting)``: one candidate of the default, as ``metarec train`` names it."""


def default_candidates(config: TrainConfig) -> list[DefaultCandidate]:
    """The candidates ``metarec train`` fits when it is told nothing (:mod:`metarec.selection`):
    the MLP learner with the config's algorithm, then metarec-ridge, each at its defaults."""
    algorithm = config.meta.algorithm
    mlp: dict[str, Any] = {} if algorithm == "maml" else {"algorithm": algorithm}
    return [(f"metarec-{algorithm}", MetarecMAML, mlp), (MetarecRidge.name, MetarecRidge, {})]


def choose_default(
    scores: dict[str, float], per_user: dict[str, np.ndarray] | None = None
) -> tuple[str, str]:
    """The candidate the default keeps, and why.

    metarec-ridge contains ALS fold-in (it stays there unless validation shows better), so it
    is the reference: another candidate replaces it only with a higher validation score and,
    where per-user values pair the two, a paired gain above :data:`GUARD_STANDARD_ERRORS`
    (the guard metarec-ridge itself applies to leaving fold-in). With no score at all (no
    validation category) metarec-ridge at its fold-in start.

    Args:
        scores: candidate label -> validation NDCG@10 (NaN: no validation categories).
        per_user: candidate label -> the same validation per user, in one order for all.
    """
    ridge = MetarecRidge.name
    if all(math.isnan(score) for score in scores.values()):
        return ridge, (
            "no validation categories to compare on: ALS fold-in (metarec-ridge's start), "
            "which led the MLP learners on every benchmark dataset (docs/BENCHMARKS.md)"
        )
    best = max(scores, key=lambda name: -math.inf if math.isnan(scores[name]) else scores[name])
    if best == ridge or math.isnan(scores[ridge]) or per_user is None:
        return best, f"best {DEFAULT_MEASURE}"
    gain = gain_in_standard_errors(per_user[best], per_user[ridge])
    if gain > GUARD_STANDARD_ERRORS:
        return best, f"best {DEFAULT_MEASURE}, {gain:.1f} paired standard errors over {ridge}"
    return ridge, (
        f"{best} scored higher on validation by {gain:.1f} paired standard errors, within the "
        f"guard of {GUARD_STANDARD_ERRORS:g}: {ridge}, which contains fold-in, is kept"
    )


def _fit_key(cls: type[Method], setting: dict[str, Any]) -> tuple[str, str, str]:
    return ("fitted", cls.name, json.dumps(setting, sort_keys=True))


def remember_fit(
    cls: type[Method], setting: dict[str, Any], method: Method, context: FitContext
) -> None:
    """Keep ``method`` in the fold's memo when the default (:class:`MetarecDefault`) fits the
    same class and setting, so that its unit, run next in the same worker
    (:data:`SHARED_FITS`), does not fit it again."""
    if any(c is cls and s == setting for _, c, s in default_candidates(context.config)):
        context.memo[_fit_key(cls, setting)] = method


class MetarecDefault:
    """What ``metarec train`` gives a user who configures nothing, as one method: of the
    candidates of :func:`default_candidates`, the better on the fold's validation categories
    (:func:`choose_default`, the rule :mod:`metarec.selection` applies to a store).

    It has no grid: it is the default, measured as a new user gets it. A candidate already
    fitted by its own unit in the same worker (:data:`SHARED_FITS`) is re-used, not fitted
    again, so where that unit kept its default setting the default's records are that
    candidate's, user for user.
    """

    name: ClassVar[str] = "metarec"
    family: ClassVar[Family] = "metarec"
    grid: ClassVar[list[dict[str, Any]]] = [{}]

    def __init__(self) -> None:
        self.method: Method | None = None
        self.chosen: dict[str, Any] = {}  # which candidate, and every candidate's score

    def fit(self, context: FitContext) -> None:
        fitted: dict[str, Method] = {}
        scores: dict[str, float] = {}
        per_user: dict[str, np.ndarray] = {}
        unvalidated = context.validate is None and context.validate_users is None
        for label, cls, setting in default_candidates(context.config):
            if unvalidated and label != MetarecRidge.name:
                continue  # nothing to compare on: the rule keeps metarec-ridge, as `train` does
            method = context.memo.get(_fit_key(cls, setting))
            if method is None:
                method = cls(**setting)
                method.fit(context)
            fitted[label] = method
            if context.validate_users is not None:
                per_user[label] = np.asarray(context.validate_users(method), dtype=np.float64)
                scores[label] = pooled_score(per_user[label])
            else:
                scores[label] = math.nan if context.validate is None else context.validate(method)
        label, reason = choose_default(scores, per_user or None)
        self.method = fitted[label]
        self.chosen = {"method": label, "reason": reason}
        if not all(math.isnan(score) for score in scores.values()):
            # validation NDCG@10 of every candidate (DEFAULT_MEASURE)
            self.chosen["validation"] = {
                name: None if math.isnan(score) else round(score, 6)
                for name, score in scores.items()
            }

    def scores(self, launch: Launch) -> torch.Tensor:
        if self.method is None:
            raise ConfigError("fit() must run before scores()")
        return self.method.scores(launch)


class ModelAsMethod:
    """A meta-model seen as a method (for validation during training)."""

    name: ClassVar[str] = "metarec-maml"
    family: ClassVar[Family] = "metarec"
    grid: ClassVar[list[dict[str, Any]]] = [{}]

    def __init__(self, model: MetaModel) -> None:
        self.model = model

    def fit(self, context: FitContext) -> None:  # pragma: no cover - never fitted
        raise NotImplementedError

    def scores(self, launch: Launch) -> torch.Tensor:
        category = launch.category_for(self.model)
        return category_scores(self.model, category, launch.split, launch.positions)


METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        MetarecDefault,
        MetarecMAML,
        MetarecFiLM,
        MetarecRidge,
        Random,
        Popularity,
        ContentKNN,
        ALS,
        BPR,
        IALSRefit,
        UserKNN,
        EMCDR,
        Pretrain,
        PretrainFinetune,
        MeLU,
        DropoutNet,
    )
}


# The methods whose units take longest, longest first (their wall times on a quick ML-100K run
# are in docs/BENCHMARKS.md, "Evaluation speed"). A fold's units are listed in this order, then
# every other method in registry order: the order of the units inside one task of SHARED_FITS
# (the default after the fits it re-uses), and of tasks the harness expects to take equally
# long. Which task a free worker takes next is the harness's choice by expected time
# (harness._next_task). Only the order of work changes: every unit seeds its own randomness,
# so the metrics are the same in any order.
LONGEST_FIRST: tuple[str, ...] = (
    "metarec-maml",
    "pretrain-zeroshot",
    "pretrain-finetune",
    "metarec-film",
    "ials-refit",
    "melu",
    "metarec-ridge",
)


# Methods whose fits share work through ``FitContext.memo``, which lives in one process: the
# pretraining runs of the two pretrain variants are the same runs (only the scoring differs),
# and the default (``metarec``) picks between the default-setting fits of metarec-maml and
# metarec-ridge (remember_fit). The harness runs the units of such methods on one fold in one
# worker, one after the other, so that the later ones re-use the first's training instead of
# repeating it in another worker.
SHARED_FITS: tuple[frozenset[str], ...] = (
    frozenset({"pretrain-zeroshot", "pretrain-finetune"}),
    frozenset({"metarec-maml", "metarec-ridge", MetarecDefault.name}),
)


def start_order(names: list[str]) -> list[str]:
    """``names`` in :data:`LONGEST_FIRST` order, then the rest as given."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    return sorted(names, key=lambda name: rank.get(name, len(rank)))  # stable for the rest


def resolve_methods(names: tuple[str, ...] | list[str] | None) -> list[type[Method]]:
    """Registry classes for ``names`` (all when None), in registry order.

    Raises:
        ConfigError: an unknown name; the message lists the valid ones.
    """
    if names is None or list(names) == ["all"]:
        return list(METHODS.values())
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(
            f"unknown method(s) {unknown}; valid methods: {', '.join(METHODS)} (or 'all')"
        )
    return [METHODS[n] for n in names]
