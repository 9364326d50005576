"""The chatbot use case as a user meets it: sample -> train -> evaluate -> predict / chat, via the CLI (served: test_chatbot_serve.py)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CHATBOT_ENV, assert_report, run_aitk

ENV = CHATBOT_ENV


def aitk(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run_aitk(*args, env=ENV, plugins="chatbot", stdin=stdin)


@pytest.fixture(scope="module")
def bot(chatbot_trained) -> dict[str, Path]:
    return chatbot_trained


def predict(bot, tmp_path: Path, lines: list, *extra: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """``aitk chatbot predict`` over a JSONL file written from ``lines`` (dicts, or raw bytes)."""
    inputs = tmp_path / "in.jsonl"
    inputs.write_bytes(b"".join(line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n" for line in lines))
    out = tmp_path / "out.jsonl"
    result = aitk("chatbot", "predict", str(bot["bundle"]), str(inputs), "--out", str(out), *extra)
    assert out.exists(), result.stderr
    return result, [json.loads(line) for line in out.read_text().splitlines()]


PARAPHRASES = {
    "my card still hasn't come in the post": "card_arrival",
    "I think I left my card on the bus and someone may have it": "lost_or_stolen_card",
    "how can I set a different PIN number": "change_pin",
    "please shut down my account for good": "terminate_account",
    "the shop took the money two times": "transaction_charged_twice",
    "good morning to you": "greeting",
}
# What each behaviour test below sends; one `chatbot predict` run answers them all (a run per test cost a start-up each).
LINES = {
    "paraphrases": [{"text": text} for text in PARAPHRASES],
    "faq": [{"text": "what is the youngest age to get an account with you?"}],
    "slots": [{"conversation": ["I want my money back for a purchase", "it was 19.99 EUR", "yesterday"]}],
    "up_front": [{"text": "please cancel my transfer, reference AB123456"}],
    "handoff": [
        {"text": "can I talk to a real person please"},
        {"conversation": ["blorp", "zzzz qqq", "fnord"]},
        {"text": "This is absolutely ridiculous, the worst service ever, I'm furious"},
        {"conversation": ["I need a human", "hello?"]},
    ],
    "fallback": [{"text": "qwzx plorf vvvvv"}, {"text": "what's a good recipe for pancakes"}],
}


@pytest.fixture(scope="module")
def answered(bot, tmp_path_factory) -> dict[str, list[dict]]:
    """The rows `chatbot predict` writes for LINES, by the name of the test's lines; the run exits 0."""
    lines = [line for group in LINES.values() for line in group]
    result, rows = predict(bot, tmp_path_factory.mktemp("answered"), lines)
    assert result.returncode == 0, result.stderr
    answered, start = {}, 0
    for name, group in LINES.items():
        answered[name], start = rows[start:start + len(group)], start + len(group)
    return answered


def test_right_intent_for_unseen_paraphrases(answered):
    rows = answered["paraphrases"]
    assert [row["intent"] for row in rows] == list(PARAPHRASES.values())
    assert all(row["action"] in ("respond", "ask_slot") for row in rows)


def test_faq_answered_from_a_paraphrase(answered):
    rows = answered["faq"]
    assert rows[0]["action"] == "faq" and rows[0]["faq"] == "age_limit"
    assert "18" in rows[0]["reply"]


def test_asks_for_missing_slots_then_fills_the_response(answered):
    turns = answered["slots"][0]["turns"]
    assert [t["action"] for t in turns] == ["ask_slot", "ask_slot", "respond"]
    assert [t.get("asking_for") for t in turns[:2]] == ["amount", "date"]
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()  # (a run across midnight could fail)
    assert turns[2]["slots"] == {"amount": "19.99 EUR", "date": yesterday} and turns[2]["slot_text"] == {"date": "yesterday"}
    assert "19.99 EUR" in turns[2]["reply"] and yesterday in turns[2]["reply"]


def test_slots_given_up_front_are_not_asked_for(answered):
    rows = answered["up_front"]
    assert rows[0]["action"] == "respond" and "AB123456" in rows[0]["reply"]


