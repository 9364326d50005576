"""Understanding messages with ONNX Runtime and the `tokenizers` library (no torch, no transformers):
tokenise, run the one graph (intent logits + sentence embedding), find the nearest FAQ question.
Also the batch predictor, the turn log, and evaluation metrics."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk import AitkError, Predictor, Record
from applied_aitk.console import get_logger

from applied_aitk.usecases.chatbot.data import MAX_MESSAGE_CHARS, blank, decode_record, evaluation_rows, read_records
from applied_aitk.usecases.chatbot.dialogue import Conversation, Policy, Understanding

logger = get_logger(__name__)

CHUNK = 64
OOS_NAMES = ("oos", "out_of_scope", "out-of-scope")


def encode(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """int64 ids and attention mask [len(texts), longest], and which texts were truncated.

    ``tokenizer`` is set up by ``prepare_tokenizer``: it truncates and pads the batch itself."""
    encodings = tokenizer.encode_batch([t[:MAX_MESSAGE_CHARS] for t in texts])
    ids = np.array([e.ids for e in encodings], np.int64).reshape(len(texts), -1)
    mask = np.array([e.attention_mask for e in encodings], np.int64).reshape(len(texts), -1)
    truncated = [bool(e.overflowing) or len(t) > MAX_MESSAGE_CHARS for e, t in zip(encodings, texts)]
    return ids, mask, truncated


def prepare_tokenizer(tokenizer, max_len: int, pad: int):
    """``tokenizer`` (a ``tokenizers.Tokenizer``) cutting texts at ``max_len`` tokens and padding
    each batch to its longest text with the token ``pad``, on the right; returned for chaining."""
    tokenizer.enable_truncation(max_len)
    tokenizer.enable_padding(pad_id=pad, pad_token=tokenizer.id_to_token(pad) or "[PAD]")
    return tokenizer


def load_tokenizer(path: Path, max_len: int, pad: int):
    """The bundle's ``tokenizer.json``, prepared as ``prepare_tokenizer`` says."""
    from tokenizers import Tokenizer

    return prepare_tokenizer(Tokenizer.from_file(str(path)), max_len, pad)


