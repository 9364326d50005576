"""Typed training settings: a use case's ``Config`` is a dataclass whose fields are declared with
``setting(default, help, ge=..., le=...)``.

A field's type annotation is its type (``int``, ``float``, ``bool``, ``str``, ``list[int]``,
``Literal["lstm", "gru"]``, ``float | None``...), ``help`` its meaning (shown by `train --help`), and
``ge``/``gt``/``le``/``lt`` its bounds (for a list, each item's). The core builds a Config from
``--set key=value`` (text) and ``--config FILE`` (JSON, YAML or TOML) before any data is read:
pydantic v2 converts and checks the types (imported only then, so that `aitk --help` stays fast),
and a bad setting is explained in one line naming the setting, the value and what was expected.
A list setting takes ``2,3`` or ``[2,3]`` on the command line and a list or a comma-separated
string in a file. A class attribute ``deprecated_names: ClassVar[dict]`` maps old names to new
ones (or to ``(new, convert)`` when the unit changed too): an old name still works, with a
one-line warning."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import shutil
import textwrap
import types
import typing
from typing import Any, Literal

from applied_aitk.console import get_logger
from applied_aitk.errors import AitkError

logger = get_logger(__name__)

_KEY = "aitk_setting"


def setting(default: Any, help: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """A Config field: its default, its meaning, and optional bounds (each item's, for a list)."""
    bounds = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt}.items() if v is not None}
    metadata = {_KEY: {"help": help, **bounds}}  # one key of ours: pydantic reads some metadata keys itself
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def build_settings(config_class: type, values: dict[str, Any]) -> Any:
    """``config_class`` from ``{"name": value}``; values given as text (``--set``) are converted to
    the field's type. Raises AitkError (one line) for an unknown name or a bad value."""
    from pydantic import TypeAdapter, ValidationError

    hints = _hints(config_class)
    deprecated = getattr(config_class, "deprecated_names", {})
    given = _rename_deprecated(deprecated, values)
    for key in given:
        if key not in hints:
            raise AitkError(_unknown(key, list(hints), deprecated))
    given = {key: _from_text(hints[key], value) if isinstance(value, str) else value for key, value in given.items()}
    try:
        config = TypeAdapter(config_class).validate_python(given)
    except ValidationError as e:
        raise AitkError(_one_line(e.errors()[0], given, hints)) from None
    _check_bounds(config, given)
    return config


def _hints(config_class: type) -> dict[str, Any]:
    """Each field's type, resolved (``from __future__ import annotations`` leaves them as text)."""
    if not dataclasses.is_dataclass(config_class):
        raise AitkError(f"{config_class.__name__}: a use case's Config must be a dataclass")
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class)}


def _check_bounds(config: Any, given: dict[str, Any]) -> None:
    """AitkError for a value outside its setting's bounds, or a float that is not finite (``nan``,
    ``inf``: NaN passed every bound, inf a lower one)."""
    import math

    checks = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b), "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in items):
            raise AitkError(f"setting {f.name}={_show(given.get(f.name, value))}: expected {'finite numbers' if items is value else 'a finite number'}")
        for key, (op, ok) in checks.items():
            bound = f.metadata.get(_KEY, {}).get(key)
            if bound is not None and any(v is not None and not ok(v, bound) for v in items):
                raise AitkError(f"setting {f.name}={_show(given.get(f.name, value))}: expected {'values' if items is value else 'a value'} {op} {bound}")


def _rename_deprecated(deprecated: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Old names to new ones; an entry ``old: (new, convert)`` also converts the value (a unit change)."""
    renamed: dict[str, Any] = {}
    for key, value in values.items():
        if key not in deprecated:
            renamed[key] = value
            continue
        new, convert = _new_name(deprecated[key]), deprecated[key][1] if isinstance(deprecated[key], tuple) else None
        if new in values:
            raise AitkError(f"settings {key!r} and {new!r} both given; {key!r} is the deprecated name of {new!r}")
        logger.warning(f"setting {key!r} is deprecated, use {new!r}; the old name will be removed in the next version")
        try:
            renamed[new] = convert(value) if convert else value
        except (TypeError, ValueError):
            raise AitkError(f"setting {key}={_show(value)}: expected a number") from None
    return renamed


def _new_name(target: str | tuple[str, Any]) -> str:
    return target if isinstance(target, str) else target[0]


def _unknown(key: str, known: list[str], deprecated: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, known + list(deprecated), n=1, cutoff=0.6)
    hint = f"; did you mean {_new_name(deprecated.get(close[0], close[0]))!r}?" if close else f"; known settings: {', '.join(known)}"
    return f"unknown setting {key!r}{hint}"


def _from_text(annotation: Any, text: str) -> Any:
    """A ``--set`` value (always text) as the field's type where pydantic would not convert it:
    lists (``2,3`` or JSON ``[2,3]``) and ``none`` for an optional setting. The rest pydantic
    converts itself (``"3"`` -> 3, ``"true"`` -> True) or refuses."""
    args = _optional_args(annotation)
    if args is not None:
        if text.strip().lower() in ("", "none", "null"):
            return None
        annotation = args
    if typing.get_origin(annotation) in (list, tuple):
        if text.strip().startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                return text  # pydantic then says a list was expected
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _optional_args(annotation: Any) -> Any:
    """``X`` for ``X | None`` (``Optional[X]``), else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)) and len(args) == 1:
            return args[0]
    return None


