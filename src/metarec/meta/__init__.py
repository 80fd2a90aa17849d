"""Meta-learning: the task batch contract, the single inner loop, the algorithms, the outer loop."""

from metarec.meta.anil import ANIL
from metarec.meta.batch import Batch, Params, TaskBatch, stack_batches, stack_tasks
from metarec.meta.inner import adapt, task_loss
from metarec.meta.maml import FOMAML, MAML, MetaLearner
from metarec.meta.melu_local import MeLULocal
from metarec.meta.meta_sgd import MetaSGD
from metarec.meta.registry import ALGORITHMS, build_learner
from metarec.meta.reptile import Reptile
from metarec.meta.spec import InnerLoop, adapt_with, scorer_params
from metarec.meta.trainer import TrainState, meta_train

__all__ = [
    "ALGORITHMS",
    "ANIL",
    "FOMAML",
    "MAML",
    "Batch",
    "InnerLoop",
    "MeLULocal",
    "MetaLearner",
    "MetaSGD",
    "Params",
    "Reptile",
    "TaskBatch",
    "TrainState",
    "adapt",
    "adapt_with",
    "build_learner",
    "meta_train",
    "scorer_params",
    "stack_batches",
    "stack_tasks",
    "task_loss",
]
