"""The meta-trained model: an item encoder, the scorer's meta-parameters, and how it was trained.

Data flow::

    Catalog ──ItemEncoder.fit(train categories)──▶ item features, collaborative factors
       │                                                    │
       └── category_data(train) ─▶ TaskSampler ─▶ meta_train ─▶ MetaModel.params

:func:`train_on` meta-trains on a catalogue's training categories; the library's ``train``
(store in, model out, validation included) is :func:`metarec.training.train`. A model folder is
written and read by :func:`save_model` / :func:`load_model` (safetensors + manifest,
:mod:`metarec.artifacts`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from metarec.artifacts import Artifact, read_artifact, write_artifact
from metarec.config import TrainConfig
from metarec.data.catalog import Catalog
from metarec.features.encoder import ItemEncoder
from metarec.features.items import FeatureSpace
from metarec.features.rows import input_dim
from metarec.meta.checkpoint import Checkpointing, run_fingerprint
from metarec.meta.distributed import World
from metarec.meta.maml import MetaLearner
from metarec.meta.registry import build_learner
from metarec.meta.ridge_model import KIND as RIDGE_KIND
from metarec.meta.ridge_model import RidgeModel
from metarec.meta.trainer import meta_train
from metarec.models.conditioning import initial_params, is_conditioned, with_conditioning
from metarec.models.scorer import Params, init_params
from metarec.seeds import derived_seed
from metarec.tasks import CategoryData, TaskSampler, category_data

Validate = Callable[["MetaModel"], float]
"""Scores a candidate model on validation data, higher is better (model selection)."""


@dataclass
class MetaModel:
    """A meta-trained scorer with everything needed to adapt and rank a new category.

    Attributes:
        config: the resolved training config.
        encoder: item encoders and collaborative factors, fitted on the training categories.
        params: the meta-initialisation.
        splits: category lists used: ``train``, ``validation``, ``hold_out``.
        history: per-step training records.
        selection: how ``metarec train`` chose this model (candidates' validation scores).
    """

    config: TrainConfig
    encoder: ItemEncoder
    params: Params
    splits: dict[str, list[str]]
    history: list[dict[str, float]] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)

    @property
    def space(self) -> FeatureSpace:
        return self.encoder.space

    @property
    def learner(self) -> MetaLearner:
        return build_learner(self.config.meta)

    def start_params(self, category: CategoryData) -> Params:
        """The initialisation ``category`` adapts from (and is ranked by at zero shots):
        ``params`` conditioned on the category's context for a category-conditioned model
        (``model.condition = "film"``, :mod:`metarec.models.conditioning`), ``params`` as they
        are otherwise."""
        if not is_conditioned(self.params):
            return self.params
        with torch.no_grad():
            return initial_params(self.params, category.context)

    def category_data(
        self,
        catalog: Catalog,
        names: list[str],
        *,
        visible: list[str],
        extra_users: Any = None,
        item_x: torch.Tensor | None = None,
    ) -> dict[str, CategoryData]:
        """Categories of ``catalog`` under this model's encoder and seed (see
        :func:`metarec.tasks.category_data`)."""
        return category_data(
            catalog,
            names,
            self.encoder,
            visible=visible,
            seed=self.config.seed,
            extra_users=extra_users,
            item_x=item_x,
        )

    def metadata(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "features": self.space.to_json(),
            "splits": self.splits,
            "history": self.history,
            "selection": self.selection,
        }

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        groups = {"params": self.params, "factors": {"item_factors": self.encoder.factors}}
        if self.space.tensors():  # text features' projection
            groups["features"] = self.space.tensors()
        return groups

    def files(self) -> dict[str, bytes]:
        return {"factor_item_ids.json": json.dumps(self.encoder.factor_item_ids).encode()}

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> MetaModel:
        metadata = artifact.metadata
        return cls(
            config=TrainConfig.model_validate(metadata["config"]),
            encoder=ItemEncoder(
                space=FeatureSpace.from_json(
                    metadata["features"], artifact.tensors.get("features")
                ),
                factors=artifact.tensors["factors"]["item_factors"],
                factor_item_ids=json.loads(artifact.files["factor_item_ids.json"]),
            ),
            params=dict(artifact.tensors["params"]),
            splits=metadata["splits"],
            history=metadata.get("history", []),
            selection=metadata.get("selection", {}),
        )


def prepare_model(
    catalog: Catalog,
    config: TrainConfig,
    splits: dict[str, list[str]],
    generator: torch.Generator | None = None,
) -> MetaModel:
    """A model at its initialisation: the encoder fitted on the training categories only, params
    freshly drawn. Baselines use it for the same features.

    Raises:
        DataError: no training category has items.
    """
    encoder = ItemEncoder.fit(catalog, splits["train"], config.features, config.seed)
    generator = generator or torch.Generator().manual_seed(config.seed)
    params = init_params(input_dim(encoder.dim), config.model, generator=generator)
    return MetaModel(config=config, encoder=encoder, params=params, splits=splits)


def train_on(
    catalog: Catalog,
    config: TrainConfig,
    splits: dict[str, list[str]],
    *,
    progress: bool = True,
    validate_every: int = 50,
    validate: Validate | None = None,
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
) -> MetaModel:
    """Meta-train on ``splits["train"]``, keeping the params ``validate`` scores best.

    Only the training categories' positives are used to learn (features, factors, tasks).
    ``validate`` (higher is better; :class:`metarec.training.CategoryValidation` scores NDCG@10
    on ``splits["validation"]``) runs every ``validate_every`` steps; without it the last
    params are kept.

    ``checkpoint`` makes the run resumable: its fingerprint is set here from the config (all
    but ``meta.meta_steps``, so a resumed run may go on longer), ``validate_every`` and the
    data read (items, users, splits, and the training and validation positives), so resuming with
    another config or store is refused. With ``world``, every rank runs this function on the
    same data; rank 0 validates and writes checkpoints (docs/SCALING.md).

    Raises:
        DataError: not enough data to build any meta-training task.
    """
    generator = torch.Generator().manual_seed(config.seed)
    model = prepare_model(catalog, config, splits, generator)
    # algorithms may add meta-parameters of their own (Meta-SGD: one learned rate per weight)
    params = build_learner(config.meta).init_params(model.params)
    # and a category-conditioned model its hypernetwork (own seed: the run's draws are unchanged)
    film_generator = torch.Generator().manual_seed(derived_seed(config.seed, "film"))
    params = with_conditioning(
        params, config.model, model.space.context_dim, generator=film_generator
    )
    model.params = params
    train_data = model.category_data(catalog, splits["train"], visible=splits["train"])
    sampler = TaskSampler(list(train_data.values()), config.tasks)

    def score_params(candidate: Params) -> float:
        assert validate is not None
        return validate(replace(model, params=candidate))

    if checkpoint is not None:
        checkpoint = replace(
            checkpoint, fingerprint=_run_fingerprint(catalog, config, splits, validate_every)
        )
    best, history = meta_train(
        params,
        model.learner,
        sampler,
        config.meta,
        generator=generator,
        validate=score_params if validate is not None else None,
        validate_every=validate_every,
        progress=progress,
        checkpoint=checkpoint,
        world=world,
    )
    model.params = best
    model.history = history
    return model


def _run_fingerprint(
    catalog: Catalog, config: TrainConfig, splits: dict[str, list[str]], validate_every: int
) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the settings and the data training reads.

    Sealed categories' positives are left out, so a store and its export (which need not hold
    them) fingerprint the same.
    """
    settings = config.model_dump(mode="json")
    del settings["meta"]["meta_steps"]  # more steps continue the same run
    read = splits["train"] + splits["validation"]
    frames = [
        catalog.items[["item_id", "category"]],
        catalog.users[["user_id"]],
        catalog.positives_in(read),
    ]
    return {
        "settings": run_fingerprint({"config": settings, "validate_every": validate_every}, []),
        "data": run_fingerprint({"splits": splits}, frames),
    }


AnyModel = MetaModel | RidgeModel
"""What a model folder holds: an MLP meta-model, or a ridge model (``metadata["kind"]``)."""


def save_model(model: AnyModel, folder: str | Path) -> Path:
    """Write the model as safetensors + manifest (see :mod:`metarec.artifacts`)."""
    return write_artifact(folder, model.tensors(), model.metadata(), files=model.files())


def model_from_artifact(artifact: Artifact) -> AnyModel:
    """The model a verified folder holds, of the kind its metadata names."""
    if artifact.metadata.get("kind") == RIDGE_KIND:
        return RidgeModel.from_artifact(artifact)
    return MetaModel.from_artifact(artifact)


def load_model(folder: str | Path) -> AnyModel:
    """Read and verify a model folder written by :func:`save_model`."""
    return model_from_artifact(read_artifact(folder))
