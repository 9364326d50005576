"""Training: fine-tune (or freeze) the encoder for intent classification; the result for the core
to package, whose check embeds the FAQ question variants with the exported graph."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from applied_aitk import AitkError, Graph, TrainResult
from applied_aitk.console import get_logger, progress
import applied_aitk.train
from applied_aitk.runtime import Runtime
from applied_aitk.train import bf16_supported, seed_everything

from applied_aitk.usecases.chatbot.data import FAQ_PREFIX, labelled_data
from applied_aitk.usecases.chatbot.model import IntentModel, build_encoder, pad_id
from applied_aitk.usecases.chatbot.nlu import encode, faq_memory, prepare_tokenizer, run_model, softmax

logger = get_logger(__name__)

INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("logits", "embedding")
AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}, "embedding": {0: "batch"}}


def auto_settings(config) -> dict[str, Any]:
    """Learning rate and epochs when left at 0: they depend on whether the encoder is pretrained."""
    scratch = config.encoder == "scratch"
    lr = config.learning_rate or (5e-4 if scratch else 1e-4)  # 1e-4, 5 epochs: the Banking77 benchmark's recipe
    epochs = config.epochs or (60 if config.freeze_encoder else 40 if scratch else 5)
    return {"lr": lr, "epochs": epochs}


def train(data: Path, config, runtime: Runtime) -> TrainResult:
    started = time.perf_counter()
    seed_everything(config.seed)
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    domain, rows = labelled_data(Path(data), config.domain)
    labels = _labels(domain, rows)
    index = {label: i for i, label in enumerate(labels)}
    texts = [t for t, _ in rows]
    targets = np.array([index[label] for _, label in rows])
    encoder, tokenizer, description = build_encoder(config, texts)
    pad = pad_id(tokenizer)
    utterances = Utterances(prepare_tokenizer(tokenizer, config.max_length, pad), texts)
    train_idx, val_idx = split(targets, config.val_fraction, config.seed)
    logger.info(f"chatbot: {len(rows)} utterances, {len(labels)} labels ({sum(l.startswith(FAQ_PREFIX) for l in labels)} FAQ), "
        f"{len(train_idx)} train / {len(val_idx)} validation, encoder {description}{' (frozen)' if config.freeze_encoder else ''}")
    model = IntentModel(encoder, len(labels), config.dropout)
    device = runtime.torch_device()
    fitted = fit(model, utterances, targets, train_idx, val_idx, config, device)
    history = fitted.pop("history")
    model = model.cpu().float().eval()
    sample_texts = [texts[i] for i in (val_idx if len(val_idx) else train_idx)[:16]]
    eval_idx = (val_idx if len(val_idx) else train_idx)[:512]
    metrics: dict[str, Any] = {"labels": len(labels), "train_examples": len(train_idx), "validation_examples": len(val_idx), **fitted,
                               "train_seconds": round(time.perf_counter() - started, 1)}
    questions, owners = faq_memory(domain)
    result = TrainResult(
        graphs=[],
        weights=model.state_dict(),
        assets={"labels": labels, "max_len": config.max_length, "pad_id": pad, "encoder": description, "threshold": config.threshold,
                "margin": config.margin, "faq_threshold": config.faq_threshold, "faq_owner": owners},
        files={"tokenizer.json": tokenizer.to_str(), "domain.json": _stored_domain(domain), "encoder_config.json": encoder.config.to_dict()},
        metrics=metrics,
        history=history,
        resolved={k: v for k, v in zip(("learning_rate", "epochs"), auto_settings(config).values()) if not getattr(config, k)},
    )

    def check(variant: str, path: Path, fp32: Path) -> dict[str, Any]:
        """On the exported graph: the FAQ embeddings and validation accuracy (fp32), agreement with fp32 (int8)."""
        cpu = Runtime(device="cpu", threads=runtime.threads)
        if variant == "fp32":
            _, faq, _ = run_model(cpu.session(path), tokenizer, questions)
            result.files["faq_embeddings.npy"] = faq.reshape(len(questions), -1).astype(np.float32) if questions else np.zeros((0, encoder.config.hidden_size), np.float32)
            if len(val_idx):
                logits, _, _ = run_model(cpu.session(path), tokenizer, [texts[i] for i in val_idx])
                metrics["val_accuracy"] = round(float(np.mean(logits.argmax(1) == targets[val_idx])), 4)
            return {}
        if variant != "int8":
            return {}
        report = int8_report(cpu.session(fp32), cpu.session(path), tokenizer, [texts[i] for i in eval_idx], targets[val_idx] if len(val_idx) else None)
        if "val_accuracy" in report:
            metrics["val_accuracy_int8"] = report["val_accuracy"]
        return report

    result.graphs.append(_graph(model, tokenizer, texts, sample_texts, check))
    return result


def _labels(domain: dict[str, Any], rows: list[tuple[str, str]]) -> list[str]:
    """Intents in domain order, then FAQ entries; only those with at least one utterance."""
    seen = {label for _, label in rows}
    ordered = [name for name in domain["intents"] if name in seen] + [FAQ_PREFIX + e["id"] for e in domain["faq"]]
    if len(ordered) < 2:
        raise AitkError("training data: need utterances for at least two intents or FAQ entries")
    return ordered


def _stored_domain(domain: dict[str, Any]) -> dict[str, Any]:
    """The domain without training utterances and file paths: what chatting needs."""
    intents = {name: {k: v for k, v in spec.items() if k != "examples"} for name, spec in domain["intents"].items()}
    return {**{k: v for k, v in domain.items() if k != "training_data"}, "intents": intents}


def split(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified validation split: ``fraction`` of each label's utterances (rounded down),
    so labels with few examples (FAQ entries, say) keep them all for training."""
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        val.extend(members[: int(len(members) * fraction)])
    val = np.array(sorted(val), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(targets)), val)
    return train, val


