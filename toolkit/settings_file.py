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


def load_yaml(text: str) -> Any:
    """YAML with 1.2 booleans: only true/false are booleans, so ``yes``, ``no``, ``on``, ``off``
    stay text (a column named ``no``, an intent named ``yes``), where YAML 1.1 makes them
    True/False. A true/false setting still takes them: settings parse ``yes`` as true."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    bool_tag = "tag:yaml.org,2002:bool"
    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != bool_tag]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    return yaml.load(text, Loader=Loader)
