"""Shared training pieces: seeding, early stopping, and an epoch log line."""

from __future__ import annotations

import copy
import random
from typing import Any

from toolkit.console import log


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EarlyStopping:
    """Tracks a validation score, keeps the best weights, and says when to stop.

    ``mode`` is "min" for a loss, "max" for a score such as accuracy or PR-AUC."""

    def __init__(self, patience: int = 5, mode: str = "min", min_delta: float = 0.0):
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best: float | None = None
        self.best_epoch = -1
        self.best_state: dict[str, Any] | None = None
        self.bad_epochs = 0

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value: float, model, epoch: int) -> bool:
        """Record ``value`` for ``epoch``; True when training should stop."""
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore_best(self, model) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def log_epoch(epoch: int, epochs: int, **values: float) -> None:
    parts = " ".join(f"{k}={v:.4g}" for k, v in values.items())
    log(f"epoch {epoch + 1}/{epochs} {parts}")
