"""Training a code model on ``applied_aitk.train.fit``, the loop every use case shares: random windows of
the token stream, AdamW with warmup and cosine decay, held-out loss every ``eval_steps`` steps (fit's
"epoch"), early stopping on it, and checkpoints to resume an interrupted run from.

A checkpoint is a folder (``BUNDLE.ckpt`` by default) of safetensors and JSON, never a pickle:
``model.safetensors``, ``best.safetensors``, ``optimizer.safetensors``, ``state.json`` and the
``tokenizer.json`` it was trained with. It is written after an evaluation, to a temporary folder
renamed into place; the run that completes a bundle removes it (``TrainResult.checkpoint``)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from applied_aitk import AitkError
from applied_aitk.console import get_logger
from applied_aitk.files import replace_dir
from applied_aitk.text import pad_ids
from applied_aitk.train import EarlyStopping, FitResult, bf16_supported, fit

from applied_aitk.usecases.codegen.fim import fim_rows

logger = get_logger(__name__)

# Settings a checkpoint must share with the run that resumes it.
SHAPE_SETTINGS = ("arch", "size", "vocab_size", "context_length", "seed", "include", "val_fraction", "init", "fim_rate")


def autocast_dtype(precision: str, device: str):
    """bf16 autocast where the hardware has bf16 arithmetic ("auto"), or as asked; None for fp32."""
    if precision == "fp32":
        return None
    if precision not in ("auto", "bf16"):
        raise AitkError(f"setting precision={precision!r}: expected auto, bf16 or fp32")
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if bf16_supported(device) else None


def batch_at(stream: np.ndarray, step: int, batch_size: int, context: int, seed: int, fim=None, fim_rate: float = 0.0) -> torch.Tensor:
    """The windows of step ``step``: a function of (seed, step) only, so a resumed run sees the same data.
    ``fim``: ``(Fim, end_id)``, with which a share ``fim_rate`` of them is rewritten for fill-in-the-middle."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(stream) - context + 1, batch_size)
    rows = np.stack([stream[s : s + context] for s in starts]).astype(np.int64)
    if fim is not None:
        rows = fim_rows(rows, *fim, fim_rate, rng)
    return torch.from_numpy(rows)


