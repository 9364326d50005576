"""`aitk NAME sample|train|evaluate|predict`: the commands every use case gets, built from its UseCase
(its Config gives train's settings, its ``options`` the extra options of each command)."""

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from applied_aitk import console
from applied_aitk.cli_options import (PLAIN_HELP, AsJson, BatchSize, BundleArg, BundleOut, DataArg, Device, Force, QuantizeRun,
                                      QuantizeTrain, Report, Threads, ThreadsTrain, Command, check_replaceable, examples, make_runtime,
                                      parse_settings, settings_help, with_options)
from applied_aitk.display import print_mapping, print_metrics
from applied_aitk.errors import AitkError
from applied_aitk.settings_file import read_settings
from applied_aitk.usecase import UseCase

logger = console.get_logger(__name__)


def usecase_group(usecase: UseCase) -> typer.Typer:
    """The `aitk NAME` group: sample, train, evaluate and predict built from ``usecase``, plus its own commands."""
    name = usecase.name
    group = typer.Typer(help=usecase.summary, no_args_is_help=True, epilog=examples(
        f"aitk {name} sample data --json", f"aitk {name} train DATA --out bundle", f"aitk {name} evaluate bundle DATA --report report",
        f"aitk {name} predict bundle INPUT... --out predictions.jsonl", f"aitk {name} train --help"), **PLAIN_HELP)

    @group.command("sample", cls=Command, epilog=examples(f"aitk {name} sample data", f"aitk {name} sample data --json"))
    def sample(
        out: Annotated[Path, typer.Argument(metavar="OUT", file_okay=False, help="Folder to write the sample data to.", show_default=False)],
        as_json: AsJson = False,
    ) -> None:
        """Write real sample data to start from, and print where each part is."""
        written = usecase.sample(out)
        paths = {"train": str(written.train), "evaluate": str(written.evaluate), "predict": [str(p) for p in written.predict]}
        if as_json:
            print(json.dumps({**paths, "settings": written.settings}, indent=2))
        else:
            print_mapping(paths)

    def train(
        data: Annotated[Path, typer.Argument(metavar="DATA", help="Training data (file or folder).", show_default=False)],
        out: BundleOut,
        force: Force = False,
        config: Annotated[Optional[Path], typer.Option("--config", metavar="FILE", help="Training settings file: .json, .yaml, .yml or .toml.")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="A training setting (repeatable).")] = None,
        device: Device = "auto",
        threads: ThreadsTrain = None,
        quantize: QuantizeTrain = None,
        as_json: AsJson = False,
        **options: Any,
    ) -> None:
        if not usecase.train_data_spec:
            _require_exists(data)
        check_replaceable(out, force)
        settings = read_settings(config) if config else {}
        settings.update(parse_settings(set_ or []))
        settings.update({k: v for k, v in options.items() if v is not None})
        from applied_aitk.package import train_bundle

        variants = [q.value for q in quantize or [] if q.value != "none"]
        started = time.perf_counter()
        bundle = train_bundle(usecase, data, out, usecase.config_from(settings), make_runtime(device, threads, None), variants)
        logger.info(f"bundle written to {bundle.path} in {time.perf_counter() - started:.1f} s")
        print_metrics(bundle.metrics, as_json)

    def evaluate(
        bundle: BundleArg,
        data: DataArg,
        report: Report = None,
        device: Device = "auto",
        threads: Threads = None,
        quantize: QuantizeRun = None,
        as_json: AsJson = False,
        **options: Any,
    ) -> None:
        from applied_aitk.bundle import load_bundle

        _require_exists(data)
        loaded = load_bundle(bundle, usecase=name)
        metrics = usecase.evaluate(loaded, data, make_runtime(device, threads, quantize), report=report, **options)
        if report is not None:
            from applied_aitk.report import finish

            finish(report, f"aitk {name} evaluate {data}", metrics, loaded)
        print_metrics(metrics, as_json)

    def predict(
        bundle: BundleArg,
        inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Files, folders, globs, or - for stdin.", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Output file: .jsonl, .csv or .parquet; - writes JSON lines to stdout.", show_default=False)],
        resume: Annotated[bool, typer.Option("--resume", help="Keep rows already in --out and skip their records.")] = False,
        batch_size: BatchSize = None,
        device: Device = "auto",
        threads: Threads = None,
        quantize: QuantizeRun = None,
        engine: Annotated[Literal["local", "ray"], typer.Option("--engine", help="local, or ray: Ray Data on a cluster (needs applied-aitk[ray]).")] = "local",
        address: Annotated[Optional[str], typer.Option("--address", metavar="ADDRESS", help="Ray cluster address (default: start a local one).")] = None,
        actors: Annotated[Optional[int], typer.Option("--actors", min=1, metavar="N", help="Ray predictor actors (default: one per GPU, else cores/2).")] = None,
        as_json: AsJson = False,
        **options: Any,
    ) -> None:
        from applied_aitk.batch import expand_inputs, print_summary, run_batch
        from applied_aitk.bundle import load_bundle

        to_stdout = str(out) == "-"
        if to_stdout and (as_json or resume or engine == "ray"):
            raise typer.BadParameter("--out - writes the rows to stdout: it cannot go with --json, --resume or --engine ray", param_hint="'--out'")
        loaded = load_bundle(bundle, usecase=name)
        paths = expand_inputs(inputs, usecase.input_suffixes)
        runtime = make_runtime(device, threads, quantize)
        batch_size = batch_size or usecase.batch_size
        if engine == "ray":
            from applied_aitk.ray_engine import run_batch_ray

            runtime.provider()  # --device cuda without CUDA fails here, before a cluster starts
            summary = run_batch_ray(name, bundle, runtime, options, paths, out, batch_size, resume, address, actors, usecase.layout(**options))
        else:
            predictor = usecase.load(loaded, runtime.sleeping(), **options)
            summary = run_batch(predictor, paths, out, batch_size=batch_size, resume=resume, total=predictor.count(paths),
                                layout=usecase.layout(**options))
        if as_json:
            print_metrics(summary, as_json=True)  # records_per_s of a run over nothing is no NaN
        else:
            print_summary(summary)
        if summary["failed_in_output"]:
            raise typer.Exit(3)

    train.__doc__ = "Train, export to ONNX, check parity against torch, write the bundle."
    evaluate.__doc__ = "Metrics of a bundle on labelled data."
    predict.__doc__ = "Batch inference over files; a bad record becomes an error row (exit 3)."
    command_examples = {
        "train": examples(f"aitk {name} train DATA --out bundle", f"aitk {name} train DATA --out bundle --force --set seed=1 --quantize int8",
                          f"aitk {name} train DATA --out bundle --config settings.yaml --log-file train.log"),
        "evaluate": examples(f"aitk {name} evaluate bundle DATA", f"aitk {name} evaluate bundle DATA --json --report report"),
        "predict": examples(f"aitk {name} predict bundle INPUT --out predictions.jsonl", f"aitk {name} predict bundle folder/ more/*.csv --out rows.parquet --resume",
                            f"aitk {name} predict bundle INPUT --out - --quiet | head"),
    }
    for command in (train, evaluate, predict):
        epilog = command_examples[command.__name__]
        if command is train and (settings := settings_help(usecase.Config)):
            epilog = settings + "\n\n" + epilog
        group.command(command.__name__, cls=Command, epilog=epilog)(with_options(command, usecase.options.get(command.__name__, [])))
    usecase.commands(group)
    return group


def _require_exists(path: Path) -> None:
    if str(path) != "-" and not path.exists():
        raise AitkError(f"{path}: no such file or directory")
