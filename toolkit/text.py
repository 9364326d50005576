"""Token batches: sequences of token ids of different lengths as one padded array and its mask."""

from __future__ import annotations

from collections.abc import Sequence


def pad_ids(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right"):
    """(ids, attention_mask): int64 arrays [batch, longest]; ``ids`` holds each sequence, filled with
    ``pad_id`` on ``side`` ("right", or "left" for generation, so that every row ends at its last
    token), and ``attention_mask`` is 1 on the real tokens, 0 on the padding."""
    import numpy as np

    if side not in ("right", "left"):
        raise ValueError(f"side={side!r}: expected right or left")
    longest = max((len(s) for s in sequences), default=0)
    ids = np.full((len(sequences), longest), pad_id, np.int64)
    mask = np.zeros((len(sequences), longest), np.int64)
    for row, sequence in enumerate(sequences):
        cut = slice(0, len(sequence)) if side == "right" else slice(longest - len(sequence), longest)
        ids[row, cut], mask[row, cut] = sequence, 1
    return ids, mask
