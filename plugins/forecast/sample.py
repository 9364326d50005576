"""The sample data: three real monthly series from statsmodels, long-format CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from applied_aitk.files import atomic_path

SAMPLE_SOURCES = """# Sample series (monthly, long format: series, date, value)

Public-domain data sets that ship with statsmodels (statsmodels.datasets):

- co2: Mauna Loa atmospheric CO2 (ppm), NOAA/Scripps, weekly 1958-2001, here averaged by month
  (5 months without any weekly reading are interpolated linearly). statsmodels: "This is public domain."
- elnino: monthly sea surface temperature (deg C) of the Pacific, 0-10 S / 90-80 W, 1950-2010, NOAA.
  statsmodels: "This data is in the public domain."
- elec_equip: Euro area turnover index, manufacture of electrical equipment, monthly 1995-2016,
  Eurostat. statsmodels: "This is public domain."

train.csv holds each series without its last 36 months; series.csv holds them whole
(evaluate backtests its last 3 x 12 months; predict forecasts the 12 months after its end).
"""


def write_sample(out: Path) -> Any:
    """Three real monthly series from statsmodels as long-format CSV, with quick demo settings."""
    from statsmodels.datasets import co2, elnino
    from statsmodels.datasets.elec_equip import data as elec_equip

    from applied_aitk import Sample

    carbon = co2.load_pandas().data["co2"].resample("MS").mean().interpolate()
    sst = elnino.load_pandas().data.melt(id_vars="YEAR", var_name="month", value_name="value")
    sst.index = pd.to_datetime(sst["YEAR"].astype(int).astype(str) + "-" + sst["month"], format="%Y-%b")
    elec = elec_equip.load_pandas().data.iloc[:, 0]
    parts = []
    for sid, values in (("co2", carbon), ("elnino_sst", sst["value"].sort_index()), ("elec_equip", elec)):
        parts.append(pd.DataFrame({"series": sid, "date": values.index.strftime("%Y-%m-%d"), "value": values.round(3).to_numpy()}))
    out.mkdir(parents=True, exist_ok=True)
    whole = pd.concat(parts, ignore_index=True)
    train = pd.concat([p.iloc[:-36] for p in parts], ignore_index=True)
    _write_csv(whole, out / "series.csv")
    _write_csv(train, out / "train.csv")
    (out / "SOURCES.md").write_text(SAMPLE_SOURCES)
    settings = {"hidden_size": 32, "num_layers": 1, "epochs": 40, "patience": 8, "batch_size": 32}
    return Sample(train=out / "train.csv", evaluate=out / "series.csv", predict=[out / "series.csv"], settings=settings)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
