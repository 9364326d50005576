"""`aitk`: the core commands, plus `aitk <usecase> sample|train|evaluate|predict` built from each UseCase.

Exit codes: 0 ok; 1 an error explained in one line; 2 usage (Click's); 3 a batch run finished
with failed records; 4 `--device cuda` and CUDA cannot be used."""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from toolkit import __version__, console
from toolkit.errors import AitkError
from toolkit.usecase import Option, UseCase

PLAIN_HELP = {"rich_markup_mode": None}  # rich-formatted help costs ~0.4 s of imports on every --help
app = typer.Typer(
    name="aitk",
    help="Applied-AI use cases as plugins: train in PyTorch, predict with ONNX Runtime.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    **PLAIN_HELP,
)
bundle_app = typer.Typer(help="Inspect model bundles.", no_args_is_help=True, **PLAIN_HELP)
plugin_app = typer.Typer(help="Write plugins.", no_args_is_help=True, **PLAIN_HELP)
app.add_typer(bundle_app, name="bundle")
app.add_typer(plugin_app, name="plugin")
debug = os.environ.get("AITK_DEBUG") == "1"

Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda (exit 4 when cuda cannot be used).")]
Threads = Annotated[Optional[int], typer.Option("--threads", help="Threads for ONNX Runtime, and for torch when training (default: all cores).")]
Quantize = Annotated[Optional[str], typer.Option("--quantize", help="int8 (CPU) or fp16 (GPU): write (train) or run (evaluate, predict) that model.")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def _version(value: bool) -> None:
    if value:
        print(f"aitk {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
    debug_: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No logs or progress bars on stderr.")] = False,
) -> None:
    global debug
    debug = debug or debug_
    console.quiet = quiet


@app.command("plugins")
def plugins_command(as_json: AsJson = False) -> None:
    """Installed plugins: name, version, distribution, use cases, load errors."""
    from toolkit.plugins import plugin_info

    rows = plugin_info()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print_table([{**r, "usecases": ", ".join(r["usecases"]), "error": r["error"] or ""} for r in rows])


@app.command()
def doctor(as_json: AsJson = False) -> None:
    """Versions, ONNX Runtime providers (available and usable), GPU, threads."""
    from toolkit.doctor import report

    info = report()
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print_mapping(info)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Where the demo writes its data, bundles and predictions.")] = Path("aitk-demo"),
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only this use case (repeatable).")] = None,
    device: Device = "auto",
    threads: Threads = None,
    as_json: AsJson = False,
) -> None:
    """Every installed use case end to end on its sample data: sample, train, evaluate, predict."""
    from toolkit.demo import run_demo

    rows = run_demo(_usecases(), out, only or [], _runtime(device, threads, None))
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print_table([{k: v for k, v in row.items() if k != "report"} for row in rows])
        for row in rows:
            if row.get("report"):
                print(f"{row['usecase']} report: {row['report']}")
    if any(row["status"] != "ok" for row in rows):
        raise typer.Exit(1)


