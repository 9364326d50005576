"""Shared training pieces: seeding, early stopping, each epoch's metrics (on the epoch bar, or in the
log), and the one training loop (``fit``) with early stopping and a budget (``max_steps``, ``max_time``)."""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from applied_aitk.console import bars_enabled, epoch_progress, get_logger, progress

logger = get_logger(__name__)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def bf16_supported(device: str) -> bool:
    """Whether ``device`` ("cuda..." or "cpu") computes in bfloat16 natively: a CUDA GPU with bf16
    units, or a CPU with AVX-512 BF16 or AMX (x86) or BF16 (ARM) instructions, as torch's public
    ``torch.cpu.get_capabilities()`` reports them (a torch without it: False, no autocast)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    return any(capabilities.get(name) for name in ("avx512_bf16", "amx_bf16", "bf16"))


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


def log_epoch(epoch: int, epochs: int, bar: Any = None, **values: float) -> None:
    """One epoch's metrics: on ``bar`` (from ``applied_aitk.console.epoch_progress``) when it is shown,
    and then as a debug line only (``--debug``, ``--log-file``); otherwise as an info line."""
    shown = bar is not None and bars_enabled()
    if shown:
        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
    parts = " ".join(f"{k}={v:.4g}" for k, v in values.items())
    logger.log(logging.DEBUG if shown else logging.INFO, f"epoch {epoch + 1}/{epochs} {parts}")


@dataclass
class FitResult:
    """What ``fit`` did. ``history`` has one entry per epoch run: ``epoch`` (1-based), ``steps``
    (optimizer steps so far), ``seconds`` (since the start), ``loss`` (mean training loss of the
    epoch's steps) and the validation metrics. ``best_epoch`` is 1-based (the last epoch when there
    is no validation) and ``best`` its monitored value, both kept up to date after every epoch (a
    checkpoint records them); ``stopped`` says why training ended: epochs, patience, max_steps or max_time."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best: float | None = None
    steps: int = 0
    seconds: float = 0.0
    stopped: str = "epochs"


def fit(
    module: Any,
    batches: Callable[[int], Iterable[Any]],
    step: Callable[[Any], float],
    validate: Callable[[], dict[str, float]] | None = None,
    *,
    epochs: int,
    monitor: str = "val_loss",
    mode: str = "min",
    patience: int = 0,
    max_steps: int = 0,
    max_time: float = 0.0,
    log_every: int | None = None,
    result: FitResult | None = None,
    stopper: EarlyStopping | None = None,
    on_epoch: Callable[[FitResult, EarlyStopping], None] | None = None,
) -> FitResult:
    """The training loop every use case shares: epochs of optimizer steps, validation after each
    epoch, early stopping, and a budget; the best weights are restored into ``module`` at the end.

    ``batches(epoch)`` yields the epoch's batches (the caller shuffles, with its own generator);
    ``step(batch)`` runs one optimizer step and returns the loss as a float; ``validate()`` returns
    metrics (``module`` in eval mode is its job) among which ``monitor`` is watched (``mode`` "min"
    for a loss, "max" for a score). Training stops at the first of: ``epochs`` epochs, ``patience``
    epochs without a better ``monitor`` (0: never early), ``max_steps`` optimizer steps (0: no
    limit), ``max_time`` seconds (0: no limit). A budget ends the epoch it falls in; that partial
    epoch is validated like the others. Without ``validate`` the last weights are kept.

    Progress: one bar over the epochs (with the latest metrics on it) and one over each epoch's
    steps; without bars, a log line every ``log_every`` epochs (default: about ten lines in all).

    Checkpoints: ``on_epoch(result, stopper)`` is called after each epoch's validation, with what a
    checkpoint holds (``stopper.best_state``: the best weights so far). To continue an interrupted
    run, pass the ``result`` and ``stopper`` saved then (module and optimizer restored by the caller):
    training goes on at epoch ``len(result.history)`` with its history, step count, clock and best
    weights. ``result`` and ``stopper`` (new ones when None) are updated in place and returned."""
    stopper = stopper or EarlyStopping()
    stopper.patience, stopper.mode = patience or 10**9, mode
    result = result or FitResult()
    result.stopped = "epochs"
    started = time.perf_counter() - result.seconds
    log_every = log_every or max(1, epochs // 10)
    for epoch, shown in epoch_progress(epochs, start=len(result.history)):
        module.train()
        losses = []
        for batch in progress(batches(epoch), f"epoch {epoch + 1}", unit="step"):
            losses.append(step(batch))
            result.steps += 1
            result.stopped = _out_of_budget(result.steps, time.perf_counter() - started, max_steps, max_time)
            if result.stopped != "epochs":
                break
        values = {"loss": sum(losses) / max(1, len(losses)), **(validate() if validate else {})}
        result.seconds = time.perf_counter() - started
        result.history.append({"epoch": epoch + 1, "steps": result.steps, "seconds": round(result.seconds, 3), **values})
        last = result.stopped != "epochs" or epoch == epochs - 1
        if validate is None:
            result.best_epoch = epoch + 1
        else:
            if stopper.step(values[monitor], module, epoch) and not last:
                result.stopped, last = "patience", True
            result.best_epoch, result.best = stopper.best_epoch + 1, stopper.best  # so far: what a checkpoint records
        if bars_enabled() or last or epoch % log_every == log_every - 1:
            log_epoch(epoch, epochs, bar=shown, **values)
        if on_epoch is not None:
            on_epoch(result, stopper)
        if last:
            break
    if result.stopped in ("max_steps", "max_time"):
        logger.info(f"training stopped by its budget: {result.stopped}={max_steps if result.stopped == 'max_steps' else max_time} reached after {result.steps} steps")
    if validate is not None:
        stopper.restore_best(module)
        result.best_epoch, result.best = stopper.best_epoch + 1, stopper.best
    return result


def _out_of_budget(steps: int, seconds: float, max_steps: int, max_time: float) -> str:
    if max_steps and steps >= max_steps:
        return "max_steps"
    if max_time and seconds >= max_time:
        return "max_time"
    return "epochs"
