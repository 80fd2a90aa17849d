"""Tasks: a category's (or a user-in-category's) support and query sets, as rows."""

from metarec.tasks.batch import Batch, TaskBatch, stack_batches, stack_tasks
from metarec.tasks.build import category_data, encoded_items
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
from metarec.tasks.split import (
    Split,
    eligible_count,
    evaluation_masks,
    split_categories,
    split_k_shot,
    split_launch,
)

__all__ = [
    "Batch",
    "CategoryData",
    "Split",
    "SupportState",
    "TaskBatch",
    "TaskSampler",
    "build_categories",
    "candidate_rows",
    "candidate_rows_for",
    "category_data",
    "eligible_count",
    "encoded_items",
    "evaluation_masks",
    "labelled_rows",
    "order_positives",
    "pair_rows",
    "split_categories",
    "split_k_shot",
    "split_launch",
    "stack_batches",
    "stack_tasks",
    "support_batch",
    "support_state",
]
