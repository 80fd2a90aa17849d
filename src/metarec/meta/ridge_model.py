"""A trained metarec-ridge model: ALS item factors, the ridge meta-parameters, the item encoder.

What :class:`~metarec.evaluation.ridge.MetarecRidge` learns on a fold, as one object that a
model folder holds and the service ranks with (:class:`metarec.ranking.ridge.RidgeRanker`)::

    store ──ALS on the training categories──▶ item_factors Y ──┐
                                                              ├─▶ RidgeModel ─▶ model folder
    training episodes ──LambdaLoss through the solve──▶ params ┘

A user is represented by the ALS half-step of their history outside the category being ranked
(:meth:`RidgeModel.user_factors`); a category's items by the ridge solve of its support
(:func:`metarec.meta.ridge.fold_in`). The model folder carries ``kind = "ridge"`` in its
metadata; :func:`metarec.meta.model.load_model` reads either kind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from metarec.artifacts import Artifact
from metarec.config import TrainConfig
from metarec.data.catalog import Catalog
from metarec.features.encoder import ItemEncoder
from metarec.features.items import FeatureSpace
from metarec.meta.ridge import has_zero_shot_term
from metarec.models.least_squares import positive_matrix, solve_rows
from metarec.models.scorer import Params
from metarec.tasks import CategoryData, category_data, encoded_items

KIND = "ridge"


@dataclass
class RidgeModel:
    """ALS fold-in with meta-learned content prior and support bias (see the module docstring).

    Attributes:
        config: the resolved training config (feedback, features, seed).
        encoder: item attribute/text encoders fitted on the training categories (the content
            ``z_j`` of the prior mean); its SVD factors are unused here but keep views alike.
        params: the ridge meta-parameters (:func:`metarec.meta.ridge.init_ridge`).
        item_factors: (n_known_items, f) float64 ALS item factors of the training items.
        factor_item_ids: external ids of ``item_factors``' rows.
        regularization: ALS's ``lambda`` of the users' half-step.
        alpha: ALS's confidence scale of the users' half-step.
        splits: category lists used: ``train``, ``validation``, ``hold_out``.
        history: validation NDCG@10 along the meta-training steps.
        zero_shot: zero-shot validation NDCG@10 of each content weight tried after training.
        selection: how ``metarec train`` chose this model (candidates' validation scores).
        bias_from_support: each launch chooses its own support bias from its support
            (:func:`metarec.ranking.launch_bias.support_bias`): set where no validation category
            could choose it in training.
    """

    config: TrainConfig
    encoder: ItemEncoder
    params: Params
    item_factors: torch.Tensor
    factor_item_ids: list[str]
    regularization: float
    alpha: float
    splits: dict[str, list[str]]
    history: list[dict[str, float]] = field(default_factory=list)
    zero_shot: list[dict[str, float]] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)
    bias_from_support: bool = False

    @property
    def space(self) -> FeatureSpace:
        return self.encoder.space

    def category_data(
        self,
        catalog: Catalog,
        names: list[str],
        *,
        visible: list[str],
        extra_users: Any = None,
        item_x: torch.Tensor | None = None,
    ) -> dict[str, CategoryData]:
        """Categories of ``catalog`` under this model's encoder and seed (as a MetaModel's)."""
        return category_data(
            catalog,
            names,
            self.encoder,
            visible=visible,
            seed=self.config.seed,
            extra_users=extra_users,
            item_x=item_x,
        )

    def factors_for(self, catalog: Catalog) -> np.ndarray:
        """(n_items, f) ``item_factors`` in ``catalog``'s item order; zeros for unknown items."""
        row_of = pd.Series(np.arange(len(self.factor_item_ids)), index=self.factor_item_ids)
        found = row_of.reindex(catalog.items["item_id"].astype(str).to_numpy())
        known = found.notna().to_numpy(copy=True)
        out = np.zeros((len(catalog.items), self.item_factors.shape[1]))
        out[known] = self.item_factors.numpy()[found[known].to_numpy(dtype=np.int64, copy=True)]
        return out

    def user_factors(
        self, catalog: Catalog, history: pd.DataFrame, item_factors: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every store user's ALS half-step from ``history`` (positives), and their gram.

        Args:
            catalog: the catalogue ``history`` indexes into.
            history: the positives users are seen through (everything outside the category
                being ranked).
            item_factors: :meth:`factors_for` of ``catalog``, when the caller has it.

        Returns:
            (n_users, f) float64 factors (zero rows: no history) and their (f, f) gram.
        """
        items = self.factors_for(catalog) if item_factors is None else item_factors
        confidence = positive_matrix(history, len(catalog.users), len(catalog.items))
        factors = torch.from_numpy(solve_rows(confidence * self.alpha, items, self.regularization))
        return factors, factors.T @ factors

    def user_profiles(self, catalog: Catalog, history: pd.DataFrame) -> torch.Tensor:
        """(n_users, d) every store user's content profile from ``history`` (positives): the
        weighted sum of the features of the items they liked (the zero-shot content term's
        ``p_u``; zero rows: no history)."""
        liked = positive_matrix(history, len(catalog.users), len(catalog.items))
        item_x = encoded_items(self.encoder, catalog).numpy()
        return torch.from_numpy(np.asarray(liked @ item_x, dtype=np.float32))

    @property
    def uses_profiles(self) -> bool:
        """Whether zero-shot scores read the users' content profiles (a non-zero ``c_0``)."""
        return has_zero_shot_term(self.params)

    # ---- the model folder ----------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "config": self.config.model_dump(mode="json"),
            "features": self.space.to_json(),
            "splits": self.splits,
            "history": self.history,
            "zero_shot": self.zero_shot,
            "selection": self.selection,
            "ridge": {
                "regularization": self.regularization,
                "alpha": self.alpha,
                "bias_from_support": self.bias_from_support,
            },
        }

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        groups = {
            "params": self.params,
            "factors": {
                "item_factors": self.encoder.factors,
                "als_item_factors": self.item_factors,
            },
        }
        if self.space.tensors():  # text features' projection
            groups["features"] = self.space.tensors()
        return groups

    def files(self) -> dict[str, bytes]:
        return {
            "factor_item_ids.json": json.dumps(self.encoder.factor_item_ids).encode(),
            "als_item_ids.json": json.dumps(self.factor_item_ids).encode(),
        }

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> RidgeModel:
        metadata = artifact.metadata
        factors = artifact.tensors["factors"]
        return cls(
            config=TrainConfig.model_validate(metadata["config"]),
            encoder=ItemEncoder(
                space=FeatureSpace.from_json(
                    metadata["features"], artifact.tensors.get("features")
                ),
                factors=factors["item_factors"],
                factor_item_ids=json.loads(artifact.files["factor_item_ids.json"]),
            ),
            params=dict(artifact.tensors["params"]),
            item_factors=factors["als_item_factors"].to(torch.float64),
            factor_item_ids=json.loads(artifact.files["als_item_ids.json"]),
            regularization=float(metadata["ridge"]["regularization"]),
            alpha=float(metadata["ridge"]["alpha"]),
            splits=metadata["splits"],
            history=metadata.get("history", []),
            zero_shot=metadata.get("zero_shot", []),
            selection=metadata.get("selection", {}),
            bias_from_support=bool(metadata["ridge"].get("bias_from_support", False)),
        )
