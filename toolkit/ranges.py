"""What training saw of each numeric feature, and what to do with values far outside it.

A model extrapolates without meaning far outside its training data (a 1e30 amount can turn a
fraud score into NaN). Training records each feature's [min, max] in the bundle's assets
(``value_ranges``); prediction clips values far outside to the edge of a band around that range
and says so in a warning on the row (``TrainingRanges.clip``)."""

from __future__ import annotations

import numpy as np

from applied_aitk.errors import AitkError


def value_ranges(x: np.ndarray) -> list[list[float]]:
    """[min, max] of each column of the training features ``x`` [rows, features] (NaN ignored)."""
    x = np.asarray(x, dtype=np.float64)
    return [[float(np.nanmin(c)), float(np.nanmax(c))] if np.isfinite(c).any() else [0.0, 0.0] for c in x.T]


class TrainingRanges:
    """The training range of each feature; ``ranges`` None (a bundle from before they were kept)
    means no clipping and no warnings.

    Far outside: more than the range's width (at least 1) below its minimum or above its maximum."""

    def __init__(self, names: list[str], ranges: list[list[float]] | None):
        self.names = list(names)
        self.known = bool(ranges)
        if self.known:
            try:
                table = np.array(ranges, dtype=np.float64)
            except (TypeError, ValueError):  # ragged, or not numbers
                table = np.zeros(0)
            if table.shape != (len(self.names), 2):
                raise AitkError(f"bundle asset ranges: expected a [min, max] pair for each of the {len(self.names)} features, "
                                f"got {len(ranges)} entries (was manifest.json edited? train the bundle again)")
            self.low, self.high = table.T
            span = np.maximum(self.high - self.low, 1.0)
            self.floor, self.ceiling = (self.low - span).astype(np.float32), (self.high + span).astype(np.float32)

    def clip(self, x: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
        """(``x`` float32 [rows, features] with far values clipped to the band's edge, per row a
        warning for each: the field, the value given, the training range and the value used)."""
        if not self.known or not len(x):
            return x, [[]] * len(x)
        far = (x < self.floor) | (x > self.ceiling)  # NaN (a missing value) is never far
        if not far.any():
            return x, [[]] * len(x)
        clipped = np.where(far, np.clip(x, self.floor, self.ceiling), x).astype(x.dtype)
        warnings: list[list[str]] = [[] for _ in range(len(x))]
        for i, j in zip(*np.nonzero(far)):
            warnings[i].append(
                f"field {self.names[j]!r}: {float(x[i, j]):.7g} is far outside the training range "
                f"[{self.low[j]:.7g}, {self.high[j]:.7g}]; scored as {float(clipped[i, j]):.7g}"
            )
        return clipped, warnings
