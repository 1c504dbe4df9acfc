"""Running only what differs from a known run, for a batch of rows that equal it up to some block /
position: the shared mechanism behind fast causal tracing, ROME's v* and integrated gradients.

Two forms. ``replay_blocks``: every row starts changing at the same block, and the blocks below return a
recorded run's outputs (rows = corrupted samples in tracing, templates in ROME). ``staged_blocks``: row 0
of the batch is the unchanged run itself and the other rows start changing at different blocks (rows =
one layer's scaled copies in IG), so each block runs only the rows that differ there and the rest copy
row 0. In both, positions before the first changed one come from keys and values computed once.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import inspect
from typing import Any, Callable, Sequence

import torch

from knlab.core.models import LM
from knlab.core.nethook import TraceDict, get_module, override_forward, replace_first


def cache_kwarg(model: torch.nn.Module) -> str:
    """transformers is renaming ``past_key_values`` to ``cache``; use whichever this model takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def prefix_reusable(lm: LM, positions: int) -> bool:
    """Whether a run of ``positions`` tokens may continue from a cached prefix. Not when a layer attends
    through a sliding window shorter than the run (Gemma-2 / Gemma-3's local layers, Mistral's window):
    transformers' sliding cache then keeps only the window's last keys and cannot be cut back to a prefix
    (``crop`` refuses). Such a run recomputes every position (slower, the same numbers); real models'
    windows (512 to 4096 tokens) are longer than knlab's prompts, so it is the tiny test models (window 4,
    tests/tiny_models.py) that take this path."""
    config = lm.model.config
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    slides = window is not None and (types is None or "sliding_attention" in types)
    return not (slides and positions > window)


def returned_cache(output: Any) -> Any:
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


def prefix_kwargs(lm: LM, cache: Any, keep: int, total: int, rows: torch.Tensor,
                  starts: Sequence[int] | None = None) -> dict:
    """Model kwargs that start a forward pass at position ``keep``: the recorded cache cut to its first
    ``keep`` positions, with recorded row ``rows[i]`` as batch row i. With ``starts`` (see
    ``replay_blocks``), layer j holds only the rows that block j runs."""
    if keep == 0 or cache is None:
        return {"use_cache": False}
    past = copy.deepcopy(cache)
    past.crop(keep - total)  # a negative crop drops that many positions from the end
    if starts is None:
        past.batch_select_indices(rows)
    else:
        _rows_per_layer(past, rows, lambda j: bisect.bisect_right(starts, j))
    return {"use_cache": True, cache_kwarg(lm.model): past}


def _rows_per_layer(cache: Any, rows: torch.Tensor, running: Callable[[int], int]) -> None:
    """Layer j of ``cache`` keeps rows ``rows[:running(j)]``, the rows whose attention block j runs;
    a layer no row runs keeps one (an empty layer reads as no past at all)."""
    for j, layer in enumerate(cache.layers):
        layer.batch_select_indices(rows[: max(1, running(j))])


@contextlib.contextmanager
def replay_blocks(lm: LM, recorded: TraceDict, starts: int | Sequence[int], rows: torch.Tensor, first: int):
    """Row i of the batch is recorded row ``rows[i]`` up to block ``starts[i]`` (one block for all rows,
    or one per row, non-decreasing): blocks below a row's start return its recorded output (positions
    ``first``..) unrun. Each block runs only the rows that start at or below it, a prefix of the batch,
    and the others take the recorded output."""
    starts = [starts] * len(rows) if isinstance(starts, int) else list(starts)
    if starts != sorted(starts) or len(starts) != len(rows):
        raise ValueError("rows must be ordered by the block they start at")
    with contextlib.ExitStack() as stack:
        for b in range(lm.n_layers):
            run = bisect.bisect_right(starts, b)
            if run == len(rows):
                continue
            name = lm.arch.layer(b)
            cached = recorded[name]
            value = cached.output[rows[run:]][:, first:]
            module = get_module(lm.model, name)
            if run == 0:
                forward = lambda *a, _c=cached, _v=value, **k: replace_first(_c.raw_output, _v)  # noqa: E731
            else:
                forward = _first_rows_only(module.forward, run, lambda head, n, _v=value: _v)
            stack.enter_context(override_forward(module, forward))
        yield


class Stages:
    """A batch whose row 0 is the unchanged run and whose other rows come in groups, each equal to
    row 0 up to some block (``starts``, non-decreasing) and changed from inside that block on.
    Because rows are ordered by start, the rows that can differ at block j are a prefix of the batch:
    ``computed_at(j)`` of them (row 0 always among them)."""

    def __init__(self, starts: list[int], sizes: list[int]):
        if list(starts) != sorted(starts) or len(starts) != len(sizes):
            raise ValueError("stages must be ordered by their start block")
        self.starts, self.sizes = list(starts), list(sizes)
        self.total = 1 + sum(sizes)

    def computed_at(self, block: int) -> int:
        """Rows changed at or before ``block``, and row 0: those the block must compute."""
        return 1 + sum(n for s, n in zip(self.starts, self.sizes) if s <= block)

    def changed_below(self, block: int) -> int:
        """Rows changed below ``block``, and row 0: those whose inputs to the block may differ."""
        return 1 + sum(n for s, n in zip(self.starts, self.sizes) if s < block)

    def offset(self, group: int) -> int:
        """The first row of ``group``."""
        return 1 + sum(self.sizes[:group])


