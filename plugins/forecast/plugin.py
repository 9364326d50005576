"""The `forecast` use case: quantile forecasts for one or many time series with an LSTM or GRU.

Module level imports stay light (stdlib and toolkit): aitk imports every plugin to build its CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from applied_aitk import Predictor, Sample, TrainResult, UseCase, hookimpl
from applied_aitk.bundle import Bundle
from applied_aitk.runtime import Runtime
from applied_aitk.settings import setting
from applied_aitk.usecase import Option


MAX_EPOCH_BATCHES = 500
"""samples_per_epoch=0 draws every training window per epoch, but at most this many batches: a
validation (and a chance to stop early) at least every 500 steps however large the data."""


@dataclass
class ForecastConfig:
    # reading the data
    format: Literal["auto", "long", "wide"] = setting("auto", "long: a row per series and time step; wide: a row per series, values in columns (as M4).")
    id_column: str = setting("", "Series id column, or several comma-separated (a composite key: store,item); empty: series, series_id, unique_id, id or item_id if present, else one series per file.")
    time_column: str = setting("", "Time column; empty: timestamp, date, ds, time or datetime.")
    target: list[str] = setting([], "Column(s) to forecast; empty: target, y or value, or the only numeric column; * for every numeric one.")
    known_covariates: list[str] = setting([], "Columns known in advance (promotions, prices, holidays); to predict, give them for the horizon in rows with an empty target.")
    past_covariates: list[str] = setting([], "Columns known only up to now (weather observed, traffic).")
    freq: str = setting("", "pandas frequency (h, D, W, MS, QS...); empty: inferred from the timestamps.")
    delimiter: str = setting("", "CSV field delimiter: , ; | or tab; empty: found from each file (the one that splits every line alike).")
    decimal: Literal["", ".", ","] = setting("", "CSV decimal mark; empty: a comma when the file is not comma-separated and writes numbers as 1,5.")
    fill_gaps: bool = setting(False, "Interpolate missing timestamps and values instead of refusing the series.")
    calendar: bool = setting(True, "Add hour-of-day, day-of-week and day-of-year features: those that vary at the frequency and whose cycle the data spans twice.")
    season: int = setting(0, "Seasonal period in steps for seasonal naive and MASE; 0: from the frequency (24 hourly, 7 daily, 52 weekly, 12 monthly).", ge=0)
    # the model
    horizon: int = setting(0, "Steps forecast; 0: from the frequency (24 hourly, 14 daily, 13 weekly, 12 monthly).", ge=0)
    context_length: int = setting(0, "Steps the encoder reads; 0: from the frequency (168 hourly, 56 daily, 52 weekly, 36 monthly).", ge=0)
    quantiles: list[float] = setting([0.1, 0.5, 0.9], "Quantile levels forecast; distinct, between 0 and 1, including 0.5 (the point forecast).", gt=0, lt=1)
    cell: Literal["lstm", "gru"] = setting("lstm", "Recurrent cell of the encoder and decoder.")
    hidden_size: int = setting(64, "Units of the recurrent cell.", ge=1)
    num_layers: int = setting(1, "Stacked recurrent layers.", ge=1)
    dropout: float = setting(0.1, "Dropout between layers and before the head.", ge=0, lt=1)
    # training
    epochs: int = setting(50, "Passes of samples_per_epoch windows each.", ge=1)
    batch_size: int = setting(64, "Windows per optimizer step.", ge=1)
    learning_rate: float = setting(1e-3, "Adam learning rate (gradient norm clipped at 1).", gt=0)
    samples_per_epoch: int = setting(0, f"Training windows drawn per epoch; 0: all of them, at most {MAX_EPOCH_BATCHES} batches.", ge=0)
    max_steps: int = setting(10_000, "Stop after this many optimizer steps (0: no limit); bounds training time as the data grows.", ge=0)
    max_time: float = setting(0.0, "Stop after this many seconds of training (0: no limit).", ge=0)
    val_fraction: float = setting(0.2, "The last part of each series (at least one horizon) validates and stops training early.", ge=0, lt=1)
    patience: int = setting(5, "Epochs without a lower validation loss before stopping (0: never early).", ge=0)
    seed: int = setting(0, "Seed of the window sampling and the initial weights.")

    def __post_init__(self) -> None:
        levels = sorted(self.quantiles)
        if 0.5 not in levels or len(set(levels)) != len(levels):
            raise ValueError(f"setting quantiles={self.quantiles}: expected distinct levels between 0 and 1, including 0.5")
        self.quantiles = levels


class Forecast(UseCase):
    name = "forecast"
    summary = "Time-series forecasting: quantile forecasts for one or many series (LSTM/GRU)."
    Config = ForecastConfig
    input_suffixes = (".csv", ".tsv", ".parquet")
    model_card = """## Intended use

