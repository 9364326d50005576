"""The `forecast` use case: quantile forecasts for one or many time series with an LSTM or GRU.

Module level imports stay light (stdlib and toolkit): aitk imports every plugin to build its CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import Predictor, Sample, UseCase, hookimpl
from toolkit.bundle import Bundle
from toolkit.runtime import Runtime
from toolkit.usecase import Option


@dataclass
class ForecastConfig:
    # reading the data
    format: str = "auto"
    """auto, long (a row per series and time step) or wide (a row per series, values in columns, as M4)."""
    id_column: str = ""
    """Series id column; empty: series, series_id, unique_id, id or item_id if present, else one series per file."""
    time_column: str = ""
    """Empty: timestamp, date, ds, time or datetime."""
    target: str = ""
    """Column(s) to forecast, comma-separated; empty: target, y or value, or the only numeric column; * for every numeric one."""
    known_covariates: str = ""
    """Columns known in advance (promotions, prices, holidays); to predict, give them for the horizon in rows with an empty target."""
    past_covariates: str = ""
    """Columns known only up to now (weather observed, traffic)."""
    freq: str = ""
    """pandas frequency (h, D, W, MS, QS...); empty: inferred from the timestamps."""
    fill_gaps: bool = False
    """Interpolate missing timestamps and values instead of refusing the series."""
    calendar: bool = True
    """Add hour-of-day, day-of-week and day-of-year features: those that vary at the frequency and whose cycle the data spans twice."""
    season: int = 0
    """Seasonal period in steps for seasonal naive and MASE; 0: from the frequency (24 hourly, 7 daily, 52 weekly, 12 monthly)."""
    # the model
    horizon: int = 0
    """Steps forecast; 0: from the frequency (24 hourly, 14 daily, 13 weekly, 12 monthly)."""
    context_length: int = 0
    """Steps the encoder reads; 0: from the frequency (168 hourly, 56 daily, 52 weekly, 36 monthly)."""
    quantiles: str = "0.1,0.5,0.9"
    cell: str = "lstm"
    """lstm or gru."""
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.1
    # training
    epochs: int = 50
    batch_size: int = 64
    learning_rate: float = 1e-3
    samples_per_epoch: int = 0
    """Training windows drawn per epoch; 0: all of them."""
    val_fraction: float = 0.2
    """The last part of each series (at least one horizon) validates and stops training early."""
    patience: int = 5
    seed: int = 0


class Forecast(UseCase):
    name = "forecast"
    summary = "Time-series forecasting: quantile forecasts for one or many series (LSTM/GRU)."
    Config = ForecastConfig
    input_suffixes = (".csv", ".parquet")
    options = {
        "train": [
            Option("target", str, None, "Column(s) to forecast, comma-separated (default: target, y or value)."),
            Option("horizon", int, None, "Steps to forecast (default: from the frequency)."),
        ],
        "evaluate": [
            Option("windows", int, 3, "Rolling origins per series, the last one ending at the series' end."),
            Option("stride", int, None, "Steps between origins (default: the horizon)."),
            Option("fill_gaps", bool, None, "Interpolate gaps (default: as trained)."),
        ],
        "predict": [
            Option("plot", Path, None, "Write a PNG per series (history, forecast, interval) into this folder."),
            Option("fill_gaps", bool, None, "Interpolate gaps (default: as trained)."),
        ],
    }

    def sample(self, out: Path) -> Sample:
        from plugins.forecast.data import write_sample

        return write_sample(out)

    def train(self, data: Path, out: Path, config: ForecastConfig, runtime: Runtime) -> Bundle:
        from plugins.forecast.fit import train_bundle

        return train_bundle(data, out, config, runtime, self.name)

    def evaluate(self, bundle: Bundle, data: Path, runtime: Runtime, report: Path | None = None,
                 windows: int = 3, stride: int | None = None, fill_gaps: bool | None = None, **options: Any) -> dict[str, Any]:
        from plugins.forecast import backtest
        from plugins.forecast.data import input_files

        predictor = self.load(bundle, runtime, fill_gaps=fill_gaps)
        return backtest.evaluate(predictor, input_files(data), windows or 3, stride, report)

    def load(self, bundle: Bundle, runtime: Runtime, plot: Path | None = None, fill_gaps: bool | None = None, **options: Any) -> Predictor:
        from plugins.forecast.predictor import ForecastPredictor

        return ForecastPredictor(bundle, runtime, plot=plot, fill_gaps=fill_gaps)


@hookimpl
def register_usecases(register):
    register(Forecast())