@dataclass
class Utterances:
    """The training texts, tokenised a batch at a time by ``tokenizer`` (which truncates and pads,
    ``prepare_tokenizer``); ``lengths`` holds each text's token count, to batch similar lengths."""

    tokenizer: Any
    texts: list[str]

    def __post_init__(self) -> None:
        _, mask, _ = encode(self.tokenizer, self.texts)
        self.lengths = mask.sum(axis=1)

    def __len__(self) -> int:
        return len(self.texts)

    def batch(self, idx, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) [len(idx), longest in the batch] on ``device``."""
        ids, mask, _ = encode(self.tokenizer, [self.texts[i] for i in idx])
        return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def length_batches(utterances: Utterances, idx: np.ndarray, size: int, rng) -> list[np.ndarray]:
    """Shuffled batches of similar length (sorted within windows of 50 batches), to pad little."""
    shuffled = rng.permutation(idx)
    batches = []
    window = size * 50
    for start in range(0, len(shuffled), window):
        part = sorted(shuffled[start: start + window], key=lambda i: utterances.lengths[i])
        batches += [np.array(part[i: i + size]) for i in range(0, len(part), size)]
    rng.shuffle(batches)
    return batches


def _autocast(config, device: str):
    """bf16 autocast where the hardware runs it natively (CUDA, or CPUs with AVX-512 BF16/AMX)."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=config.bf16 and bf16_supported(kind))


