"""What requests read: one model over one version of the store's data, swapped atomically.

Request threads read the current :class:`Snapshot` through one reference and never see half of an
update. The worker (:mod:`metarec.serving.jobs`) builds every new snapshot aside, with the
views and retrieval projections requests will need already built, then publishes it:

- :meth:`Snapshots.refresh` after writes (new events, launched items);
- :meth:`Snapshots.swap` for a new model, which must load, verify, and pass a smoke test first
  (a refused model leaves the old one serving).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from metarec.data.catalog import Catalog
from metarec.data.store import Store
from metarec.errors import ArtifactError, MetarecError, NonFiniteError
from metarec.features import input_dim, load_catalog
from metarec.meta.model import AnyModel
from metarec.meta.ridge_model import RidgeModel
from metarec.serving.adaptations import read_model
from metarec.serving.recommender import Recommender

log = logging.getLogger("metarec.serve")
_SMOKE_K = 5
_SMOKE_CATEGORIES = 3


@dataclass(frozen=True)
class Snapshot:
    """One model over one version of the store's data (``data_version`` counts refreshes)."""

    recommender: Recommender
    data_version: int


class Snapshots:
    """Builds and publishes snapshots; holds the current one.

    Args:
        store: the store the service owns; read under ``store_lock``.
        store_lock: the lock every thread takes to use the store's connection.
        recommender: the model served at start, bound to the store.
    """

    def __init__(self, store: Store, store_lock: threading.Lock, recommender: Recommender) -> None:
        self.store, self._store_lock = store, store_lock
        self.current = self._prepared(recommender, 0, previous=None)

    def publish(self, snapshot: Snapshot) -> None:
        self.current = snapshot  # one reference: requests see the old or the new, never a mix

    # ---- new data -----------------------------------------------------------------------------

    def refresh(self, changed_items: set[str]) -> int:
        """Publish a snapshot over the store as it is now; returns its data version."""
        current = self.current
        catalog = self._reload_catalog(current.recommender, items_changed=bool(changed_items))
        recommender = current.recommender.with_catalog(catalog, changed_items=changed_items)
        self.publish(self._prepared(recommender, current.data_version + 1, previous=current))
        return self.current.data_version

    def _reload_catalog(self, recommender: Recommender, *, items_changed: bool) -> Catalog:
        """The store's catalogue after writes. Events never change items (only launches do), so
        after events only users and interactions are re-read: the store lock, which writes
        wait for, is then held for a fraction of a full load (1.1e6 items take about 3 s)."""
        config = recommender.model.config
        if items_changed:
            with self._store_lock:
                return load_catalog(self.store, config)
        with self._store_lock:
            users = self.store.users()
            interactions = self.store.interactions()
            described = self.store.category_descriptions()
        return recommender.catalog.with_interactions(
            users, interactions, config.feedback, frozenset(described)
        )

    # ---- a new model --------------------------------------------------------------------------

    def swap(self, path: Path) -> tuple[Snapshot, Snapshot]:
        """Load, verify and smoke-test the model in ``path``, then publish it.

        Returns:
            ``(previous, new)`` snapshots.

        Raises:
            ArtifactError: the folder is damaged, mixes files of different models, or the model
                fails its smoke test; the previous model keeps serving.
        """
        current = self.current
        old = current.recommender
        model, artifact = read_model(path)  # verifies the manifest and every checksum
        check_widths(model, path)
        if model.config.feedback == old.model.config.feedback:
            recommender = old.for_model(model, path, artifact)
        else:  # positives are counted differently: reload the catalogue for this model
            with self._store_lock:
                catalog = load_catalog(self.store, model.config)
            recommender = Recommender(
                model,
                path,
                self.store,
                catalog=catalog,
                retrieval=old.retrieval,
                artifact=artifact,
                keep_disliked=old.keep_disliked,
                max_adapt_positives=old.max_adapt_positives,
            )
        candidate = self._prepared(recommender, current.data_version, previous=current)
        smoke_test(candidate.recommender, path)
        self.publish(candidate)
        return current, candidate

    # ---- building -----------------------------------------------------------------------------

    def _prepared(
        self, recommender: Recommender, data_version: int, *, previous: Snapshot | None
    ) -> Snapshot:
        """A snapshot whose likely requests are ready: the views (and projections) of every
        category the previous snapshot served and of every adapted category."""
        categories = set() if previous is None else previous.recommender.viewed_categories()
        categories.update(recommender.adapted_categories())
        for category in sorted(categories):
            try:
                recommender.prepare(category)
            except MetarecError as exc:  # e.g. the category lost its items
                log.warning("no view of %r in the new snapshot: %s", category, exc)
        return Snapshot(recommender, data_version)


def smoke_test(recommender: Recommender, path: Path) -> None:
    """Rank a few users with a candidate model; any failure or non-finite score refuses it.

    Raises:
        ArtifactError: ranking failed, or gave a non-finite score.
    """
    categories = sorted(recommender.viewed_categories())[:_SMOKE_CATEGORIES]
    categories = categories or recommender.catalog.categories[:1]
    users = recommender.catalog.users["user_id"].astype(str)
    for category in categories:
        view = recommender.serving_view(category)
        user_idx = int(view.data.users[0]) if view.data.n_users else 0
        user_id = str(users.iloc[user_idx]) if len(users) else "smoke-test-user"
        try:
            result = recommender.recommend(user_id, category, _SMOKE_K)
        except NonFiniteError as exc:
            raise ArtifactError(
                f"model {path} gives non-finite scores on {category!r}; the previous model "
                "keeps serving"
            ) from exc
        except MetarecError:
            raise
        except Exception as exc:
            raise ArtifactError(
                f"model {path} failed its smoke test on {category!r} ({exc}); the previous "
                "model keeps serving"
            ) from exc
        if not torch.isfinite(torch.tensor([item.score for item in result.items])).all():
            raise ArtifactError(
                f"model {path} gives non-finite scores on {category!r}; the previous model "
                "keeps serving"
            )


def check_widths(model: AnyModel, path: Path) -> None:
    """The params must read rows as wide as the model's own features produce.

    Raises:
        ArtifactError: the folder mixes files of different models.
    """
    if isinstance(model, RidgeModel):  # the prior reads item features; the map, ALS factors
        expected = model.space.dim
        width = model.params["prior"].shape[0]
        factors = model.item_factors.shape[1]
        if model.params["user_map"].shape[0] != factors:
            width, expected = model.params["user_map"].shape[0], factors
    else:
        expected = input_dim(model.encoder.dim)
        width = model.params["layers.0.weight"].shape[1]
    if width != expected:
        raise ArtifactError(
            f"model {path} is inconsistent: its first layer reads {width} inputs but its features "
            f"give {expected}; the folder mixes files of different models"
        )
