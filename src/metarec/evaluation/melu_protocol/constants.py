"""The protocol's names: splits, ranking setting, methods and their families."""

from __future__ import annotations

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

N_SCALARS = 5