_EXPECTED = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
    "bool_type": "true or false", "string_type": "text", "list_type": "a list",
}


def _one_line(error: dict[str, Any], given: dict[str, Any], hints: dict[str, Any]) -> str:
    """A pydantic error as ``setting NAME=VALUE: expected WHAT``."""
    loc = error["loc"]
    name = str(loc[0]) if loc else ""
    if name not in hints:  # a ValueError from the Config's __post_init__ (settings checked together)
        return error["msg"].removeprefix("Value error, ")
    kind = error["type"]
    if kind in _EXPECTED:
        expected = "expected " + _EXPECTED[kind]
    elif kind == "literal_error":
        expected = "expected one of " + ", ".join(str(c) for c in _choices(hints[name]))
    else:
        expected = error["msg"].removeprefix("Value error, ")
    where = f" (item {loc[1] + 1})" if len(loc) > 1 and isinstance(loc[1], int) else ""
    return f"setting {name}={_show(given.get(name, error.get('input')))}: {expected}{where}"


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)


def _choices(annotation: Any) -> list[Any]:
    inner = _optional_args(annotation) or annotation
    if typing.get_origin(inner) in (list, tuple):
        inner = typing.get_args(inner)[0]
    return list(typing.get_args(inner)) if typing.get_origin(inner) is Literal else []


def type_name(annotation: Any) -> str:
    """A setting's type in words, for `train --help`: integer, number, true/false, text, list of
    integers, lstm|gru, ... or none."""
    inner = _optional_args(annotation)
    if inner is not None:
        return f"{type_name(inner)} or none"
    if typing.get_origin(annotation) is Literal:
        return "|".join(str(c) if c != "" else '""' for c in typing.get_args(annotation))
    if typing.get_origin(annotation) in (list, tuple):
        item = type_name(typing.get_args(annotation)[0])
        return f"list of {item}s" if "|" not in item else f"list of {item}"
    names = {int: "integer", float: "number", bool: "true/false", str: "text"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def settings_table(config_class: type, width: int | None = None) -> str:
    """The settings as a plain-text table (name, type, default, meaning) for `train --help`.

    The table is one paragraph that Click prints as is (the ``\\b`` marker stops re-wrapping)."""
    width = width or min(shutil.get_terminal_size((100, 20)).columns, 120)
    renamed = {_new_name(new): old for old, new in getattr(config_class, "deprecated_names", {}).items()}
    hints = _hints(config_class)
    rows = []
    for f in dataclasses.fields(config_class):
        info = f.metadata.get(_KEY, {})
        bounds = " ".join(f"{op} {info[key]}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if key in info)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        meaning = " ".join(info.get("help", "").split())
        if f.name in renamed:
            meaning = f"{meaning} (formerly {renamed[f.name]})".strip()
        rows.append((f.name, " ".join(filter(None, [type_name(hints[f.name]), bounds])), json.dumps(default, default=str), meaning))
    header = ("setting", "type", "default", "meaning")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(3)]
    indent = sum(widths) + 3 * 2 + 2
    lines = ["\b", "Settings (--set name=value, repeatable; or --config FILE in JSON, YAML or TOML):"]
    for row in [header, *rows]:
        left = "  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  "
        wrapped = textwrap.wrap(row[3], max(30, width - indent)) or [""]
        lines.append((left + wrapped[0]).rstrip())
        lines.extend(" " * indent + more for more in wrapped[1:])
    return "\n".join(lines)