Forecasting the next `horizon` steps of the series it was trained on (or of similar series at the
same frequency), with the quantiles in the settings as an interval: demand, sales, load, traffic.

## Limitations

- The horizon, frequency, context length and quantile levels are fixed at training.
- A series needs at least `context_length` regular steps; gaps are refused unless `fill_gaps`.
- Known covariates must be given for every step of the horizon; past covariates only up to now.
- Series far from what training saw (values many standard deviations away) get a warning: the
  model extrapolates there. Level shifts and new regimes after training are not anticipated.
- The interval's coverage is measured on the training series' validation windows, not guaranteed.
"""
    @property
    def asset_types(self) -> dict[str, Any]:
        """The bundle's table schema and model spec, as their dataclasses (imported only here: pandas)."""
        from applied_aitk.usecases.forecast.schema import Schema
        from applied_aitk.usecases.forecast.time_features import Spec

        return {"schema": Schema, "spec": Spec}

    options = {
        "train": [
            Option("target", str, None, "Column(s) to forecast, comma-separated (default: target, y or value)."),
            Option("horizon", int, None, "Steps to forecast (default: from the frequency).", min=1),
        ],
        "evaluate": [
            Option("windows", int, 3, "Rolling origins per series, the last one ending at the series' end.", min=1),
            Option("stride", int, None, "Steps between origins (default: the horizon).", min=1),
            Option("fill_gaps", bool, None, "Interpolate gaps (default: as trained)."),
        ],
        "predict": [
            Option("plot", Path, None, "Write a PNG per series (history, forecast, interval) into this folder.", folder=True),
            Option("fill_gaps", bool, None, "Interpolate gaps (default: as trained)."),
            Option("layout", Literal["wide", "long"], "wide", "wide: a row per series, each quantile a list over the horizon; "
                   "long: a row per series and step (series, timestamp, p10, p50, p90), as pandas, darts and statsforecast read forecasts."),
        ],
    }

    def sample(self, out: Path) -> Sample:
        from applied_aitk.usecases.forecast.sample import write_sample

        return write_sample(out)

    def train(self, data: Path, out: Path, config: ForecastConfig, runtime: Runtime) -> TrainResult:
        from applied_aitk.usecases.forecast.fit import train

        return train(data, config, runtime)

    def evaluate(self, bundle: Bundle, data: Path, runtime: Runtime, report: Path | None = None,
                 windows: int = 3, stride: int | None = None, fill_gaps: bool | None = None, **options: Any) -> dict[str, Any]:
        from applied_aitk.usecases.forecast import backtest
        from applied_aitk.usecases.forecast.table import input_files

        predictor = self.load(bundle, runtime, fill_gaps=fill_gaps)
        return backtest.evaluate(predictor, input_files(data), windows or 3, stride, report, name=data)

    def layout(self, layout: str = "wide", **options: Any):
        from applied_aitk.usecases.forecast.predictor import long_rows

        return long_rows if layout == "long" else None

    def load(self, bundle: Bundle, runtime: Runtime, plot: Path | None = None, fill_gaps: bool | None = None,
             layout: str = "wide", **options: Any) -> Predictor:
        from applied_aitk.usecases.forecast.predictor import ForecastPredictor

        return ForecastPredictor(bundle, runtime, plot=plot, fill_gaps=fill_gaps, layout=layout)


@hookimpl
def register_usecases(register):
    register(Forecast())
