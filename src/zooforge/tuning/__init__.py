"""Training: the one loop every part of zooforge reuses, and the fine-tuning methods on top of it."""

from zooforge.tuning.loop import TrainConfig, TrainResult, evaluate_accuracy, train
from zooforge.tuning.methods import METHODS, MethodConfig, TaskModel, build, load_adapters, save_adapters
from zooforge.tuning.tune import TuneResult, tune

__all__ = ["METHODS", "MethodConfig", "TaskModel", "TrainConfig", "TrainResult", "TuneResult", "build",
           "evaluate_accuracy", "load_adapters", "save_adapters", "train", "tune"]