def fit(model: IntentModel, utterances: Utterances, targets: np.ndarray, train_idx, val_idx, config, device: str) -> dict[str, Any]:
    """Fine-tune encoder and head (or only the head on cached features when the encoder is frozen)."""
    if config.freeze_encoder:
        logger.info("training the head on frozen encoder features")
        return _fit_head(model, utterances, targets, train_idx, val_idx, config, device, auto_settings(config)["epochs"])
    history: list[dict[str, Any]] = []
    if config.probe_epochs and config.encoder != "scratch":
        logger.info(f"phase 1/2, linear probe: {config.probe_epochs} epochs of the head alone on frozen features")
        history = _fit_head(model, utterances, targets, train_idx, val_idx, config, device, config.probe_epochs, _autocast(config, device), "probe")["history"]
        logger.info("phase 2/2, fine-tuning: encoder and head together")
    auto = auto_settings(config)
    model.to(device)
    rng = np.random.default_rng(config.seed)
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    total = steps_per_epoch * auto["epochs"]
    total = min(total, config.max_steps) if config.max_steps else total  # the schedule ends where the budget does
    optimizer = torch.optim.AdamW(
        [{"params": model.encoder.parameters(), "lr": auto["lr"]}, {"params": model.head.parameters(), "lr": config.head_learning_rate}],
        weight_decay=config.weight_decay,
    )
    warmup = max(1, int(0.06 * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    y = torch.as_tensor(targets, device=device)

    def step(batch) -> float:
        ids, mask = utterances.batch(batch, device)
        with _autocast(config, device):
            logits, _ = model(ids, mask)
        loss = loss_fn(logits.float(), y[batch])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    validate = (lambda: {"val_acc": _accuracy(model, utterances, targets, val_idx, config, device)}) if len(val_idx) else None
    result = applied_aitk.train.fit(
        model, lambda epoch: length_batches(utterances, train_idx, config.batch_size, rng), step, validate, epochs=auto["epochs"],
        monitor="val_acc", mode="max", patience=config.patience, max_steps=config.max_steps, max_time=config.max_time,
    )
    history += [{**row, "epoch": row["epoch"] + len(history), "phase": "fine-tuning"} for row in result.history]
    return {"epochs_run": len(result.history), "best_epoch": result.best_epoch, "history": history}


@torch.no_grad()
def _accuracy(model, utterances: Utterances, targets, idx, config, device) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(idx), 128):
        batch = idx[start: start + 128]
        ids, mask = utterances.batch(batch, device)
        with _autocast(config, device):
            logits, _ = model(ids, mask)
        correct += int((logits.argmax(1).cpu().numpy() == targets[batch]).sum())
    return correct / len(idx)


@torch.no_grad()
def pooled_features(model: IntentModel, utterances: Utterances, idx, device: str) -> torch.Tensor:
    """Mean-pooled encoder outputs as fp32 (what the exported graph computes unless autocast is on)."""
    model.eval()
    order = sorted(idx, key=lambda i: utterances.lengths[i])
    features = torch.zeros((len(utterances), model.head.in_features))
    for start in progress(range(0, len(order), 64), "encoding", total=math.ceil(len(order) / 64), unit="batch"):
        batch = order[start: start + 64]
        ids, mask = utterances.batch(batch, device)
        features[torch.as_tensor(batch)] = model.pooled(ids, mask).float().cpu()
    return features


def _fit_head(model, utterances: Utterances, targets, train_idx, val_idx, config, device, epochs: int, precision=None, phase: str = "head") -> dict[str, Any]:
    """Frozen encoder: encode every utterance once, then train only the linear head.

    Also the first stage of fine-tuning (linear probing, then fine-tuning: the encoder is not
    pulled around by a random head in its first steps); ``precision`` (an autocast context) then
    speeds up encoding. The head itself trains outside autocast, whose weight cache would hide
    the updates."""
    model.to(device)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    with precision or contextlib.nullcontext():
        features = pooled_features(model, utterances, np.concatenate([train_idx, val_idx]), device).to(device)
    y = torch.as_tensor(targets, device=device)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=config.head_learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(config.seed)

    def batches(epoch: int):
        order = rng.permutation(train_idx)
        return [torch.as_tensor(order[start: start + config.batch_size], device=device) for start in range(0, len(order), config.batch_size)]

    def step(batch: torch.Tensor) -> float:
        loss = loss_fn(model.head(model.dropout(features[batch])), y[batch])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    @torch.no_grad()
    def validate() -> dict[str, float]:
        model.head.eval()
        val = torch.as_tensor(val_idx, device=device)
        return {"val_acc": float((model.head(features[val]).argmax(1) == y[val]).float().mean())}

    result = applied_aitk.train.fit(
        model.head, batches, step, validate if len(val_idx) else None, epochs=epochs, monitor="val_acc", mode="max",
        patience=config.patience * 5, log_every=10,
    )
    for p in model.encoder.parameters():
        p.requires_grad_(True)
    return {"epochs_run": len(result.history), "best_epoch": result.best_epoch, "history": [{**row, "phase": phase} for row in result.history]}


def _graph(model: IntentModel, tokenizer, texts: list[str], sample_texts: list[str], check) -> Graph:
    """The graph: exported with a 2-text example, checked on a different batch size and length."""
    example = encode(tokenizer, texts[:2])
    parity = encode(tokenizer, (sample_texts + ["?", "a much longer message " * 8])[:18])
    return Graph(
        model, (torch.from_numpy(example[0]), torch.from_numpy(example[1])), INPUTS, OUTPUTS, dynamic_axes=AXES,
        parity_inputs=(torch.from_numpy(parity[0]), torch.from_numpy(parity[1])), atol=1e-3, label_output="logits", check=check,
    )


def int8_report(session, int8, tokenizer, texts: list[str], targets) -> dict[str, Any]:
    """How closely the int8 graph (dynamic int8 MatMuls) follows the fp32 one."""
    logits, embeddings, _ = run_model(session, tokenizer, texts)
    logits8, embeddings8, _ = run_model(int8, tokenizer, texts)
    result: dict[str, Any] = {
        "label_agreement": round(float(np.mean(logits.argmax(1) == logits8.argmax(1))), 4),
        "embedding_cosine_min": round(float(np.min(np.sum(embeddings * embeddings8, axis=1))), 5),
        "max_prob_diff": round(float(np.abs(softmax(logits) - softmax(logits8)).max()), 4),
        "checked_on": len(texts),
    }
    if targets is not None:
        result["val_accuracy"] = round(float(np.mean(logits8.argmax(1) == targets[: len(texts)])), 4)
    if result["label_agreement"] < 0.98:
        logger.warning(f"the int8 model agrees with fp32 on only {result['label_agreement']:.1%} of labels")
    return result