def heldout_loss(model, windows: list[np.ndarray], batch_size: int, pad_id: int, device: str, dtype) -> tuple[float, int]:
    """Mean next-token loss over ``windows`` (right-padded where short) and the number of tokens scored."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        for i in range(0, len(windows), batch_size):
            ids, mask = pad_ids(windows[i : i + batch_size], pad_id)
            ids, mask = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            total += float((nll * mask[:, 1:]).sum())
            count += int(mask[:, 1:].sum())
    model.train()
    return total / max(count, 1), count


def make_optimizer(model, lr: float, weight_decay: float):
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def learning_rate(step: int, seconds: float, config) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak by the last step, or by ``max_time``
    when that comes first, so that a run limited by time still ends with a decayed rate."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    done = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    if config.max_time:
        done = max(done, seconds / config.max_time)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))


def train_steps(model, stream: np.ndarray, windows: list[np.ndarray], config, device: str, pad_id: int,
                checkpoint: Checkpoint, tokenizer_json: str, fim=None) -> FitResult:
    """Train ``model`` in place for ``config.max_steps`` optimizer steps of ``batch_size`` windows of
    ``stream`` (int32 token ids), or ``max_time`` seconds, through ``applied_aitk.train.fit``: an "epoch" is
    ``eval_steps`` steps followed by the held-out loss on ``windows`` (``heldout_loss``, the early-stopping
    monitor; the best weights are restored at the end). Resumes from ``checkpoint`` when
    ``config.resume``, and saves to it after the evaluation that follows every ``save_steps`` steps and
    after the last one (``save_steps`` 0: never). ``fim``: ``(Fim, end_id)`` to train fill-in-the-middle."""
    if len(stream) < config.context_length + 1:
        raise AitkError(f"corpus has {len(stream)} training tokens; need more than context={config.context_length}")
    dtype = autocast_dtype(config.precision, device)
    model.to(device).train()
    optimizer = make_optimizer(model, config.learning_rate, config.weight_decay)
    result, stopper = checkpoint.restore(model, optimizer, config, device) if config.resume else (FitResult(), EarlyStopping())
    logger.info(f"training {config.arch}/{config.size} on {len(stream):,} tokens, {len(windows)} held-out windows, "
                f"device {device}{', bf16 autocast' if dtype else ''}, steps {result.steps}..{config.max_steps}")
    clock = time.perf_counter() - result.seconds
    saved = [result.steps]

    def batches(epoch: int) -> range:
        return range(result.steps, min(result.steps + config.eval_steps, config.max_steps))

    def step(index: int) -> float:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(index, time.perf_counter() - clock, config)
        x = batch_at(stream, index, config.batch_size, config.context_length, config.seed, fim, config.fim_rate).to(device)
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def validate() -> dict[str, float]:
        loss, _ = heldout_loss(model, windows, config.batch_size, pad_id, device, dtype)
        return {"heldout_loss": loss, "heldout_ppl": math.exp(min(loss, 50))}

    def on_epoch(done: FitResult, early: EarlyStopping) -> None:
        last = done.steps >= config.max_steps or done.stopped != "epochs"
        if config.save_steps and (last or done.steps // config.save_steps > saved[0] // config.save_steps):
            checkpoint.save(model, optimizer, early, done, config, tokenizer_json)
            saved[0] = done.steps

    remaining = math.ceil(max(0, config.max_steps - result.steps) / config.eval_steps)
    return fit(model, batches, step, validate if windows else None, epochs=len(result.history) + remaining, monitor="heldout_loss",
               patience=config.patience, max_steps=config.max_steps, max_time=config.max_time, result=result, stopper=stopper, on_epoch=on_epoch)


class Checkpoint:
    """A training checkpoint folder to resume from."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def exists(self) -> bool:
        return (self.folder / "state.json").is_file()

    def tokenizer_path(self) -> Path:
        return self.folder / "tokenizer.json"

    def check(self, config) -> dict[str, Any]:
        """The checkpoint's state; AitkError when there is none or it was made with other shape settings."""
        if not self.exists():
            raise AitkError(f"{self.folder}: no checkpoint to resume from (train once without resume=true)")
        saved = json.loads((self.folder / "state.json").read_text())
        theirs = saved["config"]
        for key in SHAPE_SETTINGS:
            if theirs.get(key, 0.0 if key == "fim_rate" else None) != getattr(config, key):
                raise AitkError(f"{self.folder}: checkpoint was trained with {key}={theirs.get(key)!r}, this run has {key}={getattr(config, key)!r}")
        return saved

    def save(self, model, optimizer, stopper: EarlyStopping, result: FitResult, config, tokenizer_json: str) -> None:
        """Write the run as it stands after an evaluation: weights, best weights, optimizer, fit's
        result and early-stopping state, the settings and the tokenizer."""
        from safetensors.torch import save_file

        from applied_aitk.usecases.codegen.model import unique_state_dict

        tmp = self.folder.with_name(f".{self.folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        names = set(unique_state_dict(model))
        save_file(_cpu(unique_state_dict(model)), tmp / "model.safetensors")
        if stopper.best_state is not None:
            save_file(_cpu({k: v for k, v in stopper.best_state.items() if k in names}), tmp / "best.safetensors")
        tensors, groups = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, tmp / "optimizer.safetensors")
        (tmp / "tokenizer.json").write_text(tokenizer_json)
        state = {"result": asdict(result), "early_stopping": {"bad_epochs": stopper.bad_epochs}, "config": asdict(config), "param_groups": groups}
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        replace_dir(tmp, self.folder)

    def restore(self, model, optimizer, config, device: str) -> tuple[FitResult, EarlyStopping]:
        """Load weights and optimizer state into ``model`` and ``optimizer``; fit's result and early
        stopping to continue with. AitkError when the checkpoint is missing or does not fit ``config``."""
        from safetensors.torch import load_file

        saved = self.check(config)
        _load_weights(model, load_file(self.folder / "model.safetensors", device=device))
        optimizer.load_state_dict(_unflatten_optimizer(load_file(self.folder / "optimizer.safetensors", device=device), saved["param_groups"]))
        result, stopper = _fit_state(saved)
        if (self.folder / "best.safetensors").is_file():
            best = {k: v.clone() for k, v in model.state_dict().items()}
            best.update(load_file(self.folder / "best.safetensors", device=device))
            stopper.best_state = best
        logger.info(f"resuming from {self.folder} at step {result.steps}")
        return result, stopper


def _fit_state(saved: dict[str, Any]) -> tuple[FitResult, EarlyStopping]:
    """fit's result and early stopping as a checkpoint left them. The best epoch and value are the
    result's (``best_epoch`` 1-based); older checkpoints kept them, 0-based, with early stopping."""
    result = FitResult(**saved["result"])
    early = saved["early_stopping"]
    if "best_epoch" in early:
        result.best, result.best_epoch = early["best"], early["best_epoch"] + 1
    stopper = EarlyStopping()
    stopper.best, stopper.best_epoch, stopper.bad_epochs = result.best, result.best_epoch - 1, early["bad_epochs"]
    return result, stopper


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _load_weights(model, weights: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(weights, strict=False)
    model.tie_weights()
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise AitkError(f"checkpoint weights do not fit the model (missing {sorted(set(missing) - tied)[:3]})")


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors = {f"{index}.{key}": value.detach().cpu().contiguous() for index, slots in state_dict["state"].items() for key, value in slots.items()}
    return tensors, state_dict["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value.cpu() if key == "step" else value
    return {"state": state, "param_groups": groups}
