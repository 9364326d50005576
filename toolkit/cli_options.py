"""The command-line options commands share, declared once: the core's commands and plugin commands
(`aitk codegen complete`, `aitk chatbot chat`, ...) take the same names, choices, help and checks.

    from applied_aitk.cli_options import AsJson, BundleArg, Device, QuantizeRun, Threads, examples, make_runtime

    @group.command("chat", cls=Command, epilog=examples("aitk chatbot chat bundle"))
    def chat(bundle: BundleArg, device: Device = "auto", threads: Threads = None,
             quantize: QuantizeRun = None, as_json: AsJson = False) -> None:
        runtime = make_runtime(device, threads, quantize)

Pass ``cls=Command`` to ``command()`` so that the usage line names arguments by their metavar
(``aitk wine predict [OPTIONS] BUNDLE INPUT...``). Choices are ``Literal`` types, so Click checks them (a usage error, exit 2) and completes their
values in the shell. A command with a bundle takes it as its first argument. Module level
imports stay light: every `aitk` call, `--help` included, imports this module."""

from __future__ import annotations

import enum
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperCommand

from applied_aitk.errors import AitkError

if TYPE_CHECKING:
    from applied_aitk.runtime import Runtime
    from applied_aitk.usecase import Option

DeviceName = Literal["auto", "cpu", "cuda"]
QuantizeName = Literal["int8", "fp16", "int4", "none"]

Device = Annotated[DeviceName, typer.Option(
    "--device", help="Where models run: auto (CUDA when it really starts, else the CPU), cpu, or cuda (exit 4 when CUDA cannot be used).")]
MAX_THREADS = 1024  # beyond any machine's cores; ONNX Runtime would start them all (100000: a hang; past 2**31: a TypeError)
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1, max=MAX_THREADS, metavar="N", help="CPU threads for ONNX Runtime (default: all cores).")]
ThreadsTrain = Annotated[Optional[int], typer.Option(
    "--threads", min=1, max=MAX_THREADS, metavar="N", help="CPU threads for torch and ONNX Runtime (default: all cores).")]
QuantizeVariant = enum.Enum("QuantizeVariant", {name: name for name in get_args(QuantizeName)}, type=str)  # a list option takes an Enum, not a Literal
QuantizeTrain = Annotated[Optional[list[QuantizeVariant]], typer.Option(
    "--quantize", metavar="<int8|fp16|int4|none>", help="Also write a reduced-precision model, checked against torch: int8 (for the CPU), fp16 (for CUDA) or int4 (weight-only, where the use case allows it); "
    "repeat for several (one export serves them all).")]
QuantizeRun = Annotated[Optional[QuantizeName], typer.Option(
    "--quantize", help="Run the bundle's int8 model (on the CPU), fp16 model (for CUDA) or int4 model instead of fp32; "
    "the fp32 model runs when the bundle has no such model.")]
BatchSize = Annotated[Optional[int], typer.Option(
    "--batch-size", min=1, metavar="N", help="Records per model call (default: the use case's).")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
BundleArg = Annotated[Path, typer.Argument(metavar="BUNDLE", help="A bundle directory (what `train` wrote).", show_default=False)]
BundleOut = Annotated[Path, typer.Option("--out", "-o", metavar="BUNDLE", help="The bundle directory to write.", show_default=False)]
Force = Annotated[bool, typer.Option("--force", help="Replace --out when a bundle is already there.")]
DataArg = Annotated[Path, typer.Argument(metavar="DATA", help="Labelled data: a file or a folder.", show_default=False)]
Report = Annotated[Optional[Path], typer.Option("--report", metavar="DIR", file_okay=False, help="Write plots and reports to this folder.")]


class Command(TyperCommand):
    """A command whose help names arguments by meaning: ``BUNDLE INPUT...`` in the usage line and in
    the Arguments section, not Typer's ``{BUNDLE}`` or ``<list[str]>``."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.display_name_raw
                name = name if param.nargs == 1 or name.endswith("...") else name + "..."
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: typer.Context, formatter) -> None:
        params = self.get_params(ctx)
        arguments = [(p.display_name_raw, p.help or "") for p in params if isinstance(p, TyperArgument) and not p.hidden]
        options = [record for p in params if not isinstance(p, TyperArgument) and (record := p.get_help_record(ctx))]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


PLAIN_HELP = {"rich_markup_mode": None}  # rich-formatted help costs ~0.4 s of imports on every --help


def make_runtime(device: str, threads: int | None, quantize: str | None) -> Runtime:
    """The Runtime the shared options describe (``quantize`` None or "none": the fp32 model)."""
    from applied_aitk.runtime import Runtime

    return Runtime(device=device, threads=threads, variant=None if quantize in (None, "none") else quantize)


def check_replaceable(out: Path, force: bool) -> None:
    """For ``--out BUNDLE``: refuse to write over an existing ``out`` unless ``force``, and never over
    something that is not a bundle (a folder of data, a file): ``--force`` replaces bundles only.

    Raises AitkError (exit 1) naming ``out``."""
    if not out.exists():
        return
    is_bundle = (out / "manifest.json").is_file()
    if not force:
        raise AitkError(f"--out {out}: {'a bundle' if is_bundle else 'something'} is already there; --force replaces a bundle")
    if not is_bundle and not (out.is_dir() and not any(out.iterdir())):
        raise AitkError(f"--out {out}: exists and is not a bundle (no manifest.json); not replacing it, even with --force")


def examples(*lines: str) -> str:
    """An "Examples" section for a command's help (its epilog), one command a line, kept as written."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def with_options(func, extra: list[Option]):
    """``func`` with its ``**options`` replaced by one ``--name`` option per extra Option (so that
    Typer sees them); bool options become ``--name/--no-name``, unset (None) by default."""
    signature = inspect.signature(func, eval_str=True)
    params = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    for option in extra:
        flag = "--" + option.name.replace("_", "-")
        if option.type is bool:  # unset (None) means the bundle's or the use case's own default
            flag = f"{flag}/--no-{flag[2:]}"
        metavar = None if option.type is bool or get_origin(option.type) is Literal else _METAVARS.get(option.type, "TEXT")
        check = {"callback": finite} if option.type is float else {}
        if option.folder:  # a file there is a usage error, not FileExistsError in every row
            metavar, check = "DIR", {"file_okay": False}
        check.update({bound: getattr(option, bound) for bound in ("min", "max") if getattr(option, bound) is not None})
        default = typer.Option(option.default, flag, help=option.help, metavar=metavar, **check)
        params.append(inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Optional[option.type]))
    func.__signature__ = signature.replace(parameters=params)
    return func


_METAVARS = {int: "N", float: "X", Path: "PATH", str: "TEXT"}


def finite(value: float | None) -> float | None:
    """A float option's callback: ``nan`` and ``inf``, which Click's FLOAT takes and its bounds let
    through, are a usage error (exit 2)."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def settings_help(config_class: type) -> str | None:
    """The training settings as a table (name, type, default, meaning) for `train --help`; a
    plugin's faulty Config shows no table rather than breaking the whole CLI."""
    from applied_aitk.settings import settings_table

    try:
        return settings_table(config_class)
    except Exception:
        return None


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """``--set key=value`` pairs as a dict; AitkError naming the pair when one has no ``=`` or no key."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AitkError(f"--set {pair!r}: expected key=value")
        settings[key.strip()] = value
    return settings
