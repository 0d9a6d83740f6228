"""Training: state, pure steps, the loop, checkpoints, optimizers, metric writers."""

from attnjax.train.checkpoints import Checkpointer
from attnjax.train.loop import create_model_and_state, evaluate, parameter_count, train_and_evaluate
from attnjax.train.optimizers import OPTIMIZERS, SCHEDULES, build_optimizer
from attnjax.train.state import TrainState
from attnjax.train.steps import make_train_step
from attnjax.train.tasks import classification_eval_step, classification_loss
from attnjax.train.workdir import prepare_workdir
from attnjax.train.writers import MetricWriter, read_metrics

__all__ = [
    "Checkpointer", "MetricWriter", "OPTIMIZERS", "SCHEDULES", "TrainState",
    "build_optimizer", "classification_eval_step", "classification_loss", "create_model_and_state",
    "evaluate", "make_train_step", "parameter_count", "prepare_workdir", "read_metrics",
    "train_and_evaluate",
]
