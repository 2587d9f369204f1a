"""Training: the loop (``trainer``), the objective, the schedules, and torchrun helpers."""
from .trainer import Trainer, resume, train

__all__ = ["Trainer", "train", "resume"]
