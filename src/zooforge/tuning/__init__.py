"""Training: the one loop every part of zooforge reuses."""

from zooforge.tuning.loop import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
