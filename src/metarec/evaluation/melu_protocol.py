"""The MeLU-line protocol on DBook: rating prediction and ranking *within* each user's query.

This is **not** the full-ranking protocol of PROTOCOL.md §2. It reproduces the setting of MeLU
(Lee et al., "MeLU: Meta-Learned User Preference Estimator for Cold-Start Recommendation", KDD
2019) as MetaHIN (Lu et al., "Meta-learning on Heterogeneous Information Networks for Cold-start
Recommendation", KDD 2020) ran it on its DBook splits, so that metarec's numbers can be set beside
published ones:

1. The store must hold the ``dbook`` format (:func:`metarec.data.adapters.read_dbook`), whose
   interactions carry their shipped split in ``event``.
2. Users as tasks. A user of a split takes part when they rated 13 to 100 books in it; their
   ratings are put in a seeded random order and the *last* 10 are the query, the rest (3 to 90)
   the support (MeLU's ``data_generation.py``; the rule gives exactly MetaHIN's 4,220 training
   and 572 user-and-item-cold users).
3. Meta-training on ``meta_training`` users (10% of them held out, seeded, for model selection),
   evaluation on ``warm_up``, ``user_cold_testing``, ``item_cold_testing`` and
   ``user_and_item_cold_testing``: adapt on the support, predict the query's ratings.
4. Metrics per user, over the user's 10 query books only: MAE, RMSE, and nDCG@5 of the books
   ordered by predicted rating with gain ``2^rating - 1``; mean over users, bootstrap 95% CI.

The model is metarec's scorer (the MLP of :mod:`metarec.models.scorer`) trained as a *regressor*:
its output plus the training mean rating is the predicted rating, and the loss is the masked mean
squared error. The meta core's :func:`metarec.meta.task_loss` is a BCE over positives and
sampled negatives; the regression MAML here adapts through the same inner loop,
:func:`metarec.meta.adapt`, given the MSE as its loss. Formulas, choices and measured numbers:
``docs/MELU_PROTOCOL.md``.

Example:
    >>> records = evaluate_melu("dbook.duckdb", quick=True)  # doctest: +SKIP
    >>> sorted({r["category"] for r in records})  # doctest: +SKIP
    ['item_cold_testing', 'user_and_item_cold_testing', 'user_cold_testing', 'warm_up']
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.config import FeatureConfig, MetaConfig, ModelConfig, TaskConfig, TrainConfig
from metarec.data.store import Store
from metarec.errors import ConfigError, DataError
from metarec.evaluation.stats import bootstrap_ci, paired_test
from metarec.features.items import FeatureSpace, Vocab
from metarec.meta import Batch, Params, TaskBatch, adapt, meta_train, stack_batches, stack_tasks
from metarec.models.scorer import init_params, score
from metarec.seeds import derived_seed

TRAIN_SPLIT = "meta_training"
TEST_SPLITS = ("warm_up", "user_cold_testing", "item_cold_testing", "user_and_item_cold_testing")
RANKING = "within the user's 10 query items (MeLU/MetaHIN setting), NOT full ranking"

METHODS: dict[str, str] = {
    "metarec-maml": "metarec",  # MAML, users as tasks, MSE; adapted on each user's support
    "meta-init": "metarec",  # the same meta-parameters, not adapted
    "pretrain-finetune": "baseline",  # same scorer pooled (no meta-learning), same inner budget
    "pretrain-zeroshot": "baseline",  # the pooled scorer, not adapted
    "bias": "baseline",  # mu + b_item (training ratings) + b_user (support), damped
    "item-mean": "baseline",  # mu + b_item: the crowd's opinion (popularity's analogue)
    "user-mean": "baseline",  # mu + b_user: the user's support mean
    "global-mean": "baseline",  # mu; its ranking is a seeded random order (ties everywhere)
}
"""The methods and their report family; ``methods=None`` runs them all."""

# Learned methods: (which training run, adapted on the support at test).
_TRAINED = {
    "metarec-maml": ("maml", True),
    "meta-init": ("maml", False),
    "pretrain-finetune": ("pretrain", True),
    "pretrain-zeroshot": ("pretrain", False),
}
_FEATURE_DAMPING = 5.0  # pseudo-ratings at the mean in the scorer's item-residual feature
_DAMPING_GRID = (0.0, 1.0, 2.0, 5.0, 10.0, 25.0)  # the bias baselines' tuning budget
_VALIDATION_SHARE = 0.1
_CHUNK = 128  # users adapted at once at evaluation (bounds the padded (T, n, d) tensors)
N_SCALARS = 5


# ---- the split: users as tasks ---------------------------------------------------------------


@dataclass(frozen=True)
class SplitRule:
    """MeLU's task rule: users with ``min_items``..``max_items`` ratings, last ``query_size``
    of a seeded shuffle as query."""

    min_items: int = 13
    max_items: int = 100
    query_size: int = 10


@dataclass(frozen=True)
class UserTask:
    """One user's task in one split: support and query books with their ratings.

    Attributes:
        user_idx: the user's store index.
        support_items, query_items: ``(n_s,)`` and ``(n_q,)`` item indices.
        support_ratings, query_ratings: the matching ratings, float64.
    """

    user_idx: int
    support_items: np.ndarray
    support_ratings: np.ndarray
    query_items: np.ndarray
    query_ratings: np.ndarray


def melu_tasks(
    ratings: pd.DataFrame, *, split: str, seed: int, rule: SplitRule = SplitRule()
) -> list[UserTask]:
    """Cut one split's ratings into MeLU tasks.

    Each eligible user's books, taken in item-index order, are permuted with a generator seeded
    by ``(seed, split, user_id)``: the last ``rule.query_size`` are the query, the rest the
    support. The result does not depend on the row order of ``ratings``.

    Args:
        ratings: one split's rows: user_idx, user_id, item_idx, rating.
        split: the split's name (part of each user's seed).
        seed: the run seed.
        rule: eligibility and query size.

    Returns:
        One task per eligible user, by ascending user_idx.
    """
    tasks = []
    ordered = ratings.sort_values(["user_idx", "item_idx"], kind="stable")
    for (user_idx, user_id), rows in ordered.groupby(["user_idx", "user_id"], sort=True):
        if not rule.min_items <= len(rows) <= rule.max_items:
            continue
        rng = np.random.default_rng(derived_seed(seed, f"melu:{split}:{user_id}"))
        order = rng.permutation(len(rows))
        items = rows["item_idx"].to_numpy()[order]
        values = rows["rating"].to_numpy(dtype=np.float64)[order]
        cut = len(rows) - rule.query_size
        tasks.append(UserTask(int(user_idx), items[:cut], values[:cut], items[cut:], values[cut:]))
    return tasks


def split_checksum(tasks: dict[str, list[UserTask]]) -> str:
    """sha256 over every split's (user, support items, query items), to compare two runs."""
    digest = hashlib.sha256()
    for name in sorted(tasks):
        for task in tasks[name]:
            digest.update(f"{name}|{task.user_idx}|".encode())
            digest.update(task.support_items.astype(np.int64).tobytes())
            digest.update(b"|")
            digest.update(task.query_items.astype(np.int64).tobytes())
    return digest.hexdigest()


