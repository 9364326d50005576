"""The contracts a plugin fulfils: a UseCase (train, evaluate, load, read, sample) and a Predictor."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import typer

    from applied_aitk.bundle import Bundle
    from applied_aitk.columns import Columns
    from applied_aitk.runtime import Runtime


@dataclass
class Record:
    """One unit of batch inference: ``id`` is stable across runs (it is what ``--resume`` skips).

    ``data`` is what ``Predictor.decode`` turns into a model input; ``error`` set means the record
    could not even be read, and it becomes an error row."""

    id: str
    data: Any = None
    error: str | None = None


@dataclass
class RecordBatch:
    """Many records read at once, as columns: the batch path of batch inference (table rows).

    ``ids``: every record's id, in input order (ids as a Record's). ``errors``: ``{position in
    ids: message}`` for the records that could not be read; each becomes an error row. ``data``:
    the other records' inputs as named numpy arrays, each with one row (axis 0) per good record,
    in the order of ``ids``; the core slices them (``array[positions]``) and hands slices to
    ``Predictor.predict_batch``. ``unique``: the reader promises that no id of this batch occurs
    anywhere else in the stream of batches it reads (ids made of a file's path and line, say);
    batch predict then takes them as they are instead of checking them against every id read."""

    ids: list[str]
    data: dict[str, Any]
    errors: dict[int, str] = field(default_factory=dict)
    unique: bool = False


@dataclass
class Sample:
    """What ``UseCase.sample`` wrote: data to train on, to evaluate on, and files to predict over.

    ``settings`` are training settings that keep the demo quick (``--set`` style overrides)."""

    train: Path
    evaluate: Path
    predict: list[Path]
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Option:
    """An extra command-line option a use case adds to one of its generic commands.

    ``--NAME`` (underscores become dashes) with ``type`` (str, int, float, bool, Path, or a ``Literal``
    of choices, which Click checks) and ``default``.
    On ``train`` a given value becomes the training setting of that name; on ``evaluate`` and
    ``predict`` it is passed as a keyword argument to ``evaluate`` or ``load``. ``folder``: a Path
    option that names a folder to write into (``DIR``; a file there is a one-line usage error).
    ``min``/``max``: inclusive bounds of an int or float option (outside them: a usage error, exit 2)."""

    name: str
    type: type
    default: Any = None
    help: str = ""
    folder: bool = False
    min: float | None = None
    max: float | None = None


Check = Callable[[str, Path, Path], dict[str, Any]]


@dataclass
class Graph:
    """One ONNX graph of a bundle, exported from a torch module and checked against it.

    ``name``: "model" is the graph predict runs; its files are NAME.onnx and NAME.VARIANT.onnx.
    ``dynamic_axes`` defaults to axis 0 ("batch") of every input and output; ``parity_inputs``
    (default: the example inputs) should hold another batch size, to prove the dynamic axis;
    ``label_output`` names a score output whose argmax must agree with torch's (classifiers).

    ``variants``: the variants this graph may have; those asked for at training are written. int4
    (weight-only, block-wise, for MatMul-heavy graphs such as transformers) is opt-in: name it here.
    ``calibration``: feeds ({input name: array}) for static int8, calibrated (convolutional models);
    None means dynamic int8 (MatMul, Gemm and LSTM weights).
    ``parts``: graphs exported one by one (each checked against its own module) and chained into
    this one, each part's outputs feeding the next part's inputs of the same name; a variant then
    converts only the parts whose ``variants`` allow it (a distance head kept in fp32, say).
    ``prepare(path)`` rewrites an exported file in place before the parity check (fold Pad into Conv...).
    ``custom_opsets``: domains of non-standard ops the module writes and their versions
    (``{"com.microsoft": 1}``: ONNX Runtime's contrib ops, such as GroupQueryAttention).
    ``check(variant, path, fp32_path) -> dict`` runs after each file of the graph is written
    ("fp32" for the graph itself); what it returns joins that file's manifest entry. It may add to
    the result's metrics, assets and files (figures measured on the exported graph)."""

    module: Any
    example_inputs: tuple
    input_names: Sequence[str]
    output_names: Sequence[str]
    name: str = "model"
    dynamic_axes: dict[str, dict[int, str]] | None = None
    parity_inputs: tuple | None = None
    atol: float = 1e-4
    label_output: str | None = None
    variants: tuple[str, ...] = ("int8", "fp16")
    calibration: Iterable[dict[str, Any]] | None = None
    parts: list[Graph] = field(default_factory=list)
    prepare: Callable[[Path], None] | None = None
    check: Check | None = None
    custom_opsets: dict[str, int] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What ``UseCase.train`` learned, everything a bundle is made of.

    ``graphs``: the ONNX graphs, one named "model". ``weights``: a state dict, saved as
    weights.safetensors (to fine-tune or rebuild the torch model). ``assets``: JSON settings predict
    needs (preprocessing, labels, thresholds). ``files``: extra bundle files by name: a numpy array
    (NAME.npy), a JSON value (NAME.json), text or bytes (written as given), or a Path (copied).
    ``metrics``: figures measured at training (JSON). ``history``: one row per epoch (or
    evaluation step) of training, e.g. ``applied_aitk.train.fit``'s, written as history.csv.
    ``checkpoint``: a folder of training checkpoints to resume an interrupted run from; `train`
    removes it once the bundle is written (a completed run has nothing to resume). ``resolved``:
    the value training used for each setting it worked out itself (a 0 or "auto" that means "from
    the data"), by setting name; the manifest records them and the model card shows them."""

    graphs: list[Graph]
    weights: dict[str, Any]
    assets: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    resolved: dict[str, Any] = field(default_factory=dict)


class Predictor:
    """A loaded bundle, everything batch inference needs: ``read`` records from input files,
    ``decode`` one record, ``predict`` a batch of decoded inputs through ONNX Runtime.

    ``predict`` returns one JSON-able row per input; a row may carry an ``error`` key for an input
    the model cannot take. If ``predict`` raises, the batch runner retries record by record to
    isolate the bad one. ``provider`` is the execution provider the ONNX session really got.

    Optionally, the batch path (``read_batches`` and ``predict_batch``, or ``predict_columns``): records
    read and predicted as columns, with no Python object per record (with ``predict_columns``, none
    per output row either until its JSON line); table rows take it through
    ``applied_aitk.table_predictor.TablePredictor``, other inputs (images, text) stay record by record."""

    provider: str = "CPUExecutionProvider"
    threaded_decode: bool = True
    """False when ``decode`` is trivial (the records come decoded, as from ``applied_aitk.tables``):
    batch inference then decodes inline instead of handing batches to a thread pool."""

    def read(self, paths: Iterable[Path]) -> Iterator[Record]:
        """Stream records from input files (``-`` is stdin); a record that cannot be read carries ``error``.

        It is the predictor's job because what to read depends on the bundle (its columns, say)."""
        raise NotImplementedError

    def count(self, paths: list[Path]) -> int | None:
        """About how many records ``read(paths)`` will give, found cheaply (no parsing), for the
        progress bar's total and ETA; None when unknown. The default counts lines of JSONL, rows of
        CSV and Parquet, and one record per other file (``applied_aitk.counting.count_records``)."""
        from applied_aitk.counting import count_records

        return count_records(list(paths))

    def read_batches(self, paths: Iterable[Path]) -> Iterator[RecordBatch]:
        """Optional, the batch path: the records of ``read(paths)`` (same ids, same order, same
        errors), a RecordBatch at a time, already decoded. A predictor that implements it also
        implements ``predict_batch``, and batch inference then builds no Python object per record
        but its output row. ``applied_aitk.tables.TablePredictor`` implements both for table rows."""
        raise NotImplementedError

    def predict_batch(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """One row per row of ``data`` (a slice of ``RecordBatch.data``), as ``predict`` returns them;
        if it raises, the batch runner retries row by row to isolate the bad one."""
        raise NotImplementedError

    def predict_columns(self, data: dict[str, Any]) -> Columns:
        """Optional, on the batch path: ``predict_batch``'s output as columns
        (``applied_aitk.columns.Columns``: {field: numpy array, list or dict of them}, one value per
        row of ``data``), so that batch predict writes JSON lines from them with no Python object per
        row. A predictor that implements it gets ``predict_batch`` (rows) from it through
        ``TablePredictor``; if it raises, the batch runner falls back to ``predict_batch`` row by row."""
        raise NotImplementedError

    def decode(self, record: Record) -> Any:
        """Turn a record into a model input; runs in a thread pool. Raise InputError for bad input."""
        return record.data

    def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def from_json(self, value: Any, id: str) -> Record:
        """A record from one JSON value of an `aitk serve` request, for ``decode`` as ``read``'s records are.

        ``id`` is the value's position in the request. The default takes the value as the record's
        data: right where ``read`` yields one parsed JSON object or table row per record. Raise
        InputError for a value that cannot be a record (it becomes an error row)."""
        return Record(id, value)

    def from_json_batch(self, values: list[Any], ids: list[str]) -> list[Record]:
        """``from_json`` of many values at once, in order; a value that cannot be a record is an
        error record with its InputError's text. `aitk serve` calls it once per batch, on the values
        of all the requests in it, for a predictor whose records need no decoding (``threaded_decode``
        False), so that it can make them all in one step; the default calls ``from_json`` on each."""
        from applied_aitk.errors import AitkError

        records = []
        for value, id in zip(values, ids):
            try:
                records.append(self.from_json(value, id))
            except AitkError as e:
                records.append(Record(id, error=str(e)))
        return records

    def from_upload(self, data: bytes, filename: str) -> Record:
        """A record from one file uploaded to `aitk serve` (multipart); only use cases whose inputs are
        files (images) implement it."""
        raise NotImplementedError


class UseCase:
    """One business use case. Subclass it, set ``name``, ``summary`` and ``Config``, implement the methods.

    ``Config`` is a dataclass whose fields, declared with ``applied_aitk.settings.setting`` (default,
    meaning, bounds), are the training settings users change with ``--config FILE`` and ``--set
    key=value``; the core validates them before ``train`` is called."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Config: ClassVar[type]
    input_suffixes: ClassVar[tuple[str, ...]] = ()
    """File suffixes `predict` picks up when given a folder (e.g. ``(".jpg", ".png")``)."""
    batch_size: ClassVar[int] = 32
    """Records per model call in `predict` unless --batch-size says otherwise."""
    options: ClassVar[dict[str, list[Option]]] = {}
    """Extra options by command name ("train", "evaluate", "predict")."""
    model_card: ClassVar[str] = ""
    """Markdown for the bundle's model card (README.md, written by the core): what the model is for
    and where it fails, under the headings ``## Intended use`` and ``## Limitations``. The core adds
    the rest (training data, settings, metrics, export checks, libraries, how to predict)."""
    train_data_spec: ClassVar[bool] = False
    """True when `train DATA` is a spec the use case parses and checks itself (globs, comma-separated
    lists, names); otherwise the CLI requires DATA to be an existing path."""
    asset_types: ClassVar[dict[str, Any]] = {}
    """The type of each asset (``TrainResult.assets``) that evaluate and predict read, as a type hint
    (``{"classes": list[str], "threshold": float, "ranges": list[list[float]] | None}``; a dataclass
    for an object of known fields). Loading a bundle checks them (``applied_aitk.manifest.check_assets``):
    a hand-edited manifest.json whose ``classes`` is an object is refused once, in one line naming
    the asset, instead of failing in every row. An asset whose type allows None may be absent."""
    serve_state: ClassVar[bool] = False
    """True when ``serve_routes`` keeps state in the server between requests (conversations), in
    ``model.sessions`` (shared by the processes of `aitk serve --workers N`); `aitk serve --engine
    ray` serves such a model on one replica only, since replicas may run on other machines."""

    def sample(self, out: Path) -> Sample:
        raise NotImplementedError

    def train(self, data: Path, out: Path, config: Any, runtime: Runtime) -> TrainResult:
        """Train on ``data`` with the settings ``config``; the core packages the result as the bundle
        ``out`` (``out`` is given for what lives beside it, such as checkpoints)."""
        raise NotImplementedError

    def evaluate(self, bundle: Bundle, data: Path, runtime: Runtime, report: Path | None = None, **options: Any) -> dict[str, Any]:
        """Metrics on labelled ``data``; plots and reports go into the folder ``report`` when given."""
        raise NotImplementedError

    def load(self, bundle: Bundle, runtime: Runtime, **options: Any) -> Predictor:
        raise NotImplementedError

    def layout(self, **options: Any) -> Callable[[dict[str, Any]], list[dict[str, Any]]] | None:
        """How `predict` writes a record's row, given the predict options (as ``load`` gets them): None
        (the default) writes it as it is; a function from the row to the rows to write splits a
        record into several (forecast's ``--layout long``: one row per horizon step). It applies as
        the output is written (error rows are never passed to it), so ``--resume`` and `aitk serve`
        keep one row per record; given a row it already split, it returns ``[row]``."""
        return None

    def commands(self, group: typer.Typer) -> None:
        """Add this use case's own commands (e.g. ``aitk chatbot chat``) to its CLI group."""

    def serve_routes(self, app: Any, model: Any) -> None:
        """Add this use case's own endpoints to `aitk serve`: ``app`` is the FastAPI app, ``model`` the
        ``applied_aitk.serve.models.ServedModel`` (its bundle, predictor, limits and metrics). Every model
        already has ``POST /v1/{name}/predict``; import FastAPI inside this method."""

    def config_from(self, settings: dict[str, Any]) -> Any:
        """Build ``Config`` from ``{"key": value}``: values given as text are converted to the field's
        type, and an unknown name or a bad value raises AitkError (see applied_aitk.settings)."""
        from applied_aitk.settings import build_settings

        return build_settings(self.Config, settings)
