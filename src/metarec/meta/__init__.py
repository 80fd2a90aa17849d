"""Meta-learning: the task batch contract, the single inner loop, the algorithms, the outer loop."""

from metarec.meta.anil import ANIL
from metarec.meta.inner import adapt, task_loss
from metarec.meta.maml import FOMAML, MAML, MetaLearner
from metarec.meta.melu_local import MeLULocal
from metarec.meta.meta_sgd import MetaSGD
from metarec.meta.model import MetaModel, load_model, prepare_model, save_model, train_on
from metarec.meta.registry import ALGORITHMS, build_learner
from metarec.meta.reptile import Reptile
from metarec.meta.spec import InnerLoop, adapt_with, scorer_params
from metarec.meta.state import TrainState
from metarec.meta.trainer import meta_train
from metarec.models.scorer import Params
from metarec.tasks.batch import Batch, TaskBatch, stack_batches, stack_tasks

__all__ = [
    "ALGORITHMS",
    "ANIL",
    "FOMAML",
    "MAML",
    "Batch",
    "InnerLoop",
    "MeLULocal",
    "MetaLearner",
    "MetaModel",
    "MetaSGD",
    "Params",
    "Reptile",
    "TaskBatch",
    "TrainState",
    "adapt",
    "adapt_with",
    "build_learner",
    "load_model",
    "meta_train",
    "prepare_model",
    "save_model",
    "scorer_params",
    "stack_batches",
    "stack_tasks",
    "task_loss",
    "train_on",
]