# ---- metrics within a user's query -----------------------------------------------------------


def ndcg_within(predicted: np.ndarray, actual: np.ndarray, k: int, tie_key: np.ndarray) -> float:
    """nDCG@k of a user's query books ordered by predicted rating (graded gains).

    ``DCG@k = sum_{r=1..min(k,n)} (2^{rel_r} - 1) / log2(r + 1)`` with ``rel_r`` the actual
    rating of the book ranked r-th; ``IDCG@k`` is the same sum over the books sorted by actual
    rating; the value is ``DCG / IDCG`` (0 when IDCG is 0, which ratings >= 1 never give).

    Args:
        predicted: ``(n,)`` predicted ratings.
        actual: ``(n,)`` actual ratings.
        k: cutoff, >= 1.
        tie_key: ``(n,)`` breaks equal predictions (lower first): a seeded random key, the same
            for every method, so a constant predictor scores a random order's nDCG.

    Returns:
        nDCG@k in [0, 1].
    """
    order = np.lexsort((tie_key, -predicted))[:k]
    discounts = 1.0 / np.log2(np.arange(2, len(order) + 2))
    gains = np.exp2(actual) - 1.0
    ideal = float(np.sort(gains)[::-1][: len(order)] @ discounts)
    return float(gains[order] @ discounts) / ideal if ideal > 0 else 0.0


