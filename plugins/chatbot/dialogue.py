"""The dialogue manager: pure Python (and numpy) over what the ONNX model understood of a message.

``decide`` turns class probabilities into answer / clarify / out-of-scope / fallback with a
confidence threshold and an ambiguity margin; ``Conversation`` adds the state: slots asked for
and filled over several turns (dates as ISO dates, the words as written kept in ``slot_text``),
a pending clarification, consecutive fallbacks, and hand-off to a person on request, after
repeated fallbacks, or on clearly negative sentiment."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from applied_aitk.usecases.chatbot.data import blank
from applied_aitk.usecases.chatbot.dates import MONTH_PATTERN, ambiguous_readings, iso_date

FAQ_PREFIX = "faq:"

_NUMBER = r"\d+(?:[.,]\d+)*"
_SCALE = r"(?:\s?(?:k|m|mn|bn|thousand|million|billion)(?![A-Za-z]))?"  # $1.5k, 2 million
_MONEY = _NUMBER + _SCALE
_CURRENCY_WORDS = r"usd|eur|gbp|chf|jpy|cad|aud|dollars?|euros?|pounds?|bucks|quid"
_MONTHS = MONTH_PATTERN
_DAYS = r"monday|tuesday|wednesday|thursday|friday|saturday|sunday"
PATTERNS = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    "date": re.compile(
        rf"\b\d{{4}}(?P<ymd>[-/.])\d{{1,2}}(?P=ymd)\d{{1,2}}\b|\b\d{{1,2}}(?P<dmy>[-/.])\d{{1,2}}(?P=dmy)(?:\d{{4}}|\d{{2}})\b"
        rf"|\b(?:(?:on\s+)?the\s+)?\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\b\.?(?:,?\s+\d{{4}})?"
        rf"|\b(?:{_MONTHS})\b\.?\s+(?:the\s+)?\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}})?"
        rf"|\b(?:today|yesterday|tomorrow)\b|\b(?:last|this|on)\s+(?:{_DAYS}|week)\b|\b(?:{_DAYS})\b",
        re.IGNORECASE,
    ),
    "amount": re.compile(
        rf"[$€£¥]\s?{_MONEY}|\b{_MONEY}\s?(?:(?:{_CURRENCY_WORDS})\b|[$€£¥])|\b(?:{_CURRENCY_WORDS})\s?{_MONEY}", re.IGNORECASE
    ),
    "order_number": re.compile(r"#\s?\d{3,}\b|\b[A-Za-z]{1,4}-?\d{4,12}\b|\b\d{5,12}\b"),
}
LENIENT = {"amount": re.compile(rf"\b{_MONEY}", re.IGNORECASE), "order_number": re.compile(r"\b(?=[A-Za-z-]*\d)[A-Za-z0-9-]{4,20}\b")}
"""Looser patterns used only when the bot has just asked for that kind of slot ("42" for an amount)."""

NEGATIVE = {
    "terrible": 2, "awful": 2, "horrible": 2, "worst": 2, "useless": 2, "ridiculous": 2, "unacceptable": 2,
    "disgusting": 2, "pathetic": 2, "furious": 2, "angry": 2, "hate": 2, "scam": 2, "incompetent": 2,
    "rubbish": 2, "outrageous": 2, "appalling": 2, "stupid": 2, "shit": 2, "crap": 2, "wtf": 2, "livid": 2,
    "disappointed": 1, "annoyed": 1, "frustrated": 1, "frustrating": 1, "upset": 1, "bad": 1, "poor": 1,
    "fed up": 2, "sick of": 2, "damn": 1, "annoying": 1, "unhappy": 1, "joke": 1,
}
INTENSIFIERS = {"very", "so", "really", "extremely", "absolutely", "totally", "completely", "utterly", "beyond"}
NEGATIONS = {"not", "no", "never", "isn't", "wasn't", "aren't", "don't", "didn't", "nothing"}


def sentiment(text: str) -> float:
    """How clearly negative a message is: 0 for neutral, about 2 per strong word; intensifiers,
    shouting and "!!!" add to it, a negation just before a word cancels it."""
    lowered = text.lower()
    score = 0.0
    for phrase in (p for p in NEGATIVE if " " in p):
        score += NEGATIVE[phrase] * lowered.count(phrase)
    words = re.findall(r"[a-z']+", lowered)
    for i, word in enumerate(words):
        weight = NEGATIVE.get(word, 0)
        if not weight:
            continue
        before = words[max(0, i - 2): i]
        if NEGATIONS & set(before):
            continue
        score += weight + (1 if INTENSIFIERS & set(before) else 0)
    if score:
        shouted = sum(1 for w in re.findall(r"\b[A-Z]{3,}\b", text) if w.lower() in NEGATIVE or len(w) > 3)
        score += (1 if "!!" in text else 0) + (1 if shouted >= 2 else 0)
    return score


def extract(text: str, slots: dict[str, dict[str, Any]], expected: str | None = None) -> dict[str, str]:
    """Slot values found in ``text``, by slot name; ``expected`` (the slot just asked for) may
    match looser patterns. Emails, dates and amounts are taken out first, so their digits are not
    read as order numbers. An amount is taken whole, as written ("$1.5k", "2k EUR", "1,500.00",
    "20 €"), or not at all: a match that runs on into letters or digits ("$1.5x") is dropped, so
    the bot asks again rather than confirm part of a value."""
    found: dict[str, list[str]] = {}
    rest = text
    for kind in ("email", "date", "amount", "order_number"):
        for match in PATTERNS[kind].finditer(rest):
            if kind != "amount" or whole(match):
                found.setdefault(kind, []).append(match.group(0).strip())
        rest = PATTERNS[kind].sub(" ", rest)
    if expected and slots[expected]["type"] in LENIENT and not found.get(slots[expected]["type"]):
        match = LENIENT[slots[expected]["type"]].search(rest)
        if match and whole(match):
            found[slots[expected]["type"]] = [match.group(0).strip()]
    values: dict[str, str] = {}
    order = ([expected] if expected else []) + [n for n in slots if n != expected]
    for name in order:
        spec = slots[name]
        if spec["type"] == "regex":
            match = re.search(spec["pattern"], text, re.IGNORECASE)
            if match:
                values[name] = (match.group(1) if match.groups() else match.group(0)).strip()
        elif found.get(spec["type"]):
            values[name] = found[spec["type"]][0]
    return values


def whole(match: re.Match) -> bool:
    """True when the match is not the start of a longer token (a word or number it would cut)."""
    after = match.string[match.end() : match.end() + 1]
    return not after.isalnum() and not (after in ".," and match.string[match.end() + 1 : match.end() + 2].isdigit())


@dataclass
class Understanding:
    """What the model made of one message: probabilities over the bundle's labels and the nearest FAQ."""

    probs: np.ndarray
    faq: str | None = None
    faq_similarity: float = 0.0
    truncated: bool = False


