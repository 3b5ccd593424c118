"""The shared training engine: one loop for every trainable part."""

from musiclm.training.checkpoint import CheckpointError
from musiclm.training.engine import Trainable, TrainConfig, Trainer, TrainingError, seed_everything

__all__ = ["CheckpointError", "Trainable", "TrainConfig", "Trainer", "TrainingError", "seed_everything"]