def test_hands_off_on_request_after_fallbacks_and_on_anger(answered):
    rows = answered["handoff"]
    assert rows[0]["action"] == "handoff" and rows[0]["handoff_reason"] == "request"
    assert [t["action"] for t in rows[1]["turns"]] == ["fallback", "fallback", "handoff"]
    assert rows[1]["turns"][2]["handoff_reason"] == "fallbacks" and rows[1]["handed_off"]
    assert rows[2]["action"] == "handoff" and rows[2]["handoff_reason"] == "negative_sentiment"
    assert [t["action"] for t in rows[3]["turns"]] == ["handoff", "handed_off"]


def test_falls_back_on_nonsense_and_refuses_out_of_scope(answered):
    rows = answered["fallback"]
    assert rows[0]["action"] == "fallback"
    assert rows[1]["action"] in ("out_of_scope", "fallback")


def test_bad_input_gets_a_reply_or_an_error_row(bot, tmp_path):
    lines = [
        {"text": ""},
        {"text": "   \t "},
        {"text": "my card has not arrived " * 2000},
        b'{"text": "caf\xe9 card \xff"}\n',
        b"not json at all\n",
        {"message": "wrong field"},
        {"text": "\U0001F600\U0001F621\U0001F4B3"},
        {"text": "我的卡还没到"},
        {"conversation": ["hi", "", "\u0000\u200b"]},
    ]
    result, rows = predict(bot, tmp_path, lines)
    assert result.returncode == 3, result.stderr  # error rows -> exit 3, the run itself finishes
    assert len(rows) == len(lines)
    assert [row["action"] for row in rows[:2]] == ["empty", "empty"]
    assert rows[2]["truncated"] is True and rows[2]["intent"] == "card_arrival"
    assert "UTF-8" in rows[3]["error"] and "JSON" in rows[4]["error"] and "expected" in rows[5]["error"]
    for row in (rows[6], rows[7]):
        assert row["reply"] and "error" not in row
    assert [t["action"] for t in rows[8]["turns"]][:2] == ["respond", "empty"]


def test_evaluate_reports_accuracy_f1_per_intent_and_oos_recall(bot, tmp_path):
    result = aitk("chatbot", "evaluate", str(bot["bundle"]), str(bot["data"] / "eval.csv"), "--json", "--report", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["accuracy"] > 0.85 and metrics["macro_f1"] > 0.8
    assert metrics["oos_recall"] >= 0.6 and metrics["oos_examples"] == 15
    assert metrics["per_intent"]["change_pin"]["support"] == 15
    assert (tmp_path / "report" / "per_intent.csv").exists()
    assert_report(tmp_path / "report", "confusion_matrix.png", "confidence.png", "training_curves.png")
    assert (bot["bundle"] / "history.csv").read_text().startswith("epoch,steps,seconds,loss,val_acc,phase")



def test_evaluate_reads_a_gzipped_csv_and_refuses_one_without_rows(bot, tmp_path):
    """eval.csv.gz was refused ('expected a CSV of text,intent'), and a CSV holding only its header
    ended in numpy's "zero-size array to reduction operation" ValueError."""
    import gzip

    plain = bot["data"] / "eval.csv"
    (tmp_path / "eval.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    results = [aitk("chatbot", "evaluate", str(bot["bundle"]), str(path), "--json") for path in (plain, tmp_path / "eval.csv.gz")]
    assert [r.returncode for r in results] == [0, 0], results[1].stderr
    assert json.loads(results[1].stdout) == json.loads(results[0].stdout)
    (tmp_path / "header.csv").write_text("text,intent\n")
    result = aitk("chatbot", "evaluate", str(bot["bundle"]), str(tmp_path / "header.csv"))
    assert (result.returncode, result.stderr.strip()) == (1, f"error: {tmp_path / 'header.csv'}: no rows")

def test_onnx_matches_torch(bot):
    """The bundle's ONNX graph reproduces the torch model rebuilt from its safetensors weights."""
    import torch
    from transformers import BertConfig, BertModel

    from applied_aitk.usecases.chatbot.model import IntentModel
    from applied_aitk.usecases.chatbot.nlu import encode, load_tokenizer
    from applied_aitk.bundle import load_bundle
    from applied_aitk.runtime import Runtime

    bundle = load_bundle(bot["bundle"], usecase="chatbot")
    assert bundle.graph()["parity"]["label_agreement"] == 1.0
    encoder = BertModel(BertConfig(**bundle.read_json("encoder_config.json")), add_pooling_layer=False)
    model = IntentModel(encoder, len(bundle.assets["labels"]))
    model.load_state_dict(bundle.read_weights())
    model.eval()
    tokenizer = load_tokenizer(bundle.file("tokenizer.json"), bundle.assets["max_len"], bundle.assets["pad_id"])
    ids, mask, _ = encode(tokenizer, ["where is my new card", "hi", "I was charged twice for one coffee yesterday"])
    assert ids.shape == mask.shape and (ids[mask == 0] == bundle.assets["pad_id"]).all() and mask[1].sum() < mask[2].sum()
    with torch.no_grad():
        logits, embedding = model(torch.from_numpy(ids), torch.from_numpy(mask))
    onnx_logits, onnx_embedding = Runtime(device="cpu").session(bundle.file("model.onnx"))(ids, mask)
    np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-3)
    np.testing.assert_allclose(onnx_embedding, embedding.numpy(), atol=1e-4)


def test_chat_with_piped_stdin_logs_every_turn(bot, tmp_path):
    log = tmp_path / "turns.jsonl"
    stdin = "hi\nmy card never arrived\nAB123456\n\n/quit\nnot reached\n"
    result = aitk("chatbot", "chat", str(bot["bundle"]), "--log", str(log), stdin=stdin)
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.splitlines() if line.startswith("bot> ")]
    assert len(replies) == 4 and "AB123456" in replies[2]
    turns = [json.loads(line) for line in log.read_text().splitlines()]
    assert [t["action"] for t in turns] == ["respond", "ask_slot", "respond", "empty"]
    assert set(turns[0]) >= {"message", "intent", "confidence", "action", "reply", "conversation", "time"}


