"""Reading codegen inputs: source corpora, the held-out file split, the tokenizer, prompts, problems."""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from applied_aitk import AitkError, InputError, Record
from applied_aitk.console import get_logger
from applied_aitk.errors import check_unicode
from applied_aitk.io import has_suffix, name_of, open_text, read_lines

from applied_aitk.usecases.codegen.fim import TRAINED_STYLE, Infill

logger = get_logger(__name__)

EOT = "<|endoftext|>"
PAD = "<|pad|>"
STDLIB = "stdlib"
SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".venv", "venv", "node_modules", "site-packages", ".tox", ".mypy_cache"}
STDLIB_SKIP_DIRS = SKIP_DIRS | {"test", "tests", "idle_test"}
MAX_FILE_BYTES = 1_000_000
PROBLEM_SUFFIXES = (".jsonl", ".json")
# Stop sequences of the bigcode evaluation harness: the completion ends where a new top-level statement begins.
MBPP_STOP = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n```")
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(spec: str | Path, include: str | list[str] = "*.py") -> list[Path]:
    """Source files named by ``spec``: comma-separated files, folders, globs, ``stdlib``, or ``-`` (a list on stdin).

    ``include``: file name patterns (a list; text is comma-separated, as bundles of version 1 hold it)."""
    patterns = [p.strip() for p in include.split(",") if p.strip()] if isinstance(include, str) else list(include)
    files: dict[Path, None] = {}
    for part in [p.strip() for p in str(spec).split(",") if p.strip()]:
        for path in _expand(part, patterns):
            files[path.resolve()] = None
    if not files:
        raise AitkError(f"{spec}: no source files matching {','.join(patterns)}")
    return sorted(files)


def _expand(part: str, patterns: list[str]) -> Iterator[Path]:
    path = Path(part)
    if part == STDLIB or (path.is_dir() and path.resolve() == stdlib_dir().resolve()):
        yield from _walk(stdlib_dir(), patterns, STDLIB_SKIP_DIRS)
    elif part == "-":
        for line in sys.stdin:
            if line.strip() and line.strip() != "-":
                yield from _expand(line.strip(), patterns)
    elif path.is_dir():
        yield from _walk(path, patterns, SKIP_DIRS)
    elif path.is_file():
        yield path
    elif glob.has_magic(part):
        yield from (Path(m) for m in sorted(glob.glob(part, recursive=True)) if Path(m).is_file())
    else:
        raise AitkError(f"{part}: no such file or directory")


def _walk(root: Path, patterns: list[str], skip: set[str]) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
        for name in sorted(names):
            if any(fnmatch.fnmatch(name, p) for p in patterns):
                yield Path(folder) / name


def read_sources(files: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """The files that are UTF-8 text under 1 MB, and their text; the others are skipped with a note."""
    kept, texts, skipped = [], [], []
    for path in files:
        data = path.read_bytes()
        if len(data) > MAX_FILE_BYTES:
            skipped.append(f"{path} (over 1 MB)")
            continue
        try:
            texts.append(data.decode("utf-8"))
            kept.append(path)
        except UnicodeDecodeError as e:
            skipped.append(f"{path} (invalid UTF-8 at byte {e.start})")
    if skipped:
        logger.info(f"skipped {len(skipped)} files: {', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}")
    return kept, texts


def split_files(files: list[Path], texts: list[str], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and held-out files. A file is held out by a hash of its content: the split does
    not depend on where the corpus lies, and copies of one file never end up on both sides."""
    if holdout <= 0:
        return list(range(len(files))), []
    if len(files) < 2:
        raise AitkError(f"{files[0] if files else 'corpus'}: a held-out split needs at least 2 files (or set holdout=0)")
    scores = [int(hashlib.sha1(f"{seed}:".encode() + t.encode("utf-8", "surrogatepass")).hexdigest()[:8], 16) / 2**32 for t in texts]
    held = [i for i, s in enumerate(scores) if s < holdout] or [min(range(len(files)), key=scores.__getitem__)]
    if len(held) == len(files):
        held.remove(max(held, key=scores.__getitem__))
    held_set = set(held)
    return [i for i in range(len(files)) if i not in held_set], sorted(held)


def train_tokenizer(texts: list[str], vocab_size: int, fim: bool = False):
    """A byte-level BPE tokenizer; every encoded text starts with the end-of-text token, as files do in training.
    With ``fim``, StarCoder's fill-in-the-middle tokens are special tokens too (plugins/codegen/fim.py)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT, PAD, *((TRAINED_STYLE.prefix, TRAINED_STYLE.suffix, TRAINED_STYLE.middle) if fim else ())],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer, length=len(texts))
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{EOT} $A", special_tokens=[(EOT, tokenizer.token_to_id(EOT))])
    return tokenizer


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:
        raise AitkError(f"{path}: not a tokenizers tokenizer.json ({e})") from None


def token_stream(tokenizer, texts: list[str]):
    """All texts encoded and concatenated (each starts with end-of-text) as one int32 array."""
    import numpy as np

    return np.concatenate(file_tokens(tokenizer, texts)) if texts else np.zeros(0, np.int32)


def file_tokens(tokenizer, texts: list[str]) -> list:
    """Each text encoded (int32 arrays), as ``token_stream`` concatenates them."""
    import numpy as np

    return [np.asarray(e.ids, np.int32) for e in tokenizer.encode_batch(texts)]


def eval_windows(stream, context: int, max_tokens: int = 0) -> list:
    """Windows of ``context`` tokens overlapping by one, so each token after the first is predicted once."""
    if max_tokens:
        stream = stream[: max_tokens + 1]
    step = context - 1
    return [stream[i : i + context] for i in range(0, max(len(stream) - 1, 0), step)]


# ---- prompts (predict) ----

def read_prompt_records(paths: Iterable[Path]) -> Iterator[Record]:
    """One record per JSONL line ({"prompt": ...} or {"prefix": ..., "suffix": ...}, optional "id"); any
    other file is one prompt.

    Read by ``applied_aitk.io``: gzip, UTF-8 with or without a byte-order mark, UTF-16 with one; any
    other bytes (cp1252, Latin-1) are an error record naming the byte offset."""
    for path in paths:
        where = name_of(path)
        try:
            if str(path) == "-" or has_suffix(path, PROBLEM_SUFFIXES):
                yield from _jsonl_records(path)
            else:
                yield _text_record(path)
        except InputError as e:
            yield Record(id=where, error=str(e) if str(e).startswith(where) else f"{where}: {e}")


def _jsonl_records(path: Path) -> Iterator[Record]:
    name = name_of(path)
    for line in read_lines(path):
        where = f"{name}:{line.number}"
        if line.error:
            yield Record(id=where, error=line.message(name))
            continue
        try:
            obj = json.loads(line.text)
        except json.JSONDecodeError as e:
            yield Record(id=where, error=f"{where}: not valid JSON ({e.msg})")
            continue
        key = obj.get("id", obj.get("task_id")) if isinstance(obj, dict) else None
        if not id_problem(key):
            yield Record(id=where if key is None else str(key), data={"where": where, "value": obj})
        else:
            yield Record(id=where, error=f"{where}: {id_problem(key)}")


def id_problem(key: Any) -> str | None:
    """Why a record's ``id`` (or ``task_id``) cannot name its row: true/false, a list or an object
    (its Python text, ``{'a': 1}``, is no id a user wrote); None for text, a number or none."""
    if isinstance(key, (bool, dict, list)):
        kind = {bool: "true/false", dict: "an object", list: "a list"}[type(key)]
        return f"field id: expected text or a number, got {kind}"
    return None


def _text_record(path: Path) -> Record:
    with open_text(path) as f:
        prompt = f.read()
    return Record(id=str(path), data={"where": str(path), "value": {"prompt": prompt}})


def prompt_of(data: dict[str, Any]) -> str | Infill:
    """The prompt of a record: ``{"prompt": ...}``, or fill-in-the-middle ``{"prefix": ..., "suffix": ...}``
    (a record with a ``suffix``; its prefix may also be given as ``prompt``; one of the two may be
    empty, not both). A ``prefix`` with no ``suffix`` is a plain prompt. InputError naming the file,
    line and field."""
    where, value = data["where"], data["value"]
    if not isinstance(value, dict):
        raise InputError(f'{where}: expected a JSON object like {{"prompt": "def fib(n):"}} or {{"prefix": ..., "suffix": ...}}')
    if "suffix" in value:
        key = "prefix" if "prefix" in value else "prompt"
        prefix, suffix = value.get(key, ""), value["suffix"]
        for name, text in ((key, prefix), ("suffix", suffix)):
            if not isinstance(text, str):
                raise InputError(f"{where}: field {name}: expected a string")
            check_unicode(text, f"{where}: field {name}")
        if not prefix.strip() and not suffix.strip():
            raise InputError(f"{where}: fields {key} and suffix: expected code in at least one of them")
        return Infill(prefix, suffix)
    key = "prefix" if "prefix" in value and "prompt" not in value else "prompt"
    prompt = value.get(key)
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{where}: field {key}: expected a non-empty string")
    check_unicode(prompt, f"{where}: field {key}")
    return prompt


# ---- problems with tests (evaluate) ----

@dataclass
class Problem:
    """A task: the model completes ``prompt``; ``prompt + completion + tests`` must run without error."""

    task_id: str
    prompt: str
    tests: str
    stop: tuple[str, ...]

    def program(self, completion: str) -> str:
        return f"{self.prompt}{completion}\n\n{self.tests}\n"


def read_problems(path: Path, tasks: str | None = None) -> list[Problem]:
    """MBPP-format (text, test_list) or HumanEval-format (prompt, test, entry_point) problems from a
    JSONL file, gzip-compressed too (``HumanEval.jsonl.gz`` as distributed)."""
    wanted = parse_ranges(tasks) if tasks else None
    problems = []
    for line in read_lines(path):
        where = f"{path}:{line.number}"
        if line.error:
            raise AitkError(line.message(str(path)))
        try:
            obj = json.loads(line.text)
        except json.JSONDecodeError as e:
            raise AitkError(f"{where}: not a JSON line ({e})") from None
        problem = _problem(obj, where)
        if wanted is None or _task_number(problem.task_id) in wanted:
            problems.append(problem)
    return problems


def is_problem_file(path: Path) -> bool:
    """True when the first line of a JSONL file (or .jsonl.gz) looks like an MBPP or HumanEval problem."""
    if not has_suffix(path, PROBLEM_SUFFIXES):
        return False
    try:
        first = next(iter(read_lines(path)), None)
        obj = json.loads(first.text) if first is not None and first.text is not None else None
    except (InputError, json.JSONDecodeError):
        return False
    return isinstance(obj, dict) and ("test_list" in obj or "entry_point" in obj)


def _problem(obj: Any, where: str) -> Problem:
    if not isinstance(obj, dict):
        raise AitkError(f"{where}: expected a JSON object")
    if "test_list" in obj:
        text, tests = _field(obj, "text", str, where), _field(obj, "test_list", list, where)
        if not tests or not all(isinstance(t, str) for t in tests):
            raise AitkError(f"{where}: field test_list: expected a non-empty list of assert statements")
        prompt = f'"""\n{text.strip()}\n{tests[0]}\n"""\n'
        setup = obj.get("test_setup_code") or ""
        return Problem(str(obj.get("task_id", where)), prompt, setup + "\n" + "\n".join(tests), MBPP_STOP)
    if "entry_point" in obj:
        prompt, test = _field(obj, "prompt", str, where), _field(obj, "test", str, where)
        entry = _field(obj, "entry_point", str, where)
        return Problem(str(obj.get("task_id", where)), prompt, f"{test}\ncheck({entry})", HUMANEVAL_STOP)
    raise AitkError(f"{where}: expected an MBPP problem (text, test_list) or a HumanEval one (prompt, test, entry_point)")


def _field(obj: dict, name: str, kind: type, where: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        raise AitkError(f"{where}: field {name}: expected a {kind.__name__}")
    return value


def parse_ranges(text: str) -> set[int]:
    """``"11-510,600"`` -> the task numbers it names."""
    numbers: set[int] = set()
    try:
        for part in [p.strip() for p in text.split(",") if p.strip()]:
            low, _, high = part.partition("-")
            numbers.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise AitkError(f"--tasks {text!r}: expected task numbers and ranges like 11-510,600") from None
    return numbers


def _task_number(task_id: str) -> int | None:
    tail = task_id.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None
