"""The chatbot's text handling without a trained model: dates and amounts in slots, the dialogue's
clarification, domain and training files, and the server's conversation store."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from applied_aitk.usecases.chatbot.dates import iso_date


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


def test_conversations_on_the_server_expire_when_idle_and_are_capped(monkeypatch):
    """The server's conversations are bounded: each is dropped after ttl seconds without a
    message (a message keeps it alive from the moment it arrives), and past the cap opening one
    is a 503, so memory stays flat however many conversations clients open and abandon."""
    from applied_aitk.serve import sessions
    from applied_aitk.serve.http import HTTPError

    now = [1000.0]
    monkeypatch.setattr(sessions.time, "monotonic", lambda: now[0])
    store = sessions.SessionStore(None, "chatbot", "conversation", ttl=10, limit=3)
    a, b, _ = (store.open({"turn": 0}) for _ in range(3))
    with pytest.raises(HTTPError) as full:
        store.open({"turn": 0})
    assert full.value.status == 503 and full.value.headers["Retry-After"]
    now[0] += 6
    store.touch(a)  # a message arrives: a's idle time starts again, and it stays while the message is answered
    now[0] += 6
    with pytest.raises(HTTPError) as gone:
        store.touch(b)
    assert gone.value.status == 404 and "expired after 10 s idle" in gone.value.message
    assert store.change(a, lambda state: ({"turn": state["turn"] + 1}, "answered")) == "answered"
    store.open({"turn": 0}), store.open({"turn": 0})  # b and the third idle 12 s: dropped, room for two
    with pytest.raises(HTTPError):
        store.open({"turn": 0})
    assert store.read(a) == {"turn": 1}


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


def test_yaml_examples_that_yaml_1_1_makes_numbers_or_dates_keep_their_text(tmp_path):
    from applied_aitk.usecases.chatbot.data import load_domain

    (tmp_path / "domain.yaml").write_text(
        "intents:\n  opening_hours:\n    examples: [1:30, 0123, 1_000, 1.50, 12e3, 2024-03-14, 0x1F, 7]\n"
        "handoff:\n  after_fallbacks: 03\n  negative_sentiment: 2.50\n"
    )
    domain = load_domain(tmp_path / "domain.yaml")  # YAML 1.1: 90, 83, 1000, 1.5, a date (refused), 31
    assert domain["intents"]["opening_hours"]["examples"] == ["1:30", "0123", "1_000", "1.50", "12e3", "2024-03-14", "0x1F", "7"]
    handoff = domain["handoff"]
    assert (handoff["after_fallbacks"], handoff["negative_sentiment"]) == (3, 2.5)
    assert type(handoff["after_fallbacks"]) is int and type(handoff["negative_sentiment"]) is float


def test_amounts_are_read_whole_as_people_write_them_or_not_at_all():
    from applied_aitk.usecases.chatbot.data import normalise_domain
    from applied_aitk.usecases.chatbot.dialogue import extract

    slots = normalise_domain({"intents": {}})["slots"]
    written = ["$1.5k", "2k EUR", "1,500.00 dollars", "€ 20", "20 €", "£12.50", "USD 300", "$2 million", "1.500,50 EUR"]
    for amount in written:
        assert extract(f"it was {amount} yesterday", slots).get("amount") == amount
    assert extract("1.2m", slots, expected="amount") == {"amount": "1.2m"}  # a bare number when the bot asked for it
    assert "amount" not in extract("it was $1.5x", slots, expected="amount")  # never part of a value: ask again


def test_blank_is_white_space_control_and_format_characters_only():
    from applied_aitk.usecases.chatbot.data import blank

    assert all(blank(t) for t in ("", " \t\n", "\x00", "\u200b", "\ufeff\u200d", "\x1b"))
    assert not any(blank(t) for t in ("a", "\x00a", "€", "١"))
