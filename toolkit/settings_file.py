"""Training settings from a file (`train --config FILE`): JSON, YAML or TOML, chosen by the file's
extension; a file that does not parse is one error naming the file, line and column."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from applied_aitk.errors import AitkError

FORMATS = {".json": "JSON", ".yaml": "YAML", ".yml": "YAML", ".toml": "TOML"}


def read_settings(path: Path) -> dict[str, Any]:
    """The mapping of setting to value in ``path`` (.json, .yaml, .yml or .toml).

    Raises AitkError: no such file, another extension, a syntax error ("FILE:LINE:COLUMN: ..."),
    or a document that is not a mapping."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise AitkError(f"{path}: a settings file must end in {', '.join(FORMATS)} (its format follows the extension)")
    if not path.is_file():
        raise AitkError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise AitkError(f"{path}: not UTF-8 text (byte {e.start})") from None
    settings = _parse(kind, text, path)
    if not isinstance(settings, dict):
        raise AitkError(f"{path}: expected a mapping of setting to value, found {type(settings).__name__}")
    return settings


def _parse(kind: str, text: str, path: Path) -> Any:
    if kind == "JSON":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise AitkError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    if kind == "YAML":
        from ruamel.yaml.error import MarkedYAMLError, YAMLError

        try:
            return load_yaml(text)
        except MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise AitkError(f"{where}: invalid YAML: {e.problem or e.context}") from None
        except YAMLError as e:
            raise AitkError(f"{path}: invalid YAML: {e}") from None
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise AitkError(f"{_toml_where(path, e)}: invalid TOML: {str(e).split(' (at ')[0]}") from None


def _toml_where(path: Path, error: Exception) -> str:
    """"FILE:LINE:COLUMN" of a TOMLDecodeError: tomllib gives the position in its message ("(at line L, column C)")."""
    import re

    found = re.search(r"\(at line (\d+), column (\d+)\)", str(error))
    return f"{path}:{found[1]}:{found[2]}" if found else str(path)


def load_yaml(text: str, number_text: bool = False) -> Any:
    """YAML 1.2, as ruamel.yaml reads it (PyYAML follows YAML 1.1): only true/false are booleans,
    so ``yes``, ``no``, ``on``, ``off`` stay text (a column named ``no``, an intent named ``yes``; a
    true/false setting still parses ``yes`` as true); ``0123`` is 123 (1.1: octal 83), ``1:30``
    stays text (1.1: base 60, 90), and so does ``2024-03-14`` (no dates: a timestamp is read as its
    text); ``1_000`` is 1000 and ``0o17``, ``0x1F``, ``0b101`` are numbers, as in Python. A key
    given twice in a mapping is an error (1.1 readers kept the last). ``number_text``: a number is
    a YamlInt or YamlFloat that remembers its text as written (``str(value)``: ``1.50`` stays
    "1.50"), for places that take it as text (a chatbot example); else a plain int or float.

    Raises ruamel.yaml's YAMLError (a MarkedYAMLError names the line and column)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.Constructor = _constructor(number_text)
    return yaml.load(text)


@functools.cache
def _constructor(number_text: bool) -> type:
    """ruamel.yaml's safe constructor, timestamps read as text, numbers kept with their text when
    ``number_text`` (subclasses: ruamel's ``add_constructor`` changes the class it is called on)."""
    from ruamel.yaml.constructor import SafeConstructor

    class Constructor(SafeConstructor):
        pass

    Constructor.add_constructor("tag:yaml.org,2002:timestamp", SafeConstructor.construct_yaml_str)
    if number_text:
        Constructor.add_constructor("tag:yaml.org,2002:int", lambda c, node: _kept(YamlInt, c.construct_yaml_int(node), node))
        Constructor.add_constructor("tag:yaml.org,2002:float", lambda c, node: _kept(YamlFloat, c.construct_yaml_float(node), node))
    return Constructor


class YamlInt(int):
    """An integer read from YAML; ``str()`` gives its text as written."""

    text: str

    def __str__(self) -> str:
        return self.text


class YamlFloat(float):
    """A float read from YAML; ``str()`` gives its text as written."""

    text: str

    def __str__(self) -> str:
        return self.text


def _kept(kind: type, value: int | float, node: Any) -> int | float:
    """``value`` as a ``kind`` (YamlInt, YamlFloat) that keeps the scalar's text as written."""
    kept = kind(value)
    kept.text = node.value
    return kept
