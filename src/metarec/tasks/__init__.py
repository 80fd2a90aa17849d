"""Tasks: a category's (or a user-in-category's) support and query sets."""

from metarec.tasks.category import CategoryData, build_categories, order_positives
from metarec.tasks.rows import (
    SupportState,
    candidate_rows,
    candidate_rows_for,
    labelled_rows,
    pair_rows,
    support_batch,
    support_state,
)
from metarec.tasks.sampler import TaskSampler
from metarec.tasks.split import Split, eligible_count, split_k_shot, split_launch

__all__ = [
    "CategoryData",
    "Split",
    "SupportState",
    "TaskSampler",
    "build_categories",
    "candidate_rows",
    "candidate_rows_for",
    "eligible_count",
    "labelled_rows",
    "order_positives",
    "pair_rows",
    "split_k_shot",
    "split_launch",
    "support_batch",
    "support_state",
]