def test_chat_in_a_terminal_has_line_editing_and_leaves_on_ctrl_d(bot, tmp_path):
    import os
    import pty
    import select
    import time

    log = tmp_path / "turns.jsonl"
    main_fd, child_fd = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", "from applied_aitk.cli import main; main()", "chatbot", "chat", str(bot["bundle"]), "--log", str(log)],
                               stdin=child_fd, stdout=child_fd, stderr=child_fd, env={**os.environ, "AITK_LOAD_PLUGINS": "chatbot"})
    os.close(child_fd)
    seen = b""

    def read_until(text: bytes, timeout: float = 120) -> None:
        nonlocal seen
        end = time.time() + timeout
        while text not in seen and time.time() < end:
            if select.select([main_fd], [], [], 0.5)[0]:
                seen += os.read(main_fd, 4096)
        assert text in seen, seen[-500:]

    try:
        read_until(b"you> ")
        os.write(main_fd, b"my crd never arrived" + b"\x1b[D" * 16 + b"a\r")  # 16 x left arrow, then insert the missing letter
        read_until(b"bot> ")
        seen = seen[seen.index(b"bot> "):]
        read_until(b"you> ")  # the next prompt: readline reads the terminal again
        os.write(main_fd, b"\x04")  # Ctrl-D
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        os.close(main_fd)
    (turn,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert turn["message"] == "my card never arrived" and turn["action"] == "ask_slot"


def test_chat_survives_invalid_utf8(bot):
    process = subprocess.run(
        [sys.executable, "-c", "from applied_aitk.cli import main; main()", "chatbot", "chat", str(bot["bundle"]), "--json"],
        input=b"\xff\xfe\xfd\nthanks\n", capture_output=True, env={**__import__("os").environ, **ENV, "AITK_LOAD_PLUGINS": "chatbot"},
    )
    assert process.returncode == 0, process.stderr
    turns = [json.loads(line) for line in process.stdout.decode().splitlines()]
    assert [t["action"] for t in turns] == ["unreadable", "respond"]


def test_chatting_imports_neither_torch_nor_transformers(bot):
    code = (
        "import sys; from pathlib import Path; from applied_aitk.bundle import load_bundle; from applied_aitk.runtime import Runtime;"
        "from applied_aitk.usecases.chatbot.nlu import NLU; from applied_aitk.usecases.chatbot.dialogue import Conversation;"
        f"nlu = NLU(load_bundle(Path({str(bot['bundle'])!r})), Runtime(device='cpu'));"
        "turn = Conversation(nlu.policy).respond('hello', nlu.understand(['hello'])[0]);"
        "assert turn['intent'] == 'greeting', turn;"
        "assert not {'torch', 'transformers'} & set(sys.modules), 'heavy import'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**__import__("os").environ, **ENV})
    assert result.returncode == 0, result.stderr


def test_scratch_encoder_with_bpe_and_int8(bot, tmp_path):
    trained = aitk("chatbot", "train", str(bot["data"] / "domain.yaml"), "--out", str(tmp_path / "scratch"), "--quantize", "int8",
                   "--set", "encoder=scratch", "--set", "tokenizer=bpe", "--set", "hidden_size=64", "--set", "num_layers=1",
                   "--set", "num_heads=2", "--set", "epochs=3", "--set", "max_length=24", "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    manifest = json.loads((tmp_path / "scratch" / "manifest.json").read_text())
    assert manifest["graphs"]["model"]["variants"]["int8"]["label_agreement"] > 0.9 and (tmp_path / "scratch" / "model.int8.onnx").exists()
    result = aitk("chatbot", "chat", str(tmp_path / "scratch"), "--quantize", "int8", "--json", stdin="hello\n")
    assert result.returncode == 0 and json.loads(result.stdout)["reply"]


def test_csv_with_domain_option_and_a_bad_domain(bot, tmp_path):
    domain = tmp_path / "domain.yaml"
    domain.write_text("intents:\n  card_arrival:\n    responses: ['Your card {tracking} is coming']\n")
    result = aitk("chatbot", "train", str(bot["data"] / "train.csv"), "--domain", str(domain), "--out", str(tmp_path / "b"))
    assert result.returncode == 1
    assert "unknown placeholder {tracking}" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()


def test_the_card_shows_the_learning_rate_training_chose(bot):
    manifest = json.loads((bot["bundle"] / "manifest.json").read_text())
    assert manifest["config"]["learning_rate"] == 0 and manifest["resolved"] == {"learning_rate": 1e-4}  # epochs=60 was set
    assert "| learning_rate | 0.0001 (set: 0.0) |" in (bot["bundle"] / "README.md").read_text()


def test_bom_surrogates_and_bad_bytes_in_messages_are_handled(bot, tmp_path):
    lines = [b"\xef\xbb\xbf" + json.dumps({"text": "hello there"}).encode() + b"\n", b'{"text": "hi \\ud800 there"}\n', b'{"text": "caf\xe9"}\n',
             json.dumps({"text": "good morning"}).encode() + b"\n"]
    result, rows = predict(bot, tmp_path, lines)
    assert result.returncode == 3
    assert rows[0]["intent"] == "greeting" and rows[3]["intent"] == "greeting"
    assert rows[1]["error"].endswith("in.jsonl:2: field text: not valid Unicode (lone surrogate at character 3)")
    assert rows[2]["error"].endswith("in.jsonl:3: not valid UTF-8 (byte 13 of the line)")


def test_a_message_of_control_or_format_characters_only_is_empty_not_classified(bot, tmp_path):
    lines = [json.dumps({"text": t}).encode() + b"\n" for t in ("\u0000", "\u200b\ufeff", "hello there")]
    result, rows = predict(bot, tmp_path, lines)  # was: a NUL answered as a greeting (confidence 0.54)
    assert result.returncode == 0 and [row["action"] for row in rows[:2]] == ["empty", "empty"] and rows[2]["intent"] == "greeting"


def test_fine_tuning_names_its_phases_in_the_log_and_the_history(bot, tmp_path):
    trained = aitk("chatbot", "train", str(bot["data"] / "domain.yaml"), "--out", str(tmp_path / "tuned"), "--set", "probe_epochs=2",
                   "--set", "max_steps=2", "--set", "max_length=24", "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    probe, tuning = trained.stderr.find("phase 1/2, linear probe"), trained.stderr.find("phase 2/2, fine-tuning")
    assert 0 <= probe < tuning, trained.stderr
    import csv

    with open(tmp_path / "tuned" / "history.csv", newline="") as f:
        assert [row["phase"] for row in csv.DictReader(f)] == ["probe", "probe", "fine-tuning"]