@dataclass
class Decision:
    kind: str  # answer, clarify, out_of_scope, fallback
    label: str
    confidence: float
    second: str | None = None


class Policy:
    """The domain and the thresholds every conversation of a bundle shares."""

    def __init__(self, domain: dict[str, Any], labels: list[str], threshold: float, margin: float, faq_threshold: float):
        self.domain, self.labels = domain, labels
        self.threshold, self.margin, self.faq_threshold = threshold, margin, faq_threshold
        self.index = {label: i for i, label in enumerate(labels)}
        self.oos = domain["out_of_scope_intent"]
        self.faqs = {entry["id"]: entry for entry in domain["faq"]}
        keywords = domain["handoff"]["keywords"]
        self.handoff_words = re.compile(r"\b(?:" + "|".join(re.escape(k) for k in keywords) + r")\b") if keywords else None

    def decide(self, probs: np.ndarray) -> Decision:
        """Answer when the top label is confident and clear of the next; clarify when the two
        together are confident but too close to tell apart; otherwise out-of-scope or fallback."""
        order = np.argsort(-probs, kind="stable")
        first = self.labels[order[0]]
        p1 = float(probs[order[0]])
        second = self.labels[order[1]] if len(order) > 1 else None
        p2 = float(probs[order[1]]) if len(order) > 1 else 0.0
        if first == self.oos:
            return Decision("out_of_scope" if p1 >= self.threshold else "fallback", first, p1)
        if p1 >= self.threshold and p1 - p2 >= self.margin:
            return Decision("answer", first, p1)
        if p1 + p2 >= self.threshold and second != self.oos:
            return Decision("clarify", first, p1, second)
        return Decision("fallback", first, p1)

    def describe(self, label: str) -> str:
        if label.startswith(FAQ_PREFIX):
            return f'"{self.faqs[label[len(FAQ_PREFIX):]]["questions"][0]}"'
        return self.domain["intents"][label]["description"]