def run_model(session, tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """(logits, embeddings, truncated) for ``texts``, in chunks of similar length."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    logits: list[Any] = [None] * len(texts)
    embeddings: list[Any] = [None] * len(texts)
    truncated = [False] * len(texts)
    for start in range(0, len(order), CHUNK):
        chunk = order[start: start + CHUNK]
        ids, mask, cut = encode(tokenizer, [texts[i] for i in chunk])
        out_logits, out_embeddings = session(ids, mask)
        for j, i in enumerate(chunk):
            logits[i], embeddings[i], truncated[i] = out_logits[j], out_embeddings[j], cut[j]
    if not texts:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), []
    return np.stack(logits), np.stack(embeddings), truncated


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class NLU:
    """A bundle's tokenizer, ONNX session, labels and FAQ memory."""

    def __init__(self, bundle, runtime):
        assets = bundle.assets
        self.labels: list[str] = assets["labels"]
        self.tokenizer = load_tokenizer(bundle.file("tokenizer.json"), assets["max_len"], assets["pad_id"])
        self.session = runtime.session(runtime.model_file(bundle))
        self.provider = self.session.provider
        self.faq_embeddings = bundle.read_array("faq_embeddings.npy").astype(np.float32)
        self.faq_owner: list[str] = assets["faq_owner"]
        self.domain = bundle.read_json("domain.json")
        self.policy = Policy(self.domain, self.labels, assets["threshold"], assets["margin"], assets["faq_threshold"])

    def probabilities(self, texts: list[str]) -> np.ndarray:
        logits, _, _ = run_model(self.session, self.tokenizer, texts)
        return softmax(logits)

    def understand(self, texts: list[str]) -> list[Understanding | None]:
        """One Understanding per text; None for empty or blank texts (they never reach the model)."""
        real = [i for i, t in enumerate(texts) if not blank(t)]
        results: list[Understanding | None] = [None] * len(texts)
        if not real:
            return results
        logits, embeddings, truncated = run_model(self.session, self.tokenizer, [texts[i] for i in real])
        probs = softmax(logits)
        similarity = embeddings @ self.faq_embeddings.T if len(self.faq_owner) else np.zeros((len(real), 0))
        for row, i in enumerate(real):
            faq, best = None, 0.0
            if similarity.shape[1]:
                nearest = int(similarity[row].argmax())
                faq, best = self.faq_owner[nearest], float(similarity[row, nearest])
            results[i] = Understanding(probs[row], faq, best, truncated[row])
        return results


class TurnLog:
    """Every turn as one JSON line: time, conversation, turn, message, intent, confidence, action, reply."""

    def __init__(self, path: Path | None):
        self.file = None
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a", encoding="utf-8")

    def write(self, conversation: str, turn: int, row: dict[str, Any]) -> None:
        if self.file is None:
            return
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        self.file.write(json.dumps({"time": now, "conversation": conversation, "turn": turn, **row}, ensure_ascii=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class ChatPredictor(Predictor):
    """Batch inference: a message is a one-turn conversation; a conversation runs turn by turn.

    The model runs once over every turn of the batch (understanding does not depend on the
    dialogue state); the dialogue manager then walks each conversation in order."""

    def __init__(self, nlu: NLU, turn_log: TurnLog | None = None):
        self.nlu = nlu
        self.provider = nlu.provider
        self.log = turn_log or TurnLog(None)

    def read(self, paths: Iterable[Path]) -> Iterator[Record]:
        return read_records(paths)

    def decode(self, record: Record) -> tuple[str, Any, str]:
        """``(kind, message or turns, record id)``; the id names the conversation in the turn log."""
        kind, payload = decode_record(record)
        return kind, payload, record.id

    def predict(self, inputs: list[tuple[str, Any, str]]) -> list[dict[str, Any]]:
        texts = [t for kind, payload, _ in inputs for t in ([payload] if kind == "message" else payload)]
        understood = iter(self.nlu.understand(texts))
        rows = []
        for kind, payload, record_id in inputs:
            conversation = Conversation(self.nlu.policy)
            turns = []
            for number, text in enumerate([payload] if kind == "message" else payload, 1):
                turn = conversation.respond(text, next(understood))
                self.log.write(record_id, number, turn)
                turns.append(turn)
            if kind == "message":
                turn = turns[0]
                rows.append({"text": turn.pop("message"), **turn})
            else:
                rows.append({"turns": turns, "last_action": turns[-1]["action"] if turns else None, "handed_off": conversation.handed_off})
        return rows


def evaluate(bundle, data: Path, runtime, report: Path | None = None) -> dict[str, Any]:
    """Accuracy, macro F1 and a per-intent report on labelled utterances; out-of-scope recall when
    the data labels some utterances out of scope (the share the bot refuses or falls back on)."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    rows = evaluation_rows(Path(data))
    nlu = NLU(bundle, runtime)
    known = set(nlu.labels)
    oos_names = {nlu.policy.oos, *OOS_NAMES}
    unknown = sorted({label for _, label in rows if label not in known and label not in oos_names})
    if unknown:
        raise AitkError(f"{data}: intent {unknown[0]!r} is not one the bundle was trained on ({len(unknown)} unknown in all)")
    texts = [t for t, _ in rows]
    truth = [nlu.policy.oos if label in oos_names and nlu.policy.oos in known else label for _, label in rows]
    probs = nlu.probabilities(texts)
    predicted = [nlu.labels[i] for i in probs.argmax(axis=1)]
    decisions = [nlu.policy.decide(p) for p in probs]
    scored = [i for i, label in enumerate(truth) if label in known]
    if not scored:
        raise AitkError(f"{data}: no utterance is labelled with an intent the bundle knows")
    y_true = [truth[i] for i in scored]
    y_pred = [predicted[i] for i in scored]
    present = sorted(set(y_true))
    in_scope = [i for i in scored if truth[i] not in oos_names]
    metrics: dict[str, Any] = {
        "accuracy": round(float(np.mean([a == b for a, b in zip(y_true, y_pred)])), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)), 4),
        "answered_correctly": round(float(np.mean([decisions[i].kind == "answer" and decisions[i].label == truth[i] for i in in_scope])), 4) if in_scope else None,
        "examples": len(rows),
    }
    oos_rows = [i for i, (_, label) in enumerate(rows) if label in oos_names]
    if oos_rows:
        metrics["oos_recall"] = round(float(np.mean([decisions[i].kind in ("out_of_scope", "fallback") for i in oos_rows])), 4)
        metrics["oos_examples"] = len(oos_rows)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=present, zero_division=0)
    per_intent = {label: {"precision": round(float(p), 3), "recall": round(float(r), 3), "f1": round(float(f), 3), "support": int(s)} for label, p, r, f, s in zip(present, precision, recall, f1, support)}
    metrics["per_intent"] = per_intent
    if report is not None:
        _write_report(Path(report), per_intent, [(texts[i], truth[i], predicted[i], float(probs[i].max())) for i in scored if truth[i] != predicted[i]])
        plot_confusions(y_true, y_pred, Path(report) / "confusion_matrix.png")
        plot_confidence(probs.max(axis=1)[scored], np.array([a == b for a, b in zip(y_true, y_pred)]), nlu.policy.threshold, Path(report) / "confidence.png")
    return metrics


def plot_confusions(y_true: list[str], y_pred: list[str], path: Path, top: int = 15) -> None:
    """Confusion matrix (rows true, columns predicted, row-normalised) over only the ``top``
    intents most involved in confusions, so it stays readable with 77+ intents."""
    from sklearn.metrics import confusion_matrix

    from applied_aitk.report import pyplot, save_figure

    labels = sorted(set(y_true) | set(y_pred))
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    off = counts - np.diag(np.diag(counts))
    involved = off.sum(axis=0) + off.sum(axis=1)
    keep = [i for i in np.argsort(-involved, kind="stable")[:top] if involved[i] > 0] or list(range(min(top, len(labels))))
    keep = sorted(keep)
    sub = counts[np.ix_(keep, keep)].astype(float)
    shown = sub / np.maximum(counts[keep].sum(axis=1, keepdims=True), 1)
    plt = pyplot()
    size = 3 + 0.45 * len(keep)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    names = [labels[i] for i in keep]
    ax.set_xticks(range(len(keep)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(keep)), names, fontsize=8)
    for r in range(len(keep)):
        for c in range(len(keep)):
            if sub[r, c]:
                ax.text(c, r, int(sub[r, c]), ha="center", va="center", fontsize=7, color="white" if shown[r, c] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=f"most confused intents ({len(keep)} of {len(labels)}; share of the true intent)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path)


def plot_confidence(confidence: np.ndarray, correct: np.ndarray, threshold: float, path: Path) -> None:
    """Histogram of the top intent's probability, right and wrong predictions apart, with the
    dialogue's confidence threshold (below it the bot asks again instead of answering)."""
    from applied_aitk.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 26)
    ax.hist(confidence[correct], bins=bins, alpha=0.6, label=f"right ({int(correct.sum())})")
    ax.hist(confidence[~correct], bins=bins, alpha=0.6, label=f"wrong ({int((~correct).sum())})")
    ax.axvline(threshold, color="C3", linestyle="--", label=f"threshold {threshold:g}")
    ax.set(xlabel="confidence (top intent probability)", ylabel="utterances", title="confidence")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _write_report(folder: Path, per_intent: dict[str, dict[str, Any]], errors: list[tuple[str, str, str, float]]) -> None:
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "per_intent.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["intent", "precision", "recall", "f1", "support"])
        for label, values in per_intent.items():
            writer.writerow([label, *values.values()])
    with open(folder / "errors.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "intent", "predicted", "confidence"])
        writer.writerows(errors)
    logger.info(f"report: {folder / 'per_intent.csv'}, {folder / 'errors.csv'} ({len(errors)} errors)")


def faq_memory(domain: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Every FAQ question variant and the id of the entry it belongs to."""
    questions = [q for entry in domain["faq"] for q in entry["questions"]]
    owners = [entry["id"] for entry in domain["faq"] for _ in entry["questions"]]
    return questions, owners

