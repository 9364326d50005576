"""The chatbot use case as a user meets it: sample -> train -> evaluate -> predict / chat, via the CLI."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_report, run_aitk

from applied_aitk.usecases.chatbot.dates import iso_date

ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def aitk(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run_aitk(*args, env=ENV, plugins="chatbot", stdin=stdin)


@pytest.fixture(scope="module")
def bot(tmp_path_factory) -> dict[str, Path]:
    """The sample domain, and a bundle trained on it with the demo's quick settings (frozen MiniLM + head)."""
    root = tmp_path_factory.mktemp("chatbot")
    assert aitk("chatbot", "sample", str(root / "data")).returncode == 0
    trained = aitk("chatbot", "train", str(root / "data/domain.yaml"), "--out", str(root / "bundle"),
                   "--set", "freeze_encoder=true", "--set", "epochs=60", "--set", "max_length=48", "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    return {"data": root / "data", "bundle": root / "bundle", "root": root}


def predict(bot, tmp_path: Path, lines: list, *extra: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """``aitk chatbot predict`` over a JSONL file written from ``lines`` (dicts, or raw bytes)."""
    inputs = tmp_path / "in.jsonl"
    inputs.write_bytes(b"".join(line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n" for line in lines))
    out = tmp_path / "out.jsonl"
    result = aitk("chatbot", "predict", str(bot["bundle"]), str(inputs), "--out", str(out), *extra)
    assert out.exists(), result.stderr
    return result, [json.loads(line) for line in out.read_text().splitlines()]


def test_right_intent_for_unseen_paraphrases(bot, tmp_path):
    cases = {
        "my card still hasn't come in the post": "card_arrival",
        "I think I left my card on the bus and someone may have it": "lost_or_stolen_card",
        "how can I set a different PIN number": "change_pin",
        "please shut down my account for good": "terminate_account",
        "the shop took the money two times": "transaction_charged_twice",
        "good morning to you": "greeting",
    }
    result, rows = predict(bot, tmp_path, [{"text": text} for text in cases])
    assert result.returncode == 0, result.stderr
    assert [row["intent"] for row in rows] == list(cases.values())
    assert all(row["action"] in ("respond", "ask_slot") for row in rows)


def test_faq_answered_from_a_paraphrase(bot, tmp_path):
    _, rows = predict(bot, tmp_path, [{"text": "what is the youngest age to get an account with you?"}])
    assert rows[0]["action"] == "faq" and rows[0]["faq"] == "age_limit"
    assert "18" in rows[0]["reply"]


def test_asks_for_missing_slots_then_fills_the_response(bot, tmp_path):
    _, rows = predict(bot, tmp_path, [{"conversation": ["I want my money back for a purchase", "it was 19.99 EUR", "yesterday"]}])
    turns = rows[0]["turns"]
    assert [t["action"] for t in turns] == ["ask_slot", "ask_slot", "respond"]
    assert [t.get("asking_for") for t in turns[:2]] == ["amount", "date"]
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()  # (a run across midnight could fail)
    assert turns[2]["slots"] == {"amount": "19.99 EUR", "date": yesterday} and turns[2]["slot_text"] == {"date": "yesterday"}
    assert "19.99 EUR" in turns[2]["reply"] and yesterday in turns[2]["reply"]


def test_dates_in_slots_become_iso_dates_where_they_name_one_day():
    today = dt.date(2026, 1, 2)  # a Friday
    cases = {"today": "2026-01-02", "Yesterday": "2026-01-01", "tomorrow": "2026-01-03", "2025-12-24": "2025-12-24",
             "last monday": "2025-12-29", "on friday": "2026-01-02", "friday": "2026-01-02", "last friday": "2025-12-26",
             "this monday": "2025-12-29", "14/03/2024": "2024-03-14", "03/14/24": "2024-03-14", "12th of March": "2026-03-12",
             "December 28": "2025-12-28", "March 5, 2024": "2024-03-05", "5 jan": "2026-01-05",
             "05/06/2024": None, "30 feb": None, "this week": None, "2024-13-01": None,
             "14-03-2024": "2024-03-14", "2024/03/14": "2024-03-14", "the 12th of March": "2026-03-12", "on the 3rd of sept.": "2025-09-03",
             "March the 5th": "2026-03-05", "05.05.24": "2024-05-05",  # the same day either way round
             "juneteenth 5": None, "marching 3": None, "5 mayday": None, "14-03/2024": None}  # a month is a whole word
    assert {text: iso_date(text, today) for text in cases} == cases


def test_an_ambiguous_date_is_asked_again_never_guessed_and_month_names_are_whole_words():
    from applied_aitk.usecases.chatbot.data import normalise_domain
    from applied_aitk.usecases.chatbot.dialogue import Conversation, Policy, Understanding, extract

    domain = normalise_domain({"intents": {"book": {"responses": ["Booked for {date}"], "required_slots": ["date"]}, "out_of_scope": {}}})
    assert extract("it was juneteenth 5 or so", domain["slots"]) == {}
    for message, written in (("paid on the 12th of March", "on the 12th of March"), ("it left on 14-03-2024.", "14-03-2024"),
                             ("2024/03/14 please", "2024/03/14")):
        assert extract(message, domain["slots"]) == {"date": written}
    conversation = Conversation(Policy(domain, ["book", "out_of_scope"], threshold=0.5, margin=0.1, faq_threshold=0.8))
    book = Understanding(np.array([0.9, 0.1]))
    first = conversation.respond("book it for 05/06/2024", book)
    assert first["action"] == "ask_slot" and "slots" not in first
    assert first["reply"].startswith("Is 05/06/2024 5 June 2024 or 6 May 2024? Please write the month as a word.")
    unclear = conversation.respond("05/06/2024", book)
    assert unclear["action"] == "ask_slot" and unclear["reply"].startswith("Is 05/06/2024 5 June 2024 or 6 May 2024?")
    done = conversation.respond("5 June 2024", book)
    assert done["action"] == "respond" and done["slots"] == {"date": "2024-06-05"} and done["reply"] == "Booked for 2024-06-05"
    assert conversation.respond("book it for 14-03-2024", book)["slots"] == {"date": "2024-03-14"}


def test_slots_given_up_front_are_not_asked_for(bot, tmp_path):
    _, rows = predict(bot, tmp_path, [{"text": "please cancel my transfer, reference AB123456"}])
    assert rows[0]["action"] == "respond" and "AB123456" in rows[0]["reply"]


def test_hands_off_on_request_after_fallbacks_and_on_anger(bot, tmp_path):
    _, rows = predict(bot, tmp_path, [
        {"text": "can I talk to a real person please"},
        {"conversation": ["blorp", "zzzz qqq", "fnord"]},
        {"text": "This is absolutely ridiculous, the worst service ever, I'm furious"},
        {"conversation": ["I need a human", "hello?"]},
    ])
    assert rows[0]["action"] == "handoff" and rows[0]["handoff_reason"] == "request"
    assert [t["action"] for t in rows[1]["turns"]] == ["fallback", "fallback", "handoff"]
    assert rows[1]["turns"][2]["handoff_reason"] == "fallbacks" and rows[1]["handed_off"]
    assert rows[2]["action"] == "handoff" and rows[2]["handoff_reason"] == "negative_sentiment"
    assert [t["action"] for t in rows[3]["turns"]] == ["handoff", "handed_off"]


def test_falls_back_on_nonsense_and_refuses_out_of_scope(bot, tmp_path):
    _, rows = predict(bot, tmp_path, [{"text": "qwzx plorf vvvvv"}, {"text": "what's a good recipe for pancakes"}])
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


def test_a_training_csv_with_excels_sep_hint_reads_and_names_bad_lines(tmp_path):
    from applied_aitk import AitkError
    from applied_aitk.usecases.chatbot.data import read_csv

    (tmp_path / "t.csv").write_text("sep=;\ntext;intent\nwhere is my card, please;card_arrival\n;change_pin\n")
    with pytest.raises(AitkError, match=r"t\.csv:4: empty text or intent"):
        read_csv(tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text("sep=;\ntext;intent\nwhere is my card, please;card_arrival\n")
    assert read_csv(tmp_path / "t.csv") == [("where is my card, please", "card_arrival")]


def test_dialogue_clarifies_when_two_intents_are_close():
    from applied_aitk.usecases.chatbot.data import normalise_domain
    from applied_aitk.usecases.chatbot.dialogue import Conversation, Policy, Understanding, extract, sentiment

    domain = normalise_domain({"intents": {"card_arrival": {"description": "a card on its way"}, "change_pin": {"description": "your PIN"}, "out_of_scope": {}}})
    policy = Policy(domain, ["card_arrival", "change_pin", "out_of_scope"], threshold=0.5, margin=0.15, faq_threshold=0.8)
    conversation = Conversation(policy)
    first = conversation.respond("card pin thing", Understanding(np.array([0.45, 0.40, 0.15])))
    assert first["action"] == "clarify" and first["candidates"] == ["card_arrival", "change_pin"]
    assert "a card on its way" in first["reply"] and "your PIN" in first["reply"]
    second = conversation.respond("the second one", Understanding(np.array([0.3, 0.3, 0.4])))
    assert second["action"] == "respond" and second["intent"] == "change_pin"
    assert extract("send it to jo@example.org, order #123456, £12.50 on 2024-02-01", domain["slots"]) == {
        "order_number": "#123456", "email": "jo@example.org", "amount": "£12.50", "date": "2024-02-01"}
    assert sentiment("not bad at all") == 0 and sentiment("this is terrible, I'm so angry") >= 3


def test_serve_returns_the_rows_batch_predict_writes(bot, tmp_path):
    """Messages and whole conversations: the rows of batch predict, error rows included."""
    from serve_client import client, served_rows, slim_served_rows, without_ids

    lines = [{"text": "my card still hasn't come"}, {"conversation": ["I want my money back", "it was 19.99 EUR", "yesterday"]},
             {"text": ""}, {"txt": "no text field"}, {"text": "I want to talk to a human"}]
    _, batch = predict(bot, tmp_path, lines)
    with client(bot["bundle"]) as c:
        served = served_rows(c, "chatbot", lines)
    assert without_ids(served) == without_ids(batch)
    assert slim_served_rows("chatbot", bot["bundle"], lines) == served
    assert "error" in served[3]


def test_serve_conversations_carry_slots_and_hand_off_like_batch_conversations(bot, tmp_path):
    """Server-side conversations answer turn by turn exactly as a conversation in batch predict
    does (slots asked for and filled across turns, hand-off sticking); they expire when idle."""
    from serve_client import client

    lines = [{"conversation": ["I want my money back for a purchase", "it was 19.99 EUR", "yesterday"]},
             {"conversation": ["I need a human", "hello?"]}]
    _, batch = predict(bot, tmp_path, lines)
    with client(bot["bundle"], session_ttl_s=1.5) as c:
        for line, row in zip(lines, batch):
            opened = c.post("/v1/chatbot/conversations")
            assert opened.status_code == 201
            url = f"/v1/chatbot/conversations/{opened.json()['id']}"
            turns = [c.post(url + "/messages", json={"text": text}).json() for text in line["conversation"]]
            assert [{k: v for k, v in t.items() if k not in ("conversation", "turn", "handed_off")} for t in turns] == row["turns"]
            assert turns[-1]["handed_off"] == row["handed_off"] and [t["turn"] for t in turns] == [1, 2, 3][:len(turns)]
        assert turns[-1]["action"] == "handed_off" and c.get(url).json()["handed_off"]
        assert c.post(url + "/messages", json={"txt": "hi"}).json()["field"] == "text"
        time.sleep(2)
        expired = c.post(url + "/messages", json={"text": "hello"})
        assert expired.status_code == 404 and "expired" in expired.json()["error"]


def test_conversations_on_the_server_expire_when_idle_and_are_capped(monkeypatch):
    """The server's conversations are bounded: each is dropped after ttl seconds without a
    message (a message keeps it alive), never while it answers one, and past the cap opening one
    is a 503, so memory stays flat however many conversations clients open and abandon."""
    import asyncio
    import types

    from applied_aitk.serve.http import HTTPError
    from applied_aitk.usecases.chatbot import serve

    now = [1000.0]
    monkeypatch.setattr(serve.time, "monotonic", lambda: now[0])
    store = serve.Conversations(types.SimpleNamespace(domain={}), ttl=10, limit=3)
    a, b, c = store.open(), store.open(), store.open()
    with pytest.raises(HTTPError) as full:
        store.open()
    assert full.value.status == 503 and full.value.headers["Retry-After"]
    now[0] += 6
    store.get(a)  # a message: a's idle time starts again
    asyncio.run(store.sessions[c].lock.acquire())  # c is answering a message (sent before a)
    now[0] += 6
    store.expire()
    assert list(store.sessions) == [c, a]  # b idle 12 s: dropped; c idle too, but busy
    with pytest.raises(HTTPError) as gone:
        store.get(b)
    assert gone.value.status == 404 and "expired after 10 s idle" in gone.value.message
    store.sessions[c].lock.release()
    now[0] += 11
    assert store.open() and len(store.sessions) == 1  # a and c expired, room again


def test_chat_page_in_a_real_browser_asks_for_a_slot_and_hands_off(bot):
    """The /chat page in headless Chromium: type messages, read the replies, through a slot
    question and a hand-off to a person."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from serve_client import server

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={bot['root'] / 'chromium-profile'}"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    with server(str(bot["bundle"])) as (_, url):
        browser = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            browser.get(url + "/chat")
            wait = WebDriverWait(browser, 20)
            wait.until(lambda b: b.find_element(By.ID, "log").get_attribute("data-conversation"))

            def say(text: str):
                before = len(browser.find_elements(By.CSS_SELECTOR, ".bot"))
                box = browser.find_element(By.ID, "message")
                box.send_keys(text)
                browser.find_element(By.ID, "send").click()
                wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".bot")) > before)
                reply = browser.find_elements(By.CSS_SELECTOR, ".bot")[-1]
                return reply.get_attribute("data-action"), reply.text

            assert say("I want my money back for a purchase")[0] == "ask_slot"
            assert say("it was 19.99 EUR")[0] == "ask_slot"
            action, reply = say("yesterday")
            assert action == "respond" and "19.99 EUR" in reply
            assert say("I need a human")[0] == "handoff"
            assert "A person will take over" in browser.find_elements(By.CSS_SELECTOR, ".note")[-1].text
            assert say("hello?")[0] == "handed_off"
        finally:
            browser.quit()


def test_yaml_intents_named_yes_no_on_off_stay_text(tmp_path):
    from applied_aitk.usecases.chatbot.data import load_domain
    from applied_aitk import AitkError

    (tmp_path / "domain.yaml").write_text(
        "intents:\n  yes:\n    examples: [yes, sure]\n  no:\n    examples: [no, nope]\n  on:\n    examples: [switch it on]\n  off:\n    examples: [off please]\n"
    )
    domain = load_domain(tmp_path / "domain.yaml")
    assert list(domain["intents"]) == ["yes", "no", "on", "off"]
    assert domain["intents"]["yes"]["examples"] == ["yes", "sure"] and domain["intents"]["no"]["examples"] == ["no", "nope"]
    (tmp_path / "flag.yaml").write_text("intents:\n  true:\n    examples: [correct]\n")
    with pytest.raises(AitkError, match=r"intents: name True is not text; quote it \(\"true\"\)"):
        load_domain(tmp_path / "flag.yaml")
    (tmp_path / "example.yaml").write_text("intents:\n  confirm:\n    examples: [false, 'that is right']\n")
    with pytest.raises(AitkError, match=r"intents.confirm.examples: False is not text; quote it"):
        load_domain(tmp_path / "example.yaml")


def test_amounts_are_read_whole_as_people_write_them_or_not_at_all():
    from applied_aitk.usecases.chatbot.data import normalise_domain
    from applied_aitk.usecases.chatbot.dialogue import extract

    slots = normalise_domain({"intents": {}})["slots"]
    written = ["$1.5k", "2k EUR", "1,500.00 dollars", "€ 20", "20 €", "£12.50", "USD 300", "$2 million", "1.500,50 EUR"]
    for amount in written:
        assert extract(f"it was {amount} yesterday", slots).get("amount") == amount
    assert extract("1.2m", slots, expected="amount") == {"amount": "1.2m"}  # a bare number when the bot asked for it
    assert "amount" not in extract("it was $1.5x", slots, expected="amount")  # never part of a value: ask again


def test_bom_surrogates_and_bad_bytes_in_messages_are_handled(bot, tmp_path):
    lines = [b"\xef\xbb\xbf" + json.dumps({"text": "hello there"}).encode() + b"\n", b'{"text": "hi \\ud800 there"}\n', b'{"text": "caf\xe9"}\n',
             json.dumps({"text": "good morning"}).encode() + b"\n"]
    result, rows = predict(bot, tmp_path, lines)
    assert result.returncode == 3
    assert rows[0]["intent"] == "greeting" and rows[3]["intent"] == "greeting"
    assert rows[1]["error"].endswith("in.jsonl:2: field text: not valid Unicode (lone surrogate at character 3)")
    assert rows[2]["error"].endswith("in.jsonl: line 3: not valid UTF-8 at byte 68")


def test_fine_tuning_names_its_phases_in_the_log_and_the_history(bot, tmp_path):
    trained = aitk("chatbot", "train", str(bot["data"] / "domain.yaml"), "--out", str(tmp_path / "tuned"), "--set", "probe_epochs=2",
                   "--set", "max_steps=2", "--set", "max_length=24", "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    probe, tuning = trained.stderr.find("phase 1/2, linear probe"), trained.stderr.find("phase 2/2, fine-tuning")
    assert 0 <= probe < tuning, trained.stderr
    import csv

    with open(tmp_path / "tuned" / "history.csv", newline="") as f:
        assert [row["phase"] for row in csv.DictReader(f)] == ["probe", "probe", "fine-tuning"]
