"""Continuing a recorded run for a batch of rows that differ from it only from some block / position on:
the shared mechanism behind fast causal tracing (rows = corrupted samples) and fast integrated
gradients (rows = copies of the clean run). Blocks below the first changed one return their recorded
output instead of recomputing it; positions before the first changed one come from the recorded keys
and values."""

from __future__ import annotations

import contextlib
import copy
import inspect
from typing import Any

import torch

from knlab.models import LM
from knlab.nethook import TraceDict, get_module, override_forward, replace_first


def cache_kwarg(model: torch.nn.Module) -> str:
    """transformers is renaming ``past_key_values`` to ``cache``; use whichever this model takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


def prefix_kwargs(lm: LM, cache: Any, keep: int, total: int, rows: torch.Tensor) -> dict:
    """Model kwargs that start a forward pass at position ``keep``: the recorded cache cut to its first
    ``keep`` positions, with recorded row ``rows[i]`` as batch row i."""
    if keep == 0 or cache is None:
        return {"use_cache": False}
    past = copy.deepcopy(cache)
    past.crop(keep - total)  # a negative crop drops that many positions from the end
    past.batch_select_indices(rows)
    return {"use_cache": True, cache_kwarg(lm.model): past}


@contextlib.contextmanager
def replay_blocks(lm: LM, recorded: TraceDict, upto: int, rows: torch.Tensor, first: int):
    """Blocks 0..upto-1 return their recorded outputs (rows ``rows``, positions ``first``..) unrun."""
    with contextlib.ExitStack() as stack:
        for b in range(upto):
            name = lm.arch.layer(b)
            cached = recorded[name]
            value = cached.output[rows][:, first:]
            stack.enter_context(override_forward(get_module(lm.model, name),
                                                 lambda *a, _c=cached, _v=value, **k: replace_first(_c.raw_output, _v)))
        yield


class Stages:
    """A batch whose rows come in groups, each group equal to the recorded run up to some block
    (``starts``, non-decreasing) and changed from inside that block on. Because rows are ordered by
    start, the rows that can differ at block j are a prefix of the batch: ``upto(j)`` of them."""

    def __init__(self, starts: list[int], sizes: list[int]):
        if list(starts) != sorted(starts) or len(starts) != len(sizes):
            raise ValueError("stages must be ordered by their start block")
        self.starts, self.sizes = list(starts), list(sizes)
        self.total = sum(sizes)

    def upto(self, block: int) -> int:
        """Rows changed at or before ``block``: those the block must compute."""
        return sum(n for s, n in zip(self.starts, self.sizes) if s <= block)

    def before(self, block: int) -> int:
        """Rows changed below ``block``: those whose inputs to the block differ from the recording."""
        return sum(n for s, n in zip(self.starts, self.sizes) if s < block)


def _first_rows(x: Any, n: int, batch: int) -> Any:
    """``x`` (a block's argument) cut to the batch's first n rows, wherever it has a batch axis."""
    if isinstance(x, torch.Tensor):
        return x[:n] if x.dim() >= 2 and x.shape[0] == batch else x
    if isinstance(x, (tuple, list)):
        return type(x)(_first_rows(v, n, batch) for v in x)
    return x


def _partial(orig, recorded, compute: int, first: int):
    """A forward that runs ``orig`` on the first ``compute`` rows only and gives the remaining rows
    the recorded output (positions ``first``..)."""
    def forward(*args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        batch = hidden.shape[0]
        rest = batch - compute
        if rest == 0:
            return orig(*args, **kwargs)
        tail = recorded.output[:1, first:]
        tail = tail.expand(rest, *tail.shape[1:])
        if compute == 0:
            return replace_first(recorded.raw_output, tail)
        out = orig(*_first_rows(args, compute, batch), **{k: _first_rows(v, compute, batch) for k, v in kwargs.items()})
        head = out[0] if isinstance(out, (tuple, list)) else out
        return replace_first(out, torch.cat([head, tail.to(head.dtype)], 0))
    return forward


def staged_modules(lm: LM) -> list[str]:
    """What ``staged_blocks`` needs recorded: every block and, inside it, the attention and the MLP's
    first projection."""
    return [lm.arch.module(kind, j) for j in range(lm.n_layers) for kind in ("hidden", "attn", "mlp_in")]


@contextlib.contextmanager
def staged_blocks(lm: LM, recorded: TraceDict, stages: Stages, first: int):
    """Every block computes only the rows that can differ from the recorded run there; the others take
    its recorded output. Rows whose change starts inside block j (at the MLP's output projection's
    input, where a knowledge-neuron activation lives) also take the recorded attention and first MLP
    projection of that block: both come before the change."""
    with contextlib.ExitStack() as stack:
        for j in range(lm.n_layers):
            parts = [("hidden", stages.upto(j)), ("attn", stages.before(j)), ("mlp_in", stages.before(j))]
            for kind, compute in parts:
                if kind != "hidden" and stages.upto(j) == compute:
                    continue  # no row starts here
                name = lm.arch.module(kind, j)
                module = get_module(lm.model, name)
                stack.enter_context(override_forward(module, _partial(module.forward, recorded[name], compute, first)))
        yield


def staged_cache(lm: LM, cache: Any, keep: int, total: int, stages: Stages) -> dict:
    """The recorded keys and values of the first ``keep`` positions, layer j holding one copy per row
    whose attention block j computes (``stages.before(j)``): the staged counterpart of ``prefix_kwargs``."""
    if keep == 0 or cache is None:
        return {"use_cache": False}
    past = copy.deepcopy(cache)
    past.crop(keep - total)
    for j, layer in enumerate(past.layers):
        # a layer whose attention runs on no row keeps one (an empty cache would read as no past)
        rows = max(1, stages.before(j))
        layer.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=layer.keys.device))
    return {"use_cache": True, cache_kwarg(lm.model): past}
