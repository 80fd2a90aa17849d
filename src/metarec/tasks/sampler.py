"""Meta-training tasks: sampled from the meta-train categories exactly as a launch looks.

Each task draws a category and a shot count, splits it k-shot per user (the evaluation protocol's
split), builds support rows with the same function adaptation uses at launch, and query rows from
the held-out positives. ``kind="category"`` makes one task of many users (the category launches);
``kind="user"`` makes one task of one user in one category (MeLU's formulation).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import torch

from metarec.config import TaskConfig
from metarec.errors import DataError
from metarec.tasks.batch import Batch, TaskBatch, stack_tasks
from metarec.tasks.category import CategoryData
from metarec.tasks.rows import SupportState, labelled_rows, support_batch, support_state
from metarec.tasks.split import Split, eligible_count, split_k_shot

_MIN_TASK_USERS = 2  # a category task needs someone to predict for besides a single user


class TaskSampler:
    """Draws padded task batches from meta-training categories.

    Args:
        categories: the meta-training categories.
        config: task settings (kind, shots, negatives, row caps).

    Raises:
        DataError: no category has enough users for any of ``config.train_shots``.
    """

    def __init__(self, categories: Sequence[CategoryData], config: TaskConfig) -> None:
        self.config = config
        self.options: list[tuple[CategoryData, int]] = [
            (category, shots)
            for category in categories
            for shots in config.train_shots
            if eligible_count(category, shots) >= _MIN_TASK_USERS
        ]
        if not self.options:
            raise DataError(
                f"no meta-training category has {_MIN_TASK_USERS} users with more than "
                f"{min(config.train_shots)} positives; lower tasks.train_shots or add data"
            )
        self._prepared = cache(self._prepare)

    def _prepare(self, option: int) -> tuple[Split, SupportState, torch.Tensor, np.ndarray]:
        category, shots = self.options[option]
        split = split_k_shot(category, shots)
        query_users = np.flatnonzero(split.eligible)
        return split, support_state(category, split), category.positive_codes(), query_users

    def __call__(self, n_tasks: int, generator: torch.Generator) -> TaskBatch:
        """Sample ``n_tasks`` tasks, padded and stacked; random only through ``generator``.

        Each task carries its category's context (:attr:`CategoryData.context`), which
        category-conditioned models start from.
        """
        picks = [int(p) for p in torch.randint(len(self.options), (n_tasks,), generator=generator)]
        return stack_tasks(
            [self._task(p, generator) for p in picks],
            contexts=[self.options[p][0].context for p in picks],
        )

    def _task(self, option: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        category, _ = self.options[option]
        split, state, all_codes, eligible = self._prepared(option)
        per_row = 1 + self.config.negatives
        if self.config.kind == "user":
            user = int(eligible[torch.randint(len(eligible), (1,), generator=generator)])
            mine = category.pos_user == user
            split = Split(split.support & mine, split.query & mine, split.eligible, split.shots)
        support = support_batch(
            category,
            state,
            split,
            n_negatives=self.config.negatives,
            generator=generator,
            max_positives=self.config.max_support // per_row,
        )
        query_idx = np.flatnonzero(split.query)
        cap = self.config.max_query // per_row
        if len(query_idx) > cap:
            pick = torch.randperm(len(query_idx), generator=generator)[:cap].numpy()
            query_idx = np.sort(query_idx[pick])
        query = labelled_rows(
            category,
            state,
            torch.as_tensor(category.pos_user[query_idx], dtype=torch.long),
            torch.as_tensor(category.pos_item[query_idx], dtype=torch.long),
            n_negatives=self.config.negatives,
            forbidden=all_codes,  # in training every known positive is off-limits as a negative
            generator=generator,
            leave_one_out=False,
        )
        return support, query