def user_metrics(
    predicted: np.ndarray, actual: np.ndarray, ks: Sequence[int], tie_key: np.ndarray
) -> dict[tuple[str, int | None], float]:
    """MAE, RMSE and nDCG@k of one user's query predictions."""
    error = predicted - actual
    out: dict[tuple[str, int | None], float] = {
        ("mae", None): float(np.abs(error).mean()),
        ("rmse", None): float(np.sqrt((error**2).mean())),
    }
    for k in ks:
        out[("ndcg", k)] = ndcg_within(predicted, actual, k, tie_key)
    return out


# ---- features: the scorer's input for a (user, book) row -------------------------------------


@dataclass(frozen=True)
class RatingFeatures:
    """Everything the scorer sees, fitted on the meta-training (not validation) users only.

    A row for user u and book i is ``[x_i, z_u, scalars]``: the book's attribute encoding
    (authors, publisher, year id; :class:`~metarec.features.items.FeatureSpace`), the user's
    location one-hot, and five scalars: the user's mean support residual ``r - mu`` and
    ``log1p`` of their support size, the book's damped mean residual in the training ratings and
    ``log1p`` of its training count, and a similarity-weighted support residual
    ``sum_j (x_i . x_j)(r_j - mu) / n_s`` (a kNN signal over attributes). Support rows are built
    leave-one-out (the row's own rating is out of the user scalars), and rows of training users
    leave their own rating out of the book's statistics, so no row sees its own label.

    Attributes:
        item_x: ``(n_items, d_item)`` book encodings.
        user_x: ``(n_users, d_user)`` location one-hots.
        mu: mean training rating.
        item_sum: ``(n_items,)`` sum of ``r - mu`` over training ratings of each book.
        item_count: ``(n_items,)`` training ratings of each book.
    """

    item_x: Tensor
    user_x: Tensor
    mu: float
    item_sum: np.ndarray
    item_count: np.ndarray

    @property
    def dim(self) -> int:
        """Width of a row."""
        return self.item_x.shape[1] + self.user_x.shape[1] + N_SCALARS

    @classmethod
    def fit(
        cls,
        items: pd.DataFrame,
        users: pd.DataFrame,
        train: pd.DataFrame,
        config: FeatureConfig,
    ) -> RatingFeatures:
        """Fit encoders and book statistics on ``train`` ratings (user_idx, item_idx, rating)."""
        rated = items.loc[items["item_idx"].isin(train["item_idx"].unique())]
        item_x = FeatureSpace.fit(rated, config).encode(items)
        locations = [_location(v) for v in users["extra"]]
        seen = set(train["user_idx"].unique())
        vocab = Vocab.fit(
            (
                [loc]
                for loc, idx in zip(locations, users["user_idx"], strict=True)
                if loc and idx in seen
            ),
            config.max_vocab_per_field,
            config.oov_buckets,
        )
        user_x = torch.zeros((len(users), vocab.size))
        for row, loc in enumerate(locations):
            if loc:
                user_x[row, vocab.slot(loc)] = 1.0
        mu = float(train["rating"].mean())
        n_items = len(items)
        item_idx = train["item_idx"].to_numpy()
        residual = train["rating"].to_numpy(dtype=np.float64) - mu
        return cls(
            item_x=item_x,
            user_x=user_x,
            mu=mu,
            item_sum=np.bincount(item_idx, weights=residual, minlength=n_items),
            item_count=np.bincount(item_idx, minlength=n_items).astype(np.float64),
        )

    def rows(self, task: UserTask, *, own_in_stats: bool) -> tuple[Batch, Batch]:
        """The task's support and query rows; targets are ``rating - mu``.

        Args:
            task: the user's task.
            own_in_stats: the task's ratings are in the book statistics (a training user):
                each row then leaves its own rating out of them.

        Returns:
            ``(support, query)``: ``x: (n_s, dim)`` and ``(n_q, dim)``, ``y`` and ``mask``.
        """
        xs = self.item_x[torch.from_numpy(task.support_items)]
        xq = self.item_x[torch.from_numpy(task.query_items)]
        res_s = torch.from_numpy(task.support_ratings - self.mu).float()
        res_q = torch.from_numpy(task.query_ratings - self.mu).float()
        n_s = len(res_s)
        # Support rows: leave-one-out over the user's own support (their label is not an input).
        others = max(n_s - 1, 1)
        gram = xs @ xs.T
        user_s = (res_s.sum() - res_s) / others
        taste_s = (gram @ res_s - gram.diagonal() * res_s) / others
        user_q = (res_s.sum() / max(n_s, 1)).expand(len(res_q))
        taste_q = (xq @ xs.T) @ res_s / max(n_s, 1)
        own_s, own_q = (res_s, res_q) if own_in_stats else (None, None)
        support = self._batch(task, xs, task.support_items, res_s, user_s, n_s - 1, taste_s, own_s)
        query = self._batch(task, xq, task.query_items, res_q, user_q, n_s, taste_q, own_q)
        return support, query

    def _batch(
        self,
        task: UserTask,
        x_items: Tensor,
        items: np.ndarray,
        target: Tensor,
        user_residual: Tensor,
        n_support: int,
        taste: Tensor,
        own: Tensor | None = None,
    ) -> Batch:
        item_sum = torch.from_numpy(self.item_sum[items]).float()
        item_count = torch.from_numpy(self.item_count[items]).float()
        if own is not None:
            item_sum, item_count = item_sum - own, item_count - 1.0
        scalars = torch.stack(
            [
                user_residual,
                torch.full_like(target, math.log1p(max(n_support, 0))),
                item_sum / (item_count + _FEATURE_DAMPING),
                torch.log1p(item_count),
                taste,
            ],
            dim=-1,
        )
        user = self.user_x[task.user_idx].expand(len(items), -1)
        x = torch.cat([x_items, user, scalars], dim=-1)
        return Batch(x, target, torch.ones_like(target))


