"""Every method the benchmark can run, in one visible registry.

``METHODS`` maps a registry key to a class implementing
:class:`metarec.baselines.base.Method`; ``metarec evaluate --methods`` takes these keys.
"""

from __future__ import annotations

from typing import Any, ClassVar

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
from metarec.errors import ConfigError
from metarec.evaluation.ridge import MetarecRidge
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
# are in docs/BENCHMARKS.md, "Evaluation speed"). A fold's units start in this order, then every
# other method in registry order, so that with --jobs N the long units run side by side at the
# start instead of one of them running alone at the end. Only the order of work changes: every
# unit seeds its own randomness, so the metrics are the same in any order.
LONGEST_FIRST: tuple[str, ...] = (
    "metarec-maml",
    # the pair of SHARED_FITS runs as one task in one worker, so it starts second: a fold of it
    # took 101 s on full ML-1M (metarec-maml 195 s) and 196 s on the 100k-item store's quick
    # run (metarec-maml 139 s), where it started fifth and the other worker waited at the end
    "pretrain-zeroshot",
    "pretrain-finetune",
    "metarec-film",
    "ials-refit",
    "melu",
    "metarec-ridge",
)


# Methods whose fits share work through ``FitContext.memo``, which lives in one process: the
# pretraining runs of the two pretrain variants are the same runs (only the scoring differs).
# The harness runs the units of such methods on one fold in one worker, one after the other,
# so that the second re-uses the first's training instead of repeating it in another worker.
SHARED_FITS: tuple[frozenset[str], ...] = (frozenset({"pretrain-zeroshot", "pretrain-finetune"}),)


def start_order(names: list[str]) -> list[str]:
    """``names`` in the order their units should start: :data:`LONGEST_FIRST`, then the rest as
    given."""
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
