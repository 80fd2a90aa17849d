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

from metarec.evaluation.melu_protocol.constants import (
    METHODS,
    N_SCALARS,
    RANKING,
    TEST_SPLITS,
    TRAIN_SPLIT,
)
from metarec.evaluation.melu_protocol.features import RatingFeatures
from metarec.evaluation.melu_protocol.learners import (
    PooledRatings,
    RatingMAML,
    predict_ratings,
    rating_loss,
)
from metarec.evaluation.melu_protocol.metrics import ndcg_within, user_metrics
from metarec.evaluation.melu_protocol.protocol import evaluate_melu, melu_config, melu_table
from metarec.evaluation.melu_protocol.references import BiasReference, tune_reference
from metarec.evaluation.melu_protocol.tasks import SplitRule, UserTask, melu_tasks, split_checksum

__all__ = [
    "METHODS",
    "N_SCALARS",
    "RANKING",
    "TEST_SPLITS",
    "TRAIN_SPLIT",
    "BiasReference",
    "PooledRatings",
    "RatingFeatures",
    "RatingMAML",
    "SplitRule",
    "UserTask",
    "evaluate_melu",
    "melu_config",
    "melu_table",
    "melu_tasks",
    "ndcg_within",
    "predict_ratings",
    "rating_loss",
    "split_checksum",
    "tune_reference",
    "user_metrics",
]
