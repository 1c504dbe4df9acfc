"""Many short texts through a model at once.

Rows of one forward pass must be the same length. Two ways to get there. ``equal_length_batches`` groups
rows of exactly equal length: no padding, no mask, no position bookkeeping, and each row computes what it
computes alone; right for many rows of a few lengths (a template's prompts over a relation's subjects),
where the groups are full batches. ``right_padded`` pads the shorter rows at the end, behind an attention
mask: a causal row never looks at what comes after it and a masked model's mask hides the pads, so each
row still computes what it computes alone (up to the float rounding of a larger product) and its answer
is read at its own position. Right when the rows are few and of many lengths (an edit's fifteen probes
of five lengths: one forward pass instead of five, each of which reads all the real model's weights).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterator, Sequence

import torch


def equal_length_batches(lengths: Sequence[Hashable], size: int | None = None) -> Iterator[list[int]]:
    """Indices into ``lengths``, in batches whose rows all have the same length (any hashable key: a
    (prompt, object) pair of lengths keeps both parts aligned across the batch), at most ``size`` rows
    each (``None``: a whole length group at once). Groups come in the order their first row appears,
    rows in their original order."""
    if size is not None and size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, n in enumerate(lengths):
        groups[n].append(i)
    for idx in groups.values():
        step = size or len(idx)
        for c in range(0, len(idx), step):
            yield idx[c : c + step]


def right_padded(rows: Sequence[Sequence[int]], pad: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one [rows, longest] batch padded at the end with ``pad`` (0 when the tokenizer has
    none: masked out, its value never read), and the attention mask that hides the pads."""
    pad = 0 if pad is None else pad
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask
