"""`aitk`: the core commands, plus `aitk <usecase> sample|train|evaluate|predict` built from each UseCase.

Exit codes: 0 ok; 1 an error explained in one line; 2 a usage error (one line too); 3 a batch run
finished with failed records; 4 `--device cuda` and CUDA cannot be used. The shared options are
declared in toolkit/cli_options.py; logs and bars go through toolkit/console.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from typer._click.exceptions import ClickException as _UsageError  # Typer vendors Click (typer>=0.29)
from typer._click.exceptions import NoArgsIsHelpError as _NoArgs

from applied_aitk import __version__, console
from applied_aitk.cli_options import PLAIN_HELP, AsJson, BundleArg, Device, QuantizeRun, Threads, ThreadsTrain, Command, examples, finite, make_runtime
from applied_aitk.cli_usecase import usecase_group
from applied_aitk.display import print_mapping, print_metrics, print_table
from applied_aitk.errors import AitkError
from applied_aitk.extras import install_hint
from applied_aitk.usecase import UseCase

app = typer.Typer(
    name="aitk",
    help="Applied-AI use cases as plugins: train in PyTorch, predict with ONNX Runtime.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    **PLAIN_HELP,
)
bundle_app = typer.Typer(help="Inspect model bundles.", no_args_is_help=True, epilog=examples(
    "aitk bundle info bundle", "aitk bundle info bundle --card"), **PLAIN_HELP)
plugin_app = typer.Typer(help="Write plugins.", no_args_is_help=True, epilog=examples("aitk plugin new churn"), **PLAIN_HELP)
app.add_typer(bundle_app, name="bundle")
app.add_typer(plugin_app, name="plugin")
debug = os.environ.get("AITK_DEBUG") == "1"
logger = console.get_logger(__name__)


def _version(value: bool) -> None:
    if value:
        print(f"aitk {__version__}")
        raise typer.Exit()


@app.callback(epilog="The logging options work anywhere on the command line, before or after the command.\n\n" + examples(
    "aitk plugins", "aitk demo --only fraud", "aitk fraud train data/train.csv --out bundle --quiet", "aitk fraud predict --help"))
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
    debug_: Annotated[bool, typer.Option("--debug", help="Debug logs, and tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No logs or progress bars on stderr (errors still show).")] = False,
    log_file: Annotated[Optional[Path], typer.Option("--log-file", metavar="FILE", help="Also append the logs, with timestamps, to FILE.")] = None,
    log_timestamps: Annotated[bool, typer.Option("--log-timestamps", help="Start each log line on stderr with the time.")] = False,
) -> None:
    """(The options are read by ``main`` before Click parses the line, so they work anywhere in it.)"""


GLOBAL_FLAGS = {"--quiet": "quiet", "-q": "quiet", "--debug": "debug", "--log-timestamps": "timestamps"}


def split_global_options(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``argv`` without the logging options, and those options' values; they may come anywhere
    before a ``--`` (so ``aitk fraud train ... --quiet`` works as well as ``aitk --quiet fraud ...``)."""
    rest, found, i = [], {"quiet": False, "debug": False, "timestamps": False, "log_file": None}, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg in GLOBAL_FLAGS:
            found[GLOBAL_FLAGS[arg]] = True
        elif arg == "--log-file":
            if i + 1 >= len(argv):
                raise _UsageError("--log-file: expected a file name after it")
            found["log_file"], i = Path(argv[i + 1]), i + 1
        elif arg.startswith("--log-file="):
            found["log_file"] = Path(arg.partition("=")[2])
        else:
            rest.append(arg)
        i += 1
    return rest, found


@app.command("plugins", cls=Command, epilog=examples("aitk plugins", "aitk plugins --json"))
def plugins_command(as_json: AsJson = False) -> None:
    """Installed plugins: name, version, distribution, use cases, load errors."""
    from applied_aitk.plugins import plugin_info

    rows = plugin_info()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print_table([{**r, "usecases": ", ".join(r["usecases"]), "error": r["error"] or ""} for r in rows])


@app.command(cls=Command, epilog=examples("aitk doctor", "aitk doctor --json"))
def doctor(as_json: AsJson = False) -> None:
    """Versions, ONNX Runtime providers (available and usable), GPU, threads."""
    from applied_aitk.doctor import report

    info = report()
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print_mapping(info)


@app.command(cls=Command, epilog=examples("aitk demo", "aitk demo --only forecast --only fraud --out /tmp/demo"))
def demo(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", file_okay=False, help="Where the demo writes its data, bundles and predictions.")] = Path("aitk-demo"),
    only: Annotated[Optional[list[str]], typer.Option("--only", metavar="USECASE", help="Run only this use case (repeatable).")] = None,
    device: Device = "auto",
    threads: ThreadsTrain = None,
    as_json: AsJson = False,
) -> None:
    """Every installed use case end to end on its sample data: sample, train, evaluate, predict."""
    from applied_aitk.demo import run_demo

    rows = run_demo(_usecases(), out, only or [], make_runtime(device, threads, None))
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print_table([{k: v for k, v in row.items() if k != "report"} for row in rows])
        for row in rows:
            if row.get("report"):
                print(f"{row['usecase']} report: {row['report']}")
    if any(row["status"] != "ok" for row in rows):
        raise typer.Exit(1)


@app.command(cls=Command, epilog=examples(
    "aitk serve fraud-bundle", "aitk serve bot=chatbot-bundle fraud=fraud-bundle --host 0.0.0.0 --port 8080 --api-key KEY",
    "aitk serve fraud-bundle --workers 2", "aitk serve fraud-bundle --engine ray --replicas 2"))
def serve(
    bundles: Annotated[list[str], typer.Argument(metavar="BUNDLE...", help="Bundle directories to serve, each BUNDLE or NAME=BUNDLE (NAME: its use case's).", show_default=False)],
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, metavar="N", help="TCP port.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option("--api-key", metavar="KEY", envvar="AITK_API_KEY", help="Require this key (Authorization: Bearer KEY or X-API-Key); default: $AITK_API_KEY, else none.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, metavar="N", help="Largest dynamic batch (default: the use case's).")] = None,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0, callback=finite, metavar="MS", help="How long a batch waits for requests still arriving.")] = 2.0,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, metavar="N", help="Records one model holds at once; more get 503 with Retry-After.")] = 4096,
    max_records: Annotated[int, typer.Option("--max-records", min=1, metavar="N", help="Records per request (more: 413).")] = 1024,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0, callback=finite, metavar="MB", help="Request body size limit in MiB (more: 413).")] = 16.0,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, callback=finite, metavar="SECONDS", help="Seconds per request (more: 504); also the drain time on SIGTERM.")] = 30.0,
    session_ttl: Annotated[float, typer.Option("--session-ttl", min=1, callback=finite, metavar="SECONDS", help="Seconds of inactivity after which server-side state (a conversation) is dropped.")] = 1800.0,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request on stderr.")] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, metavar="N", help="Server processes on the one port, each loading the bundles and batching its own requests (about one per core; see the README).")] = 1,
    engine: Annotated[Literal["local", "ray"], typer.Option("--engine", help="local (uvicorn in this process), or ray: Ray Serve replicas (needs applied-aitk[ray]).")] = "local",
    replicas: Annotated[Optional[int], typer.Option("--replicas", min=1, metavar="N", help="--engine ray: copies of the app (default: one per GPU, else 1).")] = None,
    address: Annotated[Optional[str], typer.Option("--address", metavar="ADDRESS", help="--engine ray: a running Ray cluster (default: start one here).")] = None,
    device: Device = "auto",
    threads: Threads = None,
    quantize: QuantizeRun = None,
) -> None:
    """Serve bundles over HTTP: POST /v1/NAME/predict with dynamic batching, the use cases' own endpoints, /docs, /metrics."""
    from applied_aitk.serve import Limits, serve_here

    limits = Limits(max_body_bytes=int(max_body_mb * 1024 * 1024), max_records=max_records, max_queue=max_queue,
                    timeout_s=timeout, max_wait_ms=max_wait_ms, session_ttl_s=session_ttl)
    if engine == "ray":
        from applied_aitk.serve.on_ray import serve_on_ray

        if workers > 1:
            raise typer.BadParameter("--workers is for the local engine; on Ray, --replicas", param_hint="'--workers'")
        return serve_on_ray(bundles, make_runtime(device, threads, quantize), limits, api_key, batch_size, host, port, replicas, address)
    if replicas is not None or address is not None:
        raise typer.BadParameter("--replicas and --address go with --engine ray", param_hint="'--engine'")
    serve_here(bundles, make_runtime(device, threads, quantize), limits, api_key, batch_size, host, port, workers, access_log)


@bundle_app.command("info", cls=Command, epilog=examples("aitk bundle info bundle", "aitk bundle info bundle --card", "aitk bundle info bundle --json"))
def bundle_info(
    bundle: BundleArg,
    card: Annotated[bool, typer.Option("--card", help="Print the bundle's model card (its README.md) instead.")] = False,
    as_json: AsJson = False,
) -> None:
    """What a bundle is, what it was trained on and how, its metrics; verifies its checksums."""
    from applied_aitk.bundle import load_bundle
    from applied_aitk.card import card_text, summary

    if card and as_json:
        raise typer.BadParameter("--card prints the Markdown model card: it cannot go with --json", param_hint="'--card'")
    loaded = load_bundle(bundle)
    if card:
        print(card_text(loaded), end="")
    elif as_json:  # NaN (in a bundle written before manifests had none) as null
        print_metrics(loaded.manifest, as_json=True)
    else:
        print_mapping(summary(loaded))


