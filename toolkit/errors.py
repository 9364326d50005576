"""Errors a user sees as one line; each carries its exit code (README: Commands, exit codes)."""


class AitkError(Exception):
    """A failure explained in one line; exits 1."""

    exit_code = 1


class InputError(AitkError):
    """One input (a file, a row, a field) is not what was expected."""


class DeviceError(AitkError):
    """`--device cuda` was asked for and CUDA cannot be used; exits 4."""

    exit_code = 4


class ParityError(AitkError):
    """The ONNX export does not reproduce the torch model."""


def shown(value: object, quote: bool = True) -> str:
    """``value`` as an error message echoes it: text as its ``repr`` when ``quote``, anything else
    (a number) as ``str``; over 24 characters, the first 20, ``…`` and the length, so that a
    100,000-digit cell gives a short line."""
    text = value if isinstance(value, str) else str(value)
    quote = quote and isinstance(value, str)
    if len(text) > 24:
        cut = text[:20] + "…"
        return f"{cut!r} ({len(text)} characters)" if quote else f"{cut} ({len(text)} characters)"
    return repr(text) if quote else text


def unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (it holds a lone surrogate: JSON ``"\\ud800"``, or bytes that
    were not UTF-8 kept as surrogates), None if it is; the same words in batch `predict` and `aitk serve`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"not valid Unicode (lone surrogate at character {e.start})"
    return None


def check_unicode(text: str, where: str) -> str:
    """``text`` itself; InputError ``WHERE: not valid Unicode (...)`` if it holds a lone surrogate."""
    problem = unicode_problem(text)
    if problem is not None:
        raise InputError(f"{where}: {problem}")
    return text
