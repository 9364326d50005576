"""Reading chatbot inputs: the domain file, (text, intent) CSVs, and JSONL messages or conversations.

A domain is kept as a plain JSON-able dict (``load_domain`` validates and fills defaults), so the
bundle stores it as ``domain.json`` and the dialogue manager reads it without this module's help."""

from __future__ import annotations

import io
import json
import re
import string
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from applied_aitk import AitkError, InputError, Record
from applied_aitk.errors import check_unicode
from applied_aitk.io import base_suffix, name_of, open_text, read_lines

FAQ_PREFIX = "faq:"
DOMAIN_SUFFIXES = (".yaml", ".yml", ".json")
SLOT_TYPES = ("order_number", "email", "amount", "date", "regex")
MAX_MESSAGE_CHARS = 4000
"""Longer messages are cut before tokenising (the model sees max_len tokens anyway)."""

DEFAULT_PROMPTS = {
    "order_number": "Could you give me the order or reference number?",
    "email": "What is your email address?",
    "amount": "How much money was it?",
    "date": "On which date was it?",
}
DEFAULTS = {
    "fallback": "Sorry, I didn't understand that. Could you rephrase it?",
    "clarify": "Did you mean {first} or {second}?",
    "empty": "Please type a message.",
    "unreadable": "Sorry, I couldn't read that message. Could you type it again?",
    "out_of_scope_response": "Sorry, that's not something I can help with.",
}
DEFAULT_HANDOFF = {
    "intents": [],
    "keywords": ["human", "agent", "real person", "representative"],
    "after_fallbacks": 2,
    "negative_sentiment": 3.0,
    "response": "I'm passing you to a colleague now.",
    "waiting": "A colleague will be with you shortly.",
}


