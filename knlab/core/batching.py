"""Many short texts through a model at once, without padding: batches of rows of equal length.

Rows of one forward pass must be the same length. Padding the shorter ones costs twice. It wastes compute
on pad positions (a batch of prompts of 6 to 30 tokens runs every row at 30). And it must be done the way
the model reads: a causal model needs left padding (or shifted position ids) so that every row's last real
token sits where its prediction is read, with an attention mask hiding the pads; a masked model pads on
the right and its [MASK] then sits at a different column in every row. Either way a padded row's numbers
can differ slightly from the same text run alone. Prompts of a template differ in length by a few tokens
at most, so grouping rows of exactly equal length gives a handful of full batches with no padding, no
mask and no position bookkeeping: each row computes what it computes alone.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterator, Sequence


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
