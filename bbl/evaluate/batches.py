"""Batching variable-length token sequences for scoring: the longest first, right-padded. One rule for BLiMP pairs
(`zero_shot`), completion ranking (`ranking`) and reading surprisal (`reading`)."""

from __future__ import annotations

import numpy as np


def by_length(lengths: list[int], batch_size: int):
    """Yield index arrays of `batch_size` sequences in order of decreasing length (stable on ties), so each batch
    pads to its first sequence."""
    order = np.argsort([-n for n in lengths], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def right_padded(rows: list, pad, dtype=None):
    """(values (B, W), attention (B, W) int64): `rows` (sequences of ids or per-token values) right-padded with
    `pad` to the longest, and 1 on their real positions. `dtype` defaults to int64 (token ids)."""
    import torch

    width = max(len(r) for r in rows)
    values = torch.full((len(rows), width), pad, dtype=dtype or torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        values[r, :len(row)] = torch.tensor(row, dtype=values.dtype)
        attention[r, :len(row)] = 1
    return values, attention