def _location(extra: object) -> str | None:
    if not isinstance(extra, str) or not extra:
        return None
    value = json.loads(extra).get("location")
    return None if value is None else str(value)


# ---- regression meta-learning (the meta core's MAML with an MSE task loss) -------------------


def rating_loss(params: Params, batch: Batch) -> Tensor:
    """Masked mean squared error of the scorer's output against ``batch.y`` (rating - mu).

    Returns:
        ``()`` mean over real rows; 0 for an all-padding task.
    """
    per_row = F.mse_loss(score(params, batch.x), batch.y, reduction="none")
    return (per_row * batch.mask).sum() / batch.mask.sum().clamp_min(1.0)


class RatingMAML:
    """MAML (Finn et al., ICML 2017) on rating regression: a :class:`~metarec.meta.MetaLearner`.

    Identical to :class:`metarec.meta.MAML` except for the task loss (MSE on ``rating - mu``
    instead of BCE on positives and negatives): inner steps from ``config``, tasks adapted at
    once with ``vmap``, second order unless ``config.first_order``.
    """

    def __init__(self, config: MetaConfig) -> None:
        self.config = config

    def adapt(self, params: Params, support: Batch) -> Params:
        """Adapt to one user's support rows."""
        return adapt(
            params,
            support,
            steps=self.config.inner_steps,
            lr=self.config.inner_lr,
            first_order=self.config.first_order,
            loss=rating_loss,
        )

    def meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """``()`` mean over tasks of the query MSE after adapting on the support."""

        def one(sx: Tensor, sy: Tensor, sm: Tensor, qx: Tensor, qy: Tensor, qm: Tensor) -> Tensor:
            return rating_loss(self.adapt(params, Batch(sx, sy, sm)), Batch(qx, qy, qm))

        s, q = tasks.support, tasks.query
        return torch.func.vmap(one)(s.x, s.y, s.mask, q.x, q.y, q.mask).mean()

    def meta_gradient(self, params: Params, tasks: TaskBatch) -> tuple[Tensor, Params]:
        """The meta-loss and its gradient, both detached."""
        return _loss_and_grad(self.meta_loss, params, tasks)


