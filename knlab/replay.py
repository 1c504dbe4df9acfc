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