def load_domain(path: Path) -> dict[str, Any]:
    """The domain file (YAML or JSON) validated, with defaults filled in and CSV paths resolved."""
    path = Path(path)
    if path.suffix.lower() not in DOMAIN_SUFFIXES:
        raise AitkError(f"{path}: a domain file must end in .yaml, .yml or .json")
    if not path.is_file():
        raise AitkError(f"{path}: no such file")
    try:
        with open_text(path) as f:
            text = f.read()
        raw = json.loads(text) if path.suffix.lower() == ".json" else read_yaml(text)
    except InputError:
        raise
    except Exception as e:
        raise AitkError(f"{path}: cannot parse the domain file ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise AitkError(f"{path}: expected a mapping with intents, faq, handoff, fallback")
    return normalise_domain(raw, str(path), base=path.parent)


def read_yaml(text: str) -> Any:
    """YAML 1.2 (``applied_aitk.settings_file.load_yaml``): intents named yes, no, on, off (and
    examples "yes", "no") stay text, where YAML 1.1 would turn them into True/False; an example
    written ``1:30``, ``0123``, ``1.50`` or ``2024-03-14`` is that text (1.1: 90, 83, 1.5, a date)."""
    from applied_aitk.settings_file import load_yaml

    return load_yaml(text, number_text=True)


def normalise_domain(raw: dict[str, Any], where: str = "domain", base: Path | None = None) -> dict[str, Any]:
    """Validate a domain mapping; ``where`` names it in error messages."""
    known = {"name", "fallback", "clarify", "empty", "unreadable", "out_of_scope_intent", "training_data", "slots", "intents", "faq", "handoff"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise AitkError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    domain: dict[str, Any] = {"name": str(raw.get("name") or "assistant")}
    for key in ("fallback", "clarify", "empty", "unreadable"):
        domain[key] = _text(raw.get(key, DEFAULTS[key]), f"{where}: {key}")
    domain["out_of_scope_intent"] = _text(raw.get("out_of_scope_intent", "out_of_scope"), f"{where}: out_of_scope_intent")
    domain["slots"] = _slots(raw.get("slots") or {}, where)
    domain["intents"] = {name: _intent(name, spec, where, domain["slots"]) for name, spec in _mapping(raw.get("intents") or {}, f"{where}: intents").items()}
    _fill_responses(domain)
    domain["faq"] = _faqs(raw.get("faq") or [], where)
    domain["handoff"] = _handoff(raw.get("handoff") or {}, where, domain["intents"])
    _placeholders(domain["clarify"], {"first", "second"}, f"{where}: clarify")
    files = raw.get("training_data") or []
    files = [files] if isinstance(files, str) else files
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise AitkError(f"{where}: training_data: expected a CSV file name or a list of them")
    domain["training_data"] = [str((base or Path.cwd()) / f) for f in files]
    return domain


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AitkError(f"{where}: expected a mapping of name to settings")
    for key in value:
        if not isinstance(key, str):
            raise AitkError(f"{where}: name {key!r} is not text; quote it (\"{str(key).lower()}\")")
    return dict(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AitkError(f"{where}: expected a non-empty string")
    return value


def _texts(value: Any, where: str, allow_empty: bool = True) -> list[str]:
    if value is None:
        value = []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise AitkError(f"{where}: expected a list of strings")
    flags = [v for v in value if isinstance(v, bool)]
    if flags:
        raise AitkError(f"{where}: {flags[0]!r} is not text; quote it (\"{str(flags[0]).lower()}\")")
    texts = [str(v) for v in value if str(v).strip()]
    if not texts and not allow_empty:
        raise AitkError(f"{where}: expected at least one non-empty string")
    return texts


def _slots(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    slots = {name: {"type": name, "pattern": None, "prompt": prompt} for name, prompt in DEFAULT_PROMPTS.items()}
    for name, spec in _mapping(raw, f"{where}: slots").items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise AitkError(f"{where}: slots.{name}: expected a mapping with type, prompt (and pattern for type regex)")
        kind = spec.get("type", name if name in SLOT_TYPES else "regex")
        if kind not in SLOT_TYPES:
            raise AitkError(f"{where}: slots.{name}.type: {kind!r}, expected one of {', '.join(SLOT_TYPES)}")
        pattern = spec.get("pattern")
        if kind == "regex":
            import re

            try:
                re.compile(_text(pattern, f"{where}: slots.{name}.pattern"))
            except re.error as e:
                raise AitkError(f"{where}: slots.{name}.pattern: not a valid regular expression ({e})") from None
        prompt = spec.get("prompt", DEFAULT_PROMPTS.get(kind, f"What is the {name.replace('_', ' ')}?"))
        slots[name] = {"type": kind, "pattern": pattern, "prompt": _text(prompt, f"{where}: slots.{name}.prompt")}
    return slots


def _intent(name: str, spec: Any, where: str, slots: dict[str, Any]) -> dict[str, Any]:
    here = f"{where}: intents.{name}"
    if name.startswith(FAQ_PREFIX):
        raise AitkError(f"{here}: intent names may not start with {FAQ_PREFIX!r} (reserved for FAQ entries)")
    spec = spec or {}
    if not isinstance(spec, dict):
        raise AitkError(f"{here}: expected a mapping with examples, responses, required_slots")
    required = _texts(spec.get("required_slots"), f"{here}.required_slots")
    for slot in required:
        if slot not in slots:
            raise AitkError(f"{here}.required_slots: unknown slot {slot!r}; declare it under slots")
    responses = _texts(spec.get("responses"), f"{here}.responses")
    for i, response in enumerate(responses):
        _placeholders(response, set(required) | {"intent"}, f"{here}.responses[{i}] (only required_slots can fill a response)")
    return {
        "description": str(spec.get("description") or describe(name)),
        "examples": _texts(spec.get("examples"), f"{here}.examples"),
        "responses": responses,
        "required_slots": required,
    }


def _fill_responses(domain: dict[str, Any]) -> None:
    """Intents written without responses get a generic one (the out-of-scope intent its own)."""
    for name, intent in domain["intents"].items():
        if not intent["responses"]:
            generic = DEFAULTS["out_of_scope_response"] if name == domain["out_of_scope_intent"] else f"I can help with {intent['description']}."
            intent["responses"] = [generic]


def _faqs(raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise AitkError(f"{where}: faq: expected a list of entries with id, questions, answer")
    entries, seen = [], set()
    for i, spec in enumerate(raw):
        here = f"{where}: faq[{i}]"
        if not isinstance(spec, dict):
            raise AitkError(f"{here}: expected a mapping with id, questions, answer")
        faq_id = str(spec.get("id") or f"faq{i + 1}")
        if faq_id in seen:
            raise AitkError(f"{here}.id: {faq_id!r} is used twice")
        seen.add(faq_id)
        entries.append({"id": faq_id, "questions": _texts(spec.get("questions"), f"{here}.questions", allow_empty=False), "answer": _text(spec.get("answer"), f"{here}.answer")})
    return entries


def _handoff(raw: Any, where: str, intents: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise AitkError(f"{where}: handoff: expected a mapping")
    unknown = sorted(set(raw) - set(DEFAULT_HANDOFF))
    if unknown:
        raise AitkError(f"{where}: handoff: unknown key {unknown[0]!r}; known keys: {', '.join(DEFAULT_HANDOFF)}")
    handoff = {**DEFAULT_HANDOFF, **raw}
    handoff["intents"] = _texts(handoff["intents"], f"{where}: handoff.intents")
    for name in handoff["intents"]:
        if name not in intents:
            raise AitkError(f"{where}: handoff.intents: {name!r} is not an intent of this domain")
    handoff["keywords"] = [k.lower() for k in _texts(handoff["keywords"], f"{where}: handoff.keywords")]
    for key in ("after_fallbacks", "negative_sentiment"):
        value = handoff[key]
        if value is False or value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise AitkError(f"{where}: handoff.{key}: expected a number >= 0 (0 turns it off)")
        handoff[key] = value
    handoff["after_fallbacks"] = int(handoff["after_fallbacks"])
    handoff["negative_sentiment"] = float(handoff["negative_sentiment"])
    for key in ("response", "waiting"):
        handoff[key] = _text(handoff[key], f"{where}: handoff.{key}")
    return handoff


def _placeholders(template: str, allowed: set[str], where: str) -> None:
    try:
        names = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as e:
        raise AitkError(f"{where}: {e} (write {{{{ and }}}} for literal braces)") from None
    bad = sorted(n for n in names if n not in allowed)
    if bad:
        raise AitkError(f"{where}: unknown placeholder {{{bad[0]}}}; use one of {', '.join(sorted(allowed))}")


def describe(label: str) -> str:
    """A readable name for an intent label: ``card_arrival`` -> ``card arrival``."""
    return label.removeprefix(FAQ_PREFIX).replace("_", " ").strip()


def empty_domain() -> dict[str, Any]:
    return normalise_domain({})


def read_csv(path: Path) -> list[tuple[str, str]]:
    """(text, intent) rows of a CSV with columns ``text`` and ``intent`` (or ``category``/``label``);
    a first line ``sep=X`` (Excel's hint) sets the delimiter."""
    import pandas as pd

    from applied_aitk.table_files import _check_fields, _record_lines, excel_separator

    try:
        with open_text(path) as f:
            text = f.read()
        if not text.strip():  # pandas: EmptyDataError, "No columns to parse from file"
            raise InputError(f"{path}: no rows (the file is empty)")
        hinted = excel_separator(text.split("\n", 1)[0])
        _check_fields(text, int(hinted is not None), hinted or ",", path)  # a short or long row, a column named twice
        frame = pd.read_csv(io.StringIO(text), sep=hinted or ",", dtype=str, keep_default_na=False, skiprows=int(hinted is not None))
    except InputError:
        raise
    except Exception as e:
        raise AitkError(f"{path}: cannot read the CSV ({type(e).__name__}: {e})") from None
    lines = _record_lines(text, int(hinted is not None), hinted or ",", len(frame))  # as an editor counts them
    columns = {c.strip().lower(): c for c in frame.columns}
    label = next((columns[c] for c in ("intent", "category", "label") if c in columns), None)
    if "text" not in columns or label is None:
        raise AitkError(f"{path}: expected columns text and intent (or category/label), found {', '.join(frame.columns)}")
    rows = [(t.strip(), i.strip()) for t, i in zip(frame[columns["text"]], frame[label])]
    empty = [line for line, (t, i) in zip(lines, rows) if not t or not i]
    if empty:
        raise AitkError(f"{path}:{empty[0]}: empty text or intent")
    return rows


def domain_rows(domain: dict[str, Any]) -> list[tuple[str, str]]:
    """Labelled utterances a domain holds: intent examples, FAQ question variants, its CSV files."""
    rows = [(text, name) for name, intent in domain["intents"].items() for text in intent["examples"]]
    rows += [(q, FAQ_PREFIX + entry["id"]) for entry in domain["faq"] for q in entry["questions"]]
    for csv_path in domain["training_data"]:
        rows += read_csv(Path(csv_path))
    return rows


def resolve_domain_file(data: Path) -> Path | None:
    """``data`` itself when it is a domain file; ``domain.yaml``/``.yml``/``.json`` in a folder."""
    if data.is_dir():
        for name in ("domain.yaml", "domain.yml", "domain.json"):
            if (data / name).is_file():
                return data / name
        return None
    return data if data.suffix.lower() in DOMAIN_SUFFIXES else None


def labelled_data(data: Path, domain_file: str = "") -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The domain and its labelled utterances from DATA: a domain file, a folder with one, or a CSV.

    A CSV may be paired with ``domain_file``; intents found only in the CSV join the domain with a
    generic response, so a bare Banking77 CSV trains a working bot."""
    data = Path(data)
    found = resolve_domain_file(data)
    if found is not None:
        domain = load_domain(found)
        rows = domain_rows(domain)
    elif base_suffix(data) == ".csv":  # also gzipped, x.csv.gz
        domain = load_domain(Path(domain_file)) if domain_file else empty_domain()
        rows = domain_rows(domain) + read_csv(data)
    else:
        raise AitkError(f"{data}: expected a domain file (.yaml/.json), a folder holding domain.yaml, or a CSV of text,intent")
    for _, label in rows:
        if not label.startswith(FAQ_PREFIX) and label not in domain["intents"]:
            domain["intents"][label] = _intent(label, {}, "csv", domain["slots"])
    _fill_responses(domain)
    faq_ids = {entry["id"] for entry in domain["faq"]}
    stray = sorted({label for _, label in rows if label.startswith(FAQ_PREFIX) and label[len(FAQ_PREFIX):] not in faq_ids})
    if stray:
        raise AitkError(f"{data}: label {stray[0]!r} names no FAQ entry of the domain")
    if not rows:
        raise AitkError(f"{data}: no labelled utterances (intent examples, FAQ questions or CSV rows)")
    return domain, rows


def evaluation_rows(data: Path) -> list[tuple[str, str]]:
    """Labelled utterances to evaluate on: a CSV of text,intent, or a domain file's examples."""
    data = Path(data)
    found = resolve_domain_file(data)
    if found is None and base_suffix(data) != ".csv":  # also gzipped, x.csv.gz
        raise AitkError(f"{data}: expected a CSV of text,intent or a domain file")
    rows = domain_rows(load_domain(found)) if found is not None else read_csv(data)
    if not rows:  # never a score over nothing (the model, called on no texts, raised numpy's "zero-size array")
        raise AitkError(f"{data}: no rows")
    return rows


def read_records(paths: Iterable[Path]) -> Iterator[Record]:
    """One record per JSONL line: ``{"text": ...}`` or ``{"conversation": [...]}``; ``-`` is stdin.

    Files are read by ``applied_aitk.io.read_lines``: gzip, a byte-order mark and UTF-16 are handled, a
    line that is not valid text is one error record, and a file that cannot be read is one too."""
    for path in paths:
        where = name_of(path)
        try:
            for line in read_lines(path):
                rid = f"{where}:{line.number}"
                yield Record(id=rid, error=line.message(where)) if line.error else _record(rid, line.text)
        except InputError as e:
            yield Record(id=where, error=str(e) if str(e).startswith(where) else f"{where}: {e}")


def _record(where: str, line: str) -> Record:
    try:
        return Record(id=where, data=json.loads(line))
    except json.JSONDecodeError as e:
        return Record(id=where, error=f"{where}: not a JSON object ({e.msg})")


def blank(text: str) -> bool:
    """True for a message with nothing to read: white space, control and format characters only
    (a NUL, a zero-width space, a stray byte-order mark), which the model would still classify."""
    import unicodedata

    return all(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in text)


def decode_record(record: Record) -> tuple[str, Any]:
    """``("message", text)`` or ``("conversation", [texts])``; InputError names what was expected."""
    data = record.data
    if isinstance(data, dict) and isinstance(data.get("text"), str):
        return "message", check_unicode(data["text"], f"{record.id}: field text")
    if isinstance(data, dict) and isinstance(data.get("conversation"), list):
        turns = []
        for i, turn in enumerate(data["conversation"]):
            text = turn.get("text") if isinstance(turn, dict) else turn
            if not isinstance(text, str):
                raise InputError(f"{record.id}: field conversation[{i}]: expected a string or {{\"text\": string}}")
            turns.append(check_unicode(text, f"{record.id}: field conversation[{i}]"))
        return "conversation", turns
    raise InputError(f"{record.id}: expected {{\"text\": string}} or {{\"conversation\": [strings]}}")