class PooledRatings(RatingMAML):
    """The decisive ablation: the same scorer fitted to every row of the training users at once
    (support and query pooled, no inner loop in training), adapted at test with the same inner
    loop and budget as :class:`RatingMAML`."""

    def meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """``()`` mean over tasks of the MSE of all their rows, without adaptation."""
        s, q = tasks.support, tasks.query
        x, y, mask = (torch.cat(pair, dim=1) for pair in ((s.x, q.x), (s.y, q.y), (s.mask, q.mask)))
        per_row = F.mse_loss(score(params, x), y, reduction="none")  # (T, n_s + n_q)
        return ((per_row * mask).sum(1) / mask.sum(1).clamp_min(1.0)).mean()


def _loss_and_grad(
    loss_fn: Callable[[Params, TaskBatch], Tensor], params: Params, tasks: TaskBatch
) -> tuple[Tensor, Params]:
    with torch.enable_grad():
        leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
        loss = loss_fn(leaves, tasks)
        grads = torch.autograd.grad(
            loss, list(leaves.values()), allow_unused=True, materialize_grads=True
        )
    return loss.detach(), dict(zip(leaves, grads, strict=True))


def predict_ratings(
    learner: RatingMAML,
    params: Params,
    features: RatingFeatures,
    tasks: Sequence[UserTask],
    *,
    adapt: bool,
    own_in_stats: bool = False,
) -> list[np.ndarray]:
    """Predicted query ratings of each task, after adapting on its support (or not).

    Returns:
        One ``(n_q,)`` array per task, in order.
    """
    out: list[np.ndarray] = []
    for start in range(0, len(tasks), _CHUNK):
        chunk = tasks[start : start + _CHUNK]
        pairs = [features.rows(t, own_in_stats=own_in_stats) for t in chunk]
        support = stack_batches([s for s, _ in pairs])
        query = stack_batches([q for _, q in pairs])
        if adapt and learner.config.inner_steps > 0:
            adapted = torch.func.vmap(lambda x, y, m: learner.adapt(params, Batch(x, y, m)))(
                support.x, support.y, support.mask
            )
            with torch.no_grad():
                predicted = torch.func.vmap(score)(
                    {k: v.detach() for k, v in adapted.items()}, query.x
                )
        else:
            with torch.no_grad():
                predicted = score(params, query.x)
        for row, task in enumerate(chunk):
            out.append(predicted[row, : len(task.query_items)].double().numpy() + features.mu)
    return out


# ---- closed-form references ------------------------------------------------------------------


@dataclass(frozen=True)
class BiasReference:
    """The baseline predictor ``mu + b_i + b_u`` with damped means (Koren, "Factor in the
    Neighbors", TKDD 2010, section 2.1), or one of its parts.

    ``b_i = sum(r - mu) / (n_i + item_damping)`` over the book's training ratings (0 for a book
    never rated in training: the item-cold case); ``b_u = sum(r - mu - b_i) / (n_s +
    user_damping)`` over the user's support.
    """

    use_item: bool
    use_user: bool
    item_damping: float = 0.0
    user_damping: float = 0.0

    def predict(self, features: RatingFeatures, task: UserTask) -> np.ndarray:
        """``(n_q,)`` predicted query ratings."""
        b_query = self._item_bias(features, task.query_items)
        b_user = 0.0
        if self.use_user:
            residual = task.support_ratings - features.mu
            residual = residual - self._item_bias(features, task.support_items)
            b_user = float(residual.sum() / (len(residual) + self.user_damping))
        return np.full(len(task.query_items), features.mu + b_user) + b_query

    def _item_bias(self, features: RatingFeatures, items: np.ndarray) -> np.ndarray | float:
        if not self.use_item:
            return 0.0
        total = features.item_count[items] + self.item_damping
        # A book never rated in training has no bias (0 / 0 when undamped).
        return np.divide(features.item_sum[items], total, out=np.zeros(len(items)), where=total > 0)


