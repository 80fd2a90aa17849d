"""Meta-learning: the task batch contract, the single inner loop, MAML, and the outer loop."""

from metarec.meta.batch import Batch, Params, TaskBatch, stack_batches, stack_tasks
from metarec.meta.inner import adapt, task_loss
from metarec.meta.maml import ALGORITHMS, MAML, MetaLearner, build_learner
from metarec.meta.trainer import TrainState, meta_train

__all__ = [
    "ALGORITHMS",
    "MAML",
    "Batch",
    "MetaLearner",
    "Params",
    "TaskBatch",
    "TrainState",
    "adapt",
    "build_learner",
    "meta_train",
    "stack_batches",
    "stack_tasks",
    "task_loss",
]
