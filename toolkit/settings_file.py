"""Training settings from a file (`train --config FILE`): JSON, YAML or TOML, chosen by the file's
extension; a file that does not parse is one error naming the file, line and column."""

from __future__ import annotations

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
        import yaml

        try:
            return load_yaml(text)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise AitkError(f"{where}: invalid YAML: {e.problem or e.context}") from None
        except yaml.YAMLError as e:
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
    """YAML read with YAML 1.2's core schema, where PyYAML follows YAML 1.1: only true/false are
    booleans, so ``yes``, ``no``, ``on``, ``off`` stay text (a column named ``no``, an intent named
    ``yes``; a true/false setting still parses ``yes`` as true); a number is decimal digits
    (``0123`` is 123), ``0o17``, ``0x1F`` or a float, so ``1:30`` (1.1's base 60: 90), ``1_000`` and
    ``2024-03-14`` (1.1: a date) stay text. ``number_text``: a number is a YamlInt or YamlFloat
    that remembers its text as written (``str(value)``: ``1.50`` stays "1.50"), for places that
    take it as text (a chatbot example); else a plain int or float."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    replaced = {BOOL_TAG, INT_TAG, FLOAT_TAG, "tag:yaml.org,2002:timestamp"}
    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in replaced]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    Loader.add_implicit_resolver(INT_TAG, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
    Loader.add_implicit_resolver(
        FLOAT_TAG, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."),
    )
    Loader.add_constructor(INT_TAG, lambda loader, node: _number(loader, node, YamlInt if number_text else None))
    Loader.add_constructor(FLOAT_TAG, lambda loader, node: _number(loader, node, YamlFloat if number_text else None))
    return yaml.load(text, Loader=Loader)


BOOL_TAG, INT_TAG, FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


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


def _number(loader: Any, node: Any, kind: type | None) -> int | float:
    """A YAML 1.2 int or float scalar (``kind`` YamlInt or YamlFloat: one that keeps its text; None: plain)."""
    text = loader.construct_scalar(node)
    if node.tag == INT_TAG:
        value: int | float = int(text, 0) if text.lstrip("+-")[:2] in ("0o", "0x") else int(text, 10)
    else:
        value = float(text.replace(".", "", 1) if text.lstrip("+-").lower() in (".inf", ".nan") else text)
    if kind is None:
        return value
    kept = kind(value)
    kept.text = text
    return kept