def tune_reference(
    method: str, features: RatingFeatures, validation: Sequence[UserTask]
) -> BiasReference:
    """The damping(s) of a reference with the lowest mean validation MAE (its tuning budget)."""
    use_item = method in ("bias", "item-mean")
    use_user = method in ("bias", "user-mean")
    grid = [
        BiasReference(use_item, use_user, item_damping, user_damping)
        for item_damping in (_DAMPING_GRID if use_item else (0.0,))
        for user_damping in (_DAMPING_GRID if use_user else (0.0,))
    ]

    def validation_mae(reference: BiasReference) -> float:
        errors = [
            np.abs(reference.predict(features, t) - t.query_ratings).mean() for t in validation
        ]
        return float(np.mean(errors))

    return min(grid, key=validation_mae)


# ---- the protocol ----------------------------------------------------------------------------


def melu_config(*, seed: int = 0, quick: bool = False) -> TrainConfig:
    """The protocol's default training config (users as tasks; chosen on validation users only,
    see docs/MELU_PROTOCOL.md). ``quick`` shortens meta-training for smoke runs."""
    return TrainConfig(
        seed=seed,
        features=FeatureConfig(
            max_vocab_per_field=128,
            oov_buckets=16,
            categorical_fields=("authors", "publisher"),
            extra_fields=("year_id",),
            numeric_fields=(),
            cf_rank=0,
        ),
        tasks=TaskConfig(kind="user"),
        model=ModelConfig(hidden=(64, 32)),
        meta=MetaConfig(
            inner_steps=3,
            inner_lr=0.05,
            outer_lr=3e-3,
            meta_batch_size=32,
            meta_steps=100 if quick else 1000,
        ),
    )


def evaluate_melu(
    store_path: str | Path,
    *,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    quick: bool = False,
    config: TrainConfig | None = None,
    ks: Sequence[int] = (5,),
    n_resamples: int = 1000,
    progress: bool = False,
) -> list[dict[str, object]]:
    """Run the MeLU-line protocol on a DBook store (see the module docstring).

    Args:
        store_path: a store ingested with ``--format dbook``.
        methods: names from :data:`METHODS`; None runs them all.
        seed: the run seed (task splits, validation users, initialisation, sampling).
        quick: short meta-training (every method and split is still evaluated).
        config: overrides :func:`melu_config` (``tasks.kind`` must be ``"user"``; ``meta``,
            ``model`` and ``features`` are read).
        ks: nDCG cutoffs.
        n_resamples: bootstrap resamples per confidence interval.
        progress: show meta-training progress bars.

    Returns:
        PROTOCOL.md §4 records, one per (method, split, metric, k): ``protocol`` "melu",
        ``ranking`` (says it is within the query, not full ranking), ``method``, ``family``,
        ``shots`` None (supports hold 3 to 90 ratings), ``category`` = the test split, ``metric``
        (``mae``, ``rmse``, ``ndcg``), ``k`` (None for errors), ``mean``, ``ci_low``,
        ``ci_high``, ``n_users``, ``split_checksum``; metarec-family records add ``vs_baseline``
        (the best baseline on that split and metric), its ``baseline_mean`` and ``p_value``
        (paired Wilcoxon signed-rank over the same users).

    Raises:
        ConfigError: an unknown method, or ``tasks.kind`` other than ``"user"``.
        DataError: the store lacks the DBook splits, or a split has no eligible user.
    """
    chosen = _check_methods(methods)
    config = config if config is not None else melu_config(seed=seed, quick=quick)
    if config.tasks.kind != "user":
        raise ConfigError(
            f"the melu protocol treats users as tasks; got tasks.kind={config.tasks.kind!r}, "
            "set it to 'user'"
        )
    items, users, ratings = _load(Path(store_path))
    tasks = {
        split: melu_tasks(ratings.loc[ratings["event"] == split], split=split, seed=seed)
        for split in (TRAIN_SPLIT, *TEST_SPLITS)
    }
    for split, found in tasks.items():
        if not found:
            raise DataError(
                f"split {split!r} has no user with {SplitRule.min_items} to "
                f"{SplitRule.max_items} ratings; is this the full DBook data?"
            )
    train_tasks, val_tasks = _hold_out(tasks[TRAIN_SPLIT], seed)
    held_out = {t.user_idx for t in val_tasks}
    visible = ratings.loc[
        (ratings["event"] == TRAIN_SPLIT) & ~ratings["user_idx"].isin(list(held_out))
    ]
    features = RatingFeatures.fit(items, users, visible, config.features)
    predictions = _predict_all(chosen, features, train_tasks, val_tasks, tasks, config, progress)
    checksum = split_checksum(tasks)
    return _records(predictions, tasks, chosen, ks, seed, n_resamples, checksum)