class Conversation:
    """One customer's conversation: ``respond(message, understanding)`` returns the turn as a row."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.domain = policy.domain
        self.turn = 0
        self.fallbacks = 0
        self.handed_off = False
        self.pending: str | None = None  # intent waiting for slots
        self.slots: dict[str, str] = {}
        self.slot_text: dict[str, str] = {}  # slots whose value was normalised (a date), as written
        self.unclear: dict[str, str] = {}  # date slots given as an ambiguous date (05/06/2024), as written: asked again
        self.clarifying: tuple[str, str] | None = None
        self._probs: np.ndarray | None = None

    STATE = ("turn", "fallbacks", "handed_off", "pending", "slots", "slot_text", "unclear", "clarifying")

    def state(self) -> dict[str, Any]:
        """Where the conversation stands, as JSON values (what a server stores between turns)."""
        return {name: getattr(self, name) for name in self.STATE}

    @classmethod
    def restore(cls, policy: Policy, state: dict[str, Any]) -> Conversation:
        """The conversation ``state()`` described."""
        conversation = cls(policy)
        for name in cls.STATE:
            setattr(conversation, name, state[name])
        if conversation.clarifying is not None:
            conversation.clarifying = tuple(conversation.clarifying)
        return conversation

    def respond(self, message: str | None, understanding: Understanding | None) -> dict[str, Any]:
        """``message`` None means it could not be read (invalid UTF-8); ``understanding`` None means
        the message was empty or unreadable and never reached the model."""
        self.turn += 1
        self._probs = understanding.probs if understanding is not None else None
        row: dict[str, Any] = {"message": message, "intent": None, "confidence": None}
        if message is None:
            return self._reply(row, "unreadable", self.domain["unreadable"])
        if blank(message) or understanding is None:
            return self._reply(row, "empty", self.domain["empty"])
        decision = self.policy.decide(understanding.probs)
        row["intent"], row["confidence"] = decision.label, round(decision.confidence, 4)
        if understanding.truncated:
            row["truncated"] = True
        if self.handed_off:
            return self._reply(row, "handed_off", self.domain["handoff"]["waiting"])
        reason = self._handoff_reason(message, decision)
        if reason:
            return self._handoff(row, reason)
        if self.clarifying:
            chosen = self._resolve_clarification(message, decision)
            if chosen:
                decision = Decision("answer", chosen, decision.confidence)
        if self.pending:
            filled, written = self._extract(message, expected=self._missing()[0])
            wanted = {k: v for k, v in filled.items() if k in self._missing()}
            switching = decision.kind in ("answer", "out_of_scope") and decision.label != self.pending
            if wanted or not switching:
                row["intent"] = self.pending
                if not wanted:
                    return self._not_understood(row, again=True)
                self.slots.update(wanted)
                self.slot_text.update({k: v for k, v in written.items() if k in wanted})
                return self._complete(row, self.pending)
            self.pending, self.slots, self.slot_text = None, {}, {}
        if decision.kind == "answer":
            if decision.label.startswith(FAQ_PREFIX):
                return self._faq(row, decision.label[len(FAQ_PREFIX):])
            required = self.domain["intents"][decision.label]["required_slots"]
            filled, written = self._extract(message)
            self.slots = {k: v for k, v in filled.items() if k in required}
            self.slot_text = {k: v for k, v in written.items() if k in required}
            return self._complete(row, decision.label)
        if decision.kind == "out_of_scope":
            self.fallbacks = 0
            return self._reply(row, "out_of_scope", self._response(self.policy.oos))
        if understanding.faq is not None and understanding.faq_similarity >= self.policy.faq_threshold:
            row["faq_similarity"] = round(understanding.faq_similarity, 4)
            return self._faq(row, understanding.faq)
        if decision.kind == "clarify":
            self.clarifying = (decision.label, decision.second)
            row["candidates"] = [decision.label, decision.second]
            first, second = (self.policy.describe(label) for label in self.clarifying)
            return self._reply(row, "clarify", self.domain["clarify"].format(first=first, second=second))
        return self._not_understood(row)

    def _handoff_reason(self, message: str, decision: Decision) -> str | None:
        handoff = self.domain["handoff"]
        if self.policy.handoff_words and self.policy.handoff_words.search(message.lower()):
            return "request"
        if decision.kind == "answer" and decision.label in handoff["intents"]:
            return "request"
        if handoff["negative_sentiment"] and sentiment(message) >= handoff["negative_sentiment"]:
            return "negative_sentiment"
        return None

    def _resolve_clarification(self, message: str, decision: Decision) -> str | None:
        first, second = self.clarifying
        self.clarifying = None
        lowered = message.lower()
        if re.search(r"\b(?:2|2nd|second|latter|other)\b", lowered):
            return second
        if re.search(r"\b(?:1|1st|first|former)\b", lowered):
            return first
        if decision.label in (first, second) and decision.kind != "fallback":
            return decision.label
        return None

    def _extract(self, message: str, expected: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
        """(the slot values in ``message`` (see ``extract``) with dates as ISO dates, relative to
        today; the text as written of each value so normalised)."""
        values, written = extract(message, self.domain["slots"], expected), {}
        self.unclear = {}
        for name, text in list(values.items()):
            if self.domain["slots"][name]["type"] != "date":
                continue
            day = iso_date(text, dt.date.today())
            if day is not None:
                values[name], written[name] = day, text
            elif ambiguous_readings(text):  # never filled with a guess: the bot asks which day
                self.unclear[name] = values.pop(name)
        return values, written

    def _slot_question(self, slot: str) -> str:
        """The slot's prompt; for a date given ambiguously, first which of its two days was meant."""
        prompt = self.domain["slots"][slot]["prompt"]
        readings = ambiguous_readings(self.unclear.get(slot, ""))
        if readings is None:
            return prompt
        first, second = (f"{d.day} {d:%B %Y}" for d in readings)
        return f"Is {self.unclear[slot]} {first} or {second}? Please write the month as a word. {prompt}"

    def _missing(self) -> list[str]:
        return [s for s in self.domain["intents"][self.pending]["required_slots"] if s not in self.slots]

    def _complete(self, row: dict[str, Any], intent: str) -> dict[str, Any]:
        """Answer ``intent`` if its required slots are filled, else ask for the first missing one."""
        self.fallbacks = 0
        self.pending = intent
        row["intent"] = intent
        if self.slots:
            row["slots"] = dict(self.slots)
        if self.slot_text:
            row["slot_text"] = dict(self.slot_text)
        missing = self._missing()
        if missing:
            return self._reply(row, "ask_slot", self._slot_question(missing[0]), slot=missing[0])
        reply = self._response(intent, {**self.slots, "intent": intent})
        self.pending, self.slots, self.slot_text = None, {}, {}
        return self._reply(row, "respond", reply)

    def _faq(self, row: dict[str, Any], faq_id: str) -> dict[str, Any]:
        self.fallbacks = 0
        row["intent"], row["faq"] = FAQ_PREFIX + faq_id, faq_id
        return self._reply(row, "faq", self.policy.faqs[faq_id]["answer"])

    def _not_understood(self, row: dict[str, Any], again: bool = False) -> dict[str, Any]:
        """A fallback, or the slot question again; after too many in a row, a person takes over."""
        self.fallbacks += 1
        limit = self.domain["handoff"]["after_fallbacks"]
        if limit and self.fallbacks > limit:
            return self._handoff(row, "fallbacks")
        if again:
            slot = self._missing()[0]
            if slot in self.unclear:
                return self._reply(row, "ask_slot", self._slot_question(slot), slot=slot)
            return self._reply(row, "ask_slot", "Sorry, I still need this: " + self.domain["slots"][slot]["prompt"], slot=slot)
        return self._reply(row, "fallback", self.domain["fallback"])

    def _handoff(self, row: dict[str, Any], reason: str) -> dict[str, Any]:
        self.handed_off = True
        row["handoff_reason"] = reason
        return self._reply(row, "handoff", self.domain["handoff"]["response"])

    def _response(self, intent: str, values: dict[str, str] | None = None) -> str:
        responses = self.domain["intents"][intent]["responses"]
        return responses[(self.turn - 1) % len(responses)].format_map(values or {"intent": intent})

    def _reply(self, row: dict[str, Any], action: str, reply: str, slot: str | None = None) -> dict[str, Any]:
        if self._probs is not None and row["intent"] in self.policy.index:
            row["confidence"] = round(float(self._probs[self.policy.index[row["intent"]]]), 4)
        row["action"], row["reply"] = action, reply
        if slot:
            row["asking_for"] = slot
        return row