@app.command()
def serve(
    bundles: Annotated[list[str], typer.Argument(help="Bundle directories to serve, each BUNDLE or NAME=BUNDLE (NAME: its use case's).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="AITK_API_KEY", help="Require this key (Authorization: Bearer KEY or X-API-Key); default: $AITK_API_KEY, else none.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Largest dynamic batch (default: the use case's).")] = None,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0, help="How long a batch waits for requests still arriving.")] = 2.0,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, help="Records one model holds at once; more get 503 with Retry-After.")] = 4096,
    max_records: Annotated[int, typer.Option("--max-records", min=1, help="Records per request (more: 413).")] = 1024,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0, help="Request body size limit in MiB (more: 413).")] = 16.0,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Seconds per request (more: 504); also the drain time on SIGTERM.")] = 30.0,
    session_ttl: Annotated[float, typer.Option("--session-ttl", min=1, help="Seconds of inactivity after which server-side state (a conversation) is dropped.")] = 1800.0,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request on stderr.")] = False,
    device: Device = "auto",
    threads: Threads = None,
    quantize: Quantize = None,
) -> None:
    """Serve bundles over HTTP: POST /v1/NAME/predict with dynamic batching, the use cases' own endpoints, /docs, /metrics."""
    from toolkit.serve import Limits, build_app, run

    limits = Limits(max_body_bytes=int(max_body_mb * 1024 * 1024), max_records=max_records, max_queue=max_queue,
                    timeout_s=timeout, max_wait_ms=max_wait_ms, session_ttl_s=session_ttl)
    server = build_app(bundles, _runtime(device, threads, quantize), limits, api_key, batch_size)
    console.log(f"serving {', '.join(bundles)} on http://{host}:{port} (docs: /docs){'; API key required' if api_key else ''}")
    run(server, host, port, limits, access_log)


@bundle_app.command("info")
def bundle_info(bundle: Annotated[Path, typer.Argument(help="A bundle directory.")], as_json: AsJson = False) -> None:
    """What a bundle is, how it was trained, its metrics; verifies its checksums."""
    from toolkit.bundle import load_bundle

    loaded = load_bundle(bundle)
    if as_json:
        print(json.dumps(loaded.manifest, indent=2))
        return
    manifest = loaded.manifest
    sizes = {name: (bundle / name).stat().st_size for name in manifest["files"]}
    print_mapping({
        "bundle": str(bundle),
        "usecase": manifest["usecase"],
        "created": manifest["created"],
        "plugin_version": manifest["plugin_version"],
        "checksums": f"{len(sizes)} files verified",
        "files": {name: f"{size / 1e6:.2f} MB" for name, size in sizes.items()},
        "config": manifest.get("config", {}),
        "metrics": manifest.get("metrics", {}),
        "model": manifest.get("model", {}),
    })


@plugin_app.command("new")
def plugin_new(
    name: Annotated[str, typer.Argument(help="The use case name (a Python identifier, e.g. churn).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Parent folder (default: current).")] = None,
) -> None:
    """Write a pip-installable plugin package `aitk-NAME` with a working tabular use case and a test."""
    from toolkit.scaffold import new_plugin

    path = new_plugin(name, out or Path.cwd())
    print(path)
    console.log(f"next: pip install -e {path} && aitk {name} sample {name}-data && pytest {path}")


def add_usecase_commands(usecase: UseCase) -> None:
    """`aitk NAME sample|train|evaluate|predict` for one use case, plus its own commands."""
    group = typer.Typer(help=usecase.summary, no_args_is_help=True, **PLAIN_HELP)
    name = usecase.name

    @group.command("sample")
    def sample(out: Annotated[Path, typer.Argument(help="Folder to write the sample data to.")]) -> None:
        """Write real sample data to start from."""
        written = usecase.sample(out)
        print_mapping({"train": str(written.train), "evaluate": str(written.evaluate), "predict": [str(p) for p in written.predict]})

    def train(
        data: Annotated[Path, typer.Argument(help="Training data (file or folder).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="The bundle directory to write.")],
        config: Annotated[Optional[Path], typer.Option("--config", help="Training settings file (JSON, YAML or TOML).")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="A training setting key=value (repeatable).")] = None,
        device: Device = "auto",
        threads: Threads = None,
        quantize: Quantize = None,
        as_json: AsJson = False,
        **options: Any,
    ) -> None:
        if not usecase.train_data_spec:
            _require_exists(data)
        settings = read_settings(config) if config else {}
        settings.update(parse_settings(set_ or []))
        settings.update({k: v for k, v in options.items() if v is not None})
        runtime = _runtime(device, threads, quantize)
        started = time.perf_counter()
        bundle = usecase.train(data, out, usecase.config_from(settings), runtime)
        console.log(f"bundle written to {bundle.path} in {time.perf_counter() - started:.1f} s")
        print_metrics(bundle.metrics, as_json)

    def evaluate(
        bundle: Annotated[Path, typer.Argument(help="A bundle directory.")],
        data: Annotated[Path, typer.Argument(help="Labelled data (file or folder).")],
        report: Annotated[Optional[Path], typer.Option("--report", help="Folder for plots and reports.")] = None,
        device: Device = "auto",
        threads: Threads = None,
        quantize: Quantize = None,
        as_json: AsJson = False,
        **options: Any,
    ) -> None:
        from toolkit.bundle import load_bundle

        _require_exists(data)
        loaded = load_bundle(bundle, usecase=name)
        metrics = usecase.evaluate(loaded, data, _runtime(device, threads, quantize), report=report, **options)
        if report is not None:
            from toolkit.report import finish

            finish(report, f"aitk {name} evaluate {data}", metrics, loaded)
        print_metrics(metrics, as_json)

    def predict(
        bundle: Annotated[Path, typer.Argument(help="A bundle directory.")],
        inputs: Annotated[list[str], typer.Argument(help="Files, folders, globs, or - for stdin.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .jsonl, .csv or .parquet.")],
        resume: Annotated[bool, typer.Option("--resume", help="Keep rows already in --out and skip their records.")] = False,
        batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Records per model call (default: the use case's).")] = None,
        device: Device = "auto",
        threads: Threads = None,
        quantize: Quantize = None,
        engine: Annotated[str, typer.Option("--engine", help="local, or ray: Ray Data on a cluster (needs aitk[ray]).")] = "local",
        address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address (default: start a local one).")] = None,
        actors: Annotated[Optional[int], typer.Option("--actors", min=1, help="Ray predictor actors (default: one per GPU, else cores/2).")] = None,
        as_json: AsJson = False,
        **options: Any,
    ) -> None:
        from toolkit.batch import expand_inputs, print_summary, run_batch
        from toolkit.bundle import load_bundle

        if engine not in ("local", "ray"):
            raise AitkError(f"--engine {engine!r}: expected local or ray")
        loaded = load_bundle(bundle, usecase=name)
        paths = expand_inputs(inputs, usecase.input_suffixes)
        runtime = _runtime(device, threads, quantize)
        batch_size = batch_size or usecase.batch_size
        if engine == "ray":
            from toolkit.ray_engine import run_batch_ray

            runtime.provider()  # --device cuda without CUDA fails here, before a cluster starts
            summary = run_batch_ray(name, bundle, runtime, options, paths, out, batch_size, resume, address, actors)
        else:
            summary = run_batch(usecase.load(loaded, runtime, **options), paths, out, batch_size=batch_size, resume=resume)
        if as_json:
            print(json.dumps(summary, indent=2))
        else:
            print_summary(summary)
        if summary["failed_in_output"]:
            raise typer.Exit(3)

    train.__doc__ = "Train, export to ONNX, check parity against torch, write the bundle."
    evaluate.__doc__ = "Metrics of a bundle on labelled data."
    predict.__doc__ = "Batch inference over files; a bad record becomes an error row (exit 3)."
    for command in (train, evaluate, predict):
        epilog = settings_help(usecase.Config) if command is train else None
        group.command(command.__name__, epilog=epilog)(_with_options(command, usecase.options.get(command.__name__, [])))
    usecase.commands(group)
    app.add_typer(group, name=name)


def settings_help(config_class: type) -> str | None:
    """The training settings as a table (name, type, default, meaning) for `train --help`; a
    plugin's faulty Config shows no table rather than breaking the whole CLI."""
    from toolkit.settings import settings_table

    try:
        return settings_table(config_class)
    except Exception:
        return None


def _with_options(func, extra: list[Option]):
    """``func`` with its ``**options`` replaced by one ``--name`` option per extra Option."""
    signature = inspect.signature(func, eval_str=True)
    params = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    for option in extra:
        flag = "--" + option.name.replace("_", "-")
        if option.type is bool:  # unset (None) means the bundle's or the use case's own default
            flag = f"{flag}/--no-{flag[2:]}"
        default = typer.Option(option.default, flag, help=option.help)
        params.append(inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Optional[option.type]))
    func.__signature__ = signature.replace(parameters=params)
    return func


def read_settings(path: Path) -> dict[str, Any]:
    """Training settings from a JSON, YAML or TOML file (a flat mapping of setting to value)."""
    _require_exists(path)
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            settings = yaml.safe_load(text)
        elif path.suffix == ".toml":
            import tomllib

            settings = tomllib.loads(text)
        else:
            settings = json.loads(text)
    except Exception as e:
        raise AitkError(f"{path}: cannot parse settings ({e})") from None
    if not isinstance(settings, dict):
        raise AitkError(f"{path}: expected a mapping of setting to value")
    return settings


def parse_settings(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AitkError(f"--set {pair!r}: expected key=value")
        settings[key.strip()] = value
    return settings


def _runtime(device: str, threads: int | None, quantize: str | None):
    from toolkit.runtime import Runtime

    if quantize not in (None, "int8", "fp16", "none"):
        raise AitkError(f"--quantize {quantize!r}: expected int8, fp16 or none")
    return Runtime(device=device, threads=threads, int8=quantize == "int8", fp16=quantize == "fp16")


def _require_exists(path: Path) -> None:
    if str(path) != "-" and not path.exists():
        raise AitkError(f"{path}: no such file or directory")


def _usecases() -> dict[str, UseCase]:
    from toolkit.plugins import get_usecases

    return get_usecases()


def print_metrics(metrics: dict[str, Any], as_json: bool) -> None:
    """Metrics as JSON (an undefined metric, NaN, is null: JSON has no NaN) or as aligned text."""
    if as_json:
        print(json.dumps(_finite(metrics), indent=2, allow_nan=False))
    else:
        print_mapping(metrics)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def print_mapping(mapping: dict[str, Any], indent: int = 0) -> None:
    width = max((len(k) for k in mapping), default=0)
    for key, value in mapping.items():
        if isinstance(value, dict) and value and indent < 2:
            print(" " * indent + f"{key}:")
            print_mapping(value, indent + 2)
        else:
            print(" " * indent + f"{key:<{width}}  {_cell(value)}")


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(none)")
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _cell(value: Any, limit: int = 120) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return "" if value is None else str(value)


def main() -> None:
    try:
        from toolkit.plugins import pm

        for usecase in _usecases().values():
            add_usecase_commands(usecase)
        pm.hook.register_commands(app=app)
        app()
    except AitkError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