@plugin_app.command("new", cls=Command, epilog=examples("aitk plugin new churn", "aitk plugin new churn --out ~/src"))
def plugin_new(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The use case name (a Python identifier, e.g. churn).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", file_okay=False, help="Parent folder (default: current).")] = None,
) -> None:
    """Write a pip-installable plugin package `aitk-NAME` with a working tabular use case and a test."""
    from applied_aitk.plugins import name_taken
    from applied_aitk.scaffold import new_plugin

    taken = name_taken(app, name)
    if taken is not None:  # the package would install and never load
        raise AitkError(f"plugin name {name!r}: {taken}; choose another")
    path = new_plugin(name, out or Path.cwd())
    print(path)
    logger.info(f"next: pip install -e '{path}[train]' && aitk {name} sample {name}-data && pytest {path}")


def add_usecase_commands(usecase: UseCase) -> None:
    """`aitk NAME sample|train|evaluate|predict` for one use case, plus its own commands."""
    app.add_typer(usecase_group(usecase), name=usecase.name)


def _usecases() -> dict[str, UseCase]:
    from applied_aitk.plugins import get_usecases

    return get_usecases()


def main() -> None:
    """The `aitk` command: logging options from anywhere on the line, plugins' commands, one-line errors."""
    global debug
    try:
        argv, flags = split_global_options(sys.argv[1:])
    except _UsageError as e:
        _fail(f"error: {e}", 2)
    debug = debug or flags["debug"]
    try:
        console.setup(flags["quiet"], debug, flags["log_file"], flags["timestamps"])
    except OSError as e:
        _fail(f"error: --log-file {flags['log_file']}: {e.strerror}", 2)
    try:
        from applied_aitk.plugins import add_plugin_commands

        add_plugin_commands(app, _usecases(), add_usecase_commands)
        code = app(args=argv, prog_name="aitk", standalone_mode=False)
    except _NoArgs as e:  # `aitk` or `aitk fraud` alone: the help, on stderr, exit 2
        e.show()
        sys.exit(e.exit_code)
    except _UsageError as e:
        _fail(f"error: {_usage_message(e)}", e.exit_code)
    except AitkError as e:
        if debug:
            raise
        _fail(f"error: {e}", e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        _fail("interrupted", 130)
    except Exception as e:
        if debug:
            raise
        hint = install_hint(e) if isinstance(e, ModuleNotFoundError) else None
        _fail(f"error: {hint}" if hint else f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", 1)
    if code == 130:  # typer turns Ctrl-C inside a command into this exit code, silently
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


BOUNDS = {"greater_than_equal": ("ge", "of at least"), "less_than_equal": ("le", "of at most"),
          "greater_than": ("gt", "greater than"), "less_than": ("lt", "less than")}


def _usage_message(error: Exception) -> str:
    """Click's message for a usage error on one line, without pydantic's "Value error, " and with
    "expected an integer" for a number that is not one; the usage block Click adds is left out.
    A number outside an option's range says so in the toolkit's words: ``Invalid value for
    '--replicas': expected an integer of at least 1, got 0``."""
    bound = _bound_message(error.__cause__)
    param = getattr(error, "param", None)
    if bound is not None and param is not None and getattr(param, "opts", None):
        return f"Invalid value for {max(param.opts, key=len)!r}: {bound}"
    message = error.format_message() if hasattr(error, "format_message") else str(error)
    message = message.replace("Value error, ", "").replace("\n", " ")
    return message.replace("Input should be a valid integer, unable to parse string as an integer", "expected an integer")


def _bound_message(cause: BaseException | None) -> str | None:
    """"expected an integer of at least 1, got 0" for pydantic's range error on an option (Typer
    checks ``min=``/``max=`` through pydantic); None for any other error."""
    errors = getattr(cause, "errors", None)
    try:
        (found,) = errors() if callable(errors) else ()
    except (TypeError, ValueError):
        return None
    key, words = BOUNDS.get(found.get("type"), (None, None))
    if key is None or key not in (found.get("ctx") or {}):
        return None
    bound = found["ctx"][key]
    kind, shown = ("an integer", str(bound)) if isinstance(bound, int) else ("a number", f"{bound:g}")
    return f"expected {kind} {words} {shown}, got {found.get('input')}"
