"""The chatbot served: `aitk serve` gives the rows batch predict writes, carries conversations turn by
turn as batch conversations do, serves a chat page a real browser uses, and shares conversations
across --workers."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from test_chatbot import ENV, predict


@pytest.fixture(scope="module")
def bot(chatbot_trained) -> dict[str, Path]:
    return chatbot_trained


def test_serve_returns_the_rows_batch_predict_writes(bot, tmp_path):
    """Messages and whole conversations: the rows of batch predict, error rows included."""
    from serve_client import client, served_rows, slim_served_rows, without_ids

    lines = [{"text": "my card still hasn't come"}, {"conversation": ["I want my money back", "it was 19.99 EUR", "yesterday"]},
             {"text": ""}, {"txt": "no text field"}, {"text": "I want to talk to a human"}, {"text": "\ud800"}]
    _, batch = predict(bot, tmp_path, lines)
    with client(bot["bundle"]) as c:
        served = served_rows(c, "chatbot", lines)
    assert without_ids(served) == without_ids(batch)
    assert slim_served_rows("chatbot", bot["bundle"], lines) == served
    assert "error" in served[3]


def test_a_message_body_nested_too_deep_is_a_400_naming_body(bot):
    from serve_client import client

    with client(bot["bundle"]) as c:  # was: 400 {"error": "There was an error parsing the body"}, no field
        conversation = c.post("/v1/chatbot/conversations").json()["id"]
        response = c.post(f"/v1/chatbot/conversations/{conversation}/messages", content=b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json() == {"error": "body: not valid JSON (nested too deeply)", "field": "body"}


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
        # as POST /v1/chatbot/predict and batch predict: a body that is not JSON, a lone surrogate
        broken = c.post(url + "/messages", content=b"not json", headers={"content-type": "application/json"})
        assert broken.status_code == 400 and broken.json() == {"error": "body: not valid JSON (Expecting value at character 0)", "field": "body"}
        lone = c.post(url + "/messages", content=json.dumps({"text": "\ud800"}), headers={"content-type": "application/json"})
        assert lone.status_code == 422 and lone.json() == {"error": "text: not valid Unicode (lone surrogate at character 0)", "field": "text"}
        time.sleep(2)
        expired = c.post(url + "/messages", json={"text": "hello"})
        assert expired.status_code == 404 and "expired" in expired.json()["error"]


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


def test_serve_with_two_workers_shares_conversations_and_metrics_and_drains(bot, wine, tmp_path):
    """`aitk serve --workers 2`: rows as batch predict, a conversation whose messages any worker
    may answer, the API key, metrics added up over the workers, SIGTERM: exit 0, temp folder gone."""
    import csv
    import signal

    import httpx
    from serve_client import batch_rows, server, without_ids

    lines = (wine["data"] / "predict.csv").read_text().splitlines()[:6]
    (tmp_path / "wine.csv").write_text("\n".join(lines) + "\n")
    records, wine_batch = list(csv.DictReader(open(tmp_path / "wine.csv"))), batch_rows("wine", wine["bundle"], [tmp_path / "wine.csv"], tmp_path / "wine.jsonl")
    texts = ["I want my money back for a purchase", "it was 19.99 EUR", "yesterday", "I need a human", "hello?"]
    _, (batch,) = predict(bot, tmp_path, [{"conversation": texts}])
    (tmp_path / "tmp").mkdir()
    env = {**ENV, "AITK_LOAD_PLUGINS": "wine,chatbot", "AITK_API_KEY": "k", "TMPDIR": str(tmp_path / "tmp")}
    with server(str(wine["bundle"]), str(bot["bundle"]), "--workers", "2", env=env) as (process, url):
        (folder,) = (tmp_path / "tmp").glob("aitk-serve-*")
        assert len(list((folder / "ready").iterdir())) == 2  # /readyz said ready: both workers serve, either may answer
        key = {"X-API-Key": "k"}
        assert httpx.post(url + "/v1/wine/predict", json={"records": records[:1]}).status_code == 401
        served = [httpx.post(url + "/v1/wine/predict", json={"records": [r]}, headers=key).json()["rows"][0] for r in records]
        assert without_ids(served) == without_ids(wine_batch)
        conversation = url + f"/v1/chatbot/conversations/{httpx.post(url + '/v1/chatbot/conversations', headers=key).json()['id']}"
        turns = [httpx.post(conversation + "/messages", json={"text": text}, headers=key).json() for text in texts]  # a connection each
        assert [{k: v for k, v in t.items() if k not in ("conversation", "turn", "handed_off")} for t in turns] == batch["turns"]
        assert [t["turn"] for t in turns] == [1, 2, 3, 4, 5] and turns[-1]["handed_off"]
        metrics = httpx.get(url + "/metrics", headers=key).text
        assert f'aitk_requests_total{{code="200",endpoint="predict",model="wine"}} {len(records)}.0' in metrics
        assert 'aitk_requests_total{code="200",endpoint="messages",model="chatbot"} 5.0' in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert not list((tmp_path / "tmp").glob("aitk-serve-*"))