def _first_rows(x: Any, n: int, batch: int) -> Any:
    """``x`` (a module's argument) cut to the batch's first n rows, wherever it has a batch axis.

    The assumption, about how transformers calls a decoder block: an argument with two or more axes
    whose first has the batch's size is per row (hidden states [B, T, d], attention masks [B, 1, T, S],
    position ids [B, T], rotary cos / sin [B, T, r]) and is cut; anything else is shared by the rows
    and passed whole (cache_position [T], a cache object, flags). A shared tensor whose first axis
    happens to equal the batch size would be cut wrongly; none exists in the families of the
    architecture table, and tests/methods/test_trace.py and test_attribute.py compare every family's fast
    path with the reference, which would show it."""
    if isinstance(x, torch.Tensor):
        return x[:n] if x.dim() >= 2 and x.shape[0] == batch else x
    if isinstance(x, (tuple, list)):
        return type(x)(_first_rows(v, n, batch) for v in x)
    return x


def _first_rows_only(orig, run: int, rest: Callable[[torch.Tensor, int], torch.Tensor]):
    """A forward that runs ``orig`` on the batch's first ``run`` rows only; ``rest(head, n)`` gives the
    output of the other n rows (a recording of them, or a copy of row 0 of ``head``)."""
    def forward(*args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        batch = hidden.shape[0]
        if run >= batch:
            return orig(*args, **kwargs)
        out = orig(*_first_rows(args, run, batch), **{k: _first_rows(v, run, batch) for k, v in kwargs.items()})
        head = out[0] if isinstance(out, (tuple, list)) else out
        return replace_first(out, torch.cat([head, rest(head, batch - run).to(head.dtype)], 0))
    return forward


def _like_row_0(head: torch.Tensor, n: int) -> torch.Tensor:
    """n rows equal to row 0 (the unchanged run), as a constant."""
    return head[:1].detach().expand(n, *head.shape[1:])


def _changed_column_only(orig, compute: int, column: int):
    """A position-wise projection whose rows from ``compute`` on differ from row 0 at one column only:
    that column is computed for them and the others copied from row 0."""
    def forward(x, *args, **kwargs):
        batch, width = x.shape[:2]
        if width == 1 or compute >= batch:
            return orig(x, *args, **kwargs)
        head = orig(x[:compute], *args, **kwargs)
        changed = orig(x[compute:, column : column + 1], *args, **kwargs)
        same = _like_row_0(head, batch - compute)
        return torch.cat([head, torch.cat([same[:, :column], changed, same[:, column + 1 :]], 1)], 0)
    return forward


@contextlib.contextmanager
def staged_blocks(lm: LM, stages: Stages, column: int):
    """Every block computes only the rows that can differ from row 0 there; the others copy row 0.
    Rows whose change starts inside block j, at position ``column`` of the input of the MLP's output
    projection (where a knowledge-neuron activation lives), also copy row 0's attention and first MLP
    projection in that block, both before the change, and get the output projection computed at that
    position only."""
    copy_row_0 = lambda f, n: _first_rows_only(f, n, _like_row_0)  # noqa: E731
    with contextlib.ExitStack() as stack:
        for j in range(lm.n_layers):
            parts = [("hidden", copy_row_0, stages.computed_at(j))]
            if stages.changed_below(j) < stages.computed_at(j):  # some group starts here
                parts += [("attn", copy_row_0, stages.changed_below(j))]
                if not lm.arch.mlp_flat:  # OPT's MLP sees [rows x positions, d]: no row axis to cut, run whole
                    parts += [("mlp_in", copy_row_0, stages.changed_below(j)),
                              ("mlp_out", lambda f, n: _changed_column_only(f, n, column), stages.changed_below(j))]
            for kind, wrap, compute in parts:
                module = get_module(lm.model, lm.arch.module(kind, j))
                stack.enter_context(override_forward(module, wrap(module.forward, compute)))
        yield


def staged_cache(lm: LM, cache: Any, stages: Stages) -> dict:
    """Model kwargs continuing from ``cache`` (one run's keys and values of the positions before the
    recomputed ones), layer j holding a copy for each row whose attention block j computes. ``cache``
    is changed in place."""
    if cache is None:
        return {"use_cache": False}
    device = cache.layers[0].keys.device
    _rows_per_layer(cache, torch.zeros(stages.total, dtype=torch.long, device=device), stages.changed_below)
    return {"use_cache": True, cache_kwarg(lm.model): cache}