def _check_methods(methods: Sequence[str] | None) -> list[str]:
    chosen = list(METHODS) if methods is None else list(dict.fromkeys(methods))
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise ConfigError(
            f"unknown melu method(s) {unknown or '(none given)'}; choose from {', '.join(METHODS)}"
        )
    return chosen


def _load(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Items, users and rated interactions (with user_id and event) of a DBook store."""
    if not path.exists():
        raise DataError(f"store {path} does not exist; ingest DBook first (--format dbook)")
    with Store.open(path, read_only=True) as store:
        items, users, interactions = store.items(), store.users(), store.interactions()
    rated = interactions.loc[interactions["rating"].notna()]
    missing = [s for s in (TRAIN_SPLIT, *TEST_SPLITS) if s not in set(rated["event"].dropna())]
    if missing:
        raise DataError(
            f"store {path} has no rated interactions with event {missing}: the melu protocol "
            "needs MetaHIN's DBook splits, ingested with `metarec ingest <dbook folder> "
            "--format dbook`"
        )
    user_id = users.set_index("user_idx")["user_id"]
    ratings = rated.assign(user_id=user_id.reindex(rated["user_idx"]).to_numpy())
    return items, users, ratings[["user_idx", "user_id", "item_idx", "rating", "event"]]


def _hold_out(tasks: list[UserTask], seed: int) -> tuple[list[UserTask], list[UserTask]]:
    """Training users, and a seeded share held out for model selection."""
    rng = np.random.default_rng(derived_seed(seed, "melu-validation"))
    n_val = max(1, round(_VALIDATION_SHARE * len(tasks)))
    held = set(rng.permutation(len(tasks))[:n_val].tolist())
    return (
        [t for i, t in enumerate(tasks) if i not in held],
        [t for i, t in enumerate(tasks) if i in held],
    )


def _predict_all(
    chosen: list[str],
    features: RatingFeatures,
    train_tasks: list[UserTask],
    val_tasks: list[UserTask],
    tasks: dict[str, list[UserTask]],
    config: TrainConfig,
    progress: bool,
) -> dict[str, dict[str, list[np.ndarray]]]:
    """Predicted query ratings: method -> test split -> one array per user."""
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    learners = {"maml": RatingMAML(config.meta), "pretrain": PooledRatings(config.meta)}
    trained: dict[str, Params] = {}
    for method in chosen:
        if method in _TRAINED:
            kind, adapt = _TRAINED[method]
            if kind not in trained:
                trained[kind] = _fit(
                    learners[kind], features, train_tasks, val_tasks, config, kind, progress
                )
            params = trained[kind]
            out[method] = {
                # Both runs adapt through the same inner loop (PooledRatings inherits it).
                split: predict_ratings(learners[kind], params, features, tasks[split], adapt=adapt)
                for split in TEST_SPLITS
            }
        else:
            reference = tune_reference(method, features, val_tasks)
            out[method] = {
                split: [reference.predict(features, t) for t in tasks[split]]
                for split in TEST_SPLITS
            }
    return out


def _fit(
    learner: RatingMAML,
    features: RatingFeatures,
    train_tasks: list[UserTask],
    val_tasks: list[UserTask],
    config: TrainConfig,
    key: str,
    progress: bool,
) -> Params:
    """Meta-train (or pool-train) from the shared initialisation; select on validation MAE
    after adaptation with the inner loop."""
    init = init_params(
        features.dim,
        config.model,
        generator=torch.Generator().manual_seed(derived_seed(config.seed, "melu-init")),
    )
    scorer = RatingMAML(config.meta)

    def sample(n: int, generator: torch.Generator) -> TaskBatch:
        picked = torch.randperm(len(train_tasks), generator=generator)[:n].tolist()
        return stack_tasks([features.rows(train_tasks[i], own_in_stats=True) for i in picked])

    def validate(params: Params) -> float:
        predicted = predict_ratings(scorer, params, features, val_tasks, adapt=True)
        errors = [
            np.abs(p - t.query_ratings).mean() for p, t in zip(predicted, val_tasks, strict=True)
        ]
        return -float(np.mean(errors))  # higher is better

    best, _ = meta_train(
        init,
        learner,
        sample,
        config.meta,
        generator=torch.Generator().manual_seed(derived_seed(config.seed, f"melu-{key}")),
        validate=validate,
        validate_every=max(1, config.meta.meta_steps // 10),
        progress=progress,
    )
    return best


def _records(
    predictions: dict[str, dict[str, list[np.ndarray]]],
    tasks: dict[str, list[UserTask]],
    chosen: list[str],
    ks: Sequence[int],
    seed: int,
    n_resamples: int,
    checksum: str,
) -> list[dict[str, object]]:
    per_user: dict[tuple[str, str], dict[tuple[str, int | None], np.ndarray]] = {}
    for split in TEST_SPLITS:
        keys = [
            np.random.default_rng(derived_seed(seed, f"melu-ties:{split}:{t.user_idx}")).random(
                len(t.query_items)
            )
            for t in tasks[split]
        ]
        for method in chosen:
            rows = [
                user_metrics(p, t.query_ratings, ks, key)
                for p, t, key in zip(predictions[method][split], tasks[split], keys, strict=True)
            ]
            per_user[(method, split)] = {m: np.array([r[m] for r in rows]) for m in rows[0]}
    records: list[dict[str, object]] = []
    for method in chosen:
        for split in TEST_SPLITS:
            for (metric, k), values in per_user[(method, split)].items():
                mean, low, high = bootstrap_ci(
                    values, n_resamples=n_resamples, seed=derived_seed(seed, split)
                )
                record: dict[str, object] = {
                    "protocol": "melu",
                    "ranking": RANKING,
                    "method": method,
                    "family": METHODS[method],
                    "shots": None,
                    "category": split,
                    "metric": metric,
                    "k": k,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n_users": len(values),
                    "split_checksum": checksum,
                }
                if METHODS[method] == "metarec":
                    record.update(_versus_best(per_user, chosen, method, split, (metric, k)))
                records.append(record)
    return records


def _versus_best(
    per_user: dict[tuple[str, str], dict[tuple[str, int | None], np.ndarray]],
    chosen: list[str],
    method: str,
    split: str,
    key: tuple[str, int | None],
) -> dict[str, object]:
    """The best baseline on this split and metric, and the paired p-value against it."""
    baselines = [m for m in chosen if METHODS[m] == "baseline"]
    if not baselines:
        return {}
    sign = -1.0 if key[0] in ("mae", "rmse") else 1.0  # errors: lower is better
    best = max(baselines, key=lambda m: sign * float(per_user[(m, split)][key].mean()))
    theirs = per_user[(best, split)][key]
    p_value = paired_test(per_user[(method, split)][key], theirs)
    return {"vs_baseline": best, "baseline_mean": float(theirs.mean()), "p_value": p_value}


def melu_table(records: Sequence[dict[str, object]]) -> str:
    """A Markdown table of melu records: one row per (split, method), MAE / RMSE / nDCG@k
    with their 95% CIs."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    columns: list[str] = []
    for r in records:
        if r.get("protocol") != "melu":
            continue
        name = f"{str(r['metric']).upper()}" + (f"@{r['k']}" if r["k"] is not None else "")
        if name not in columns:
            columns.append(name)
        row = cells.setdefault((str(r["category"]), str(r["method"])), {"users": str(r["n_users"])})
        row[name] = f"{r['mean']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
    lines = [
        "| split | method | " + " | ".join(columns) + " | users |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for (split, method), row in cells.items():
        values = " | ".join(row.get(c, "") for c in columns)
        lines.append(f"| {split} | {method} | {values} | {row['users']} |")
    return "\n".join(lines)
