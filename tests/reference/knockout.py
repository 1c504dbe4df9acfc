"""Attention knockout, the straightforward way (Geva et al. 2023, dissecting_factual_predictions).

For every layer and edge set, one forward pass of the single prompt, in which each attention module of
the window of layers around that layer is handed an explicit mask built from scratch: the causal mask
(a masked model: none) with the edges from the prediction position to the edge set's positions set to
-inf-like. Imports nothing from knlab (see __init__.py).
"""

from __future__ import annotations

import contextlib
import inspect

import numpy as np
import torch

from .trace import encode, subject_span, window_layers

EDGE_SETS = ("subject", "non-subject", "last")


def targets(edge_set, s0, s1, pos, T, masked):
    if edge_set == "subject":
        return list(range(s0, s1))
    if edge_set == "last":
        return [pos]
    return [j for j in (range(T) if masked else range(pos + 1)) if not s0 <= j < s1 and j != pos]


def explicit_mask(T, pos, cut, masked, dtype):
    """[1, 1, T, T] additive mask: 0 where attention may go, the dtype's minimum where not."""
    neg = torch.finfo(dtype).min
    mask = torch.zeros(T, T, dtype=dtype)
    if not masked:
        mask = mask.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), neg)
    mask[pos, cut] = neg
    return mask[None, None]


@contextlib.contextmanager
def mask_replaced(module, mask):
    """``module``'s ``attention_mask`` argument (by position or keyword) replaced by ``mask``."""
    names = list(inspect.signature(module.forward).parameters)
    i = names.index("attention_mask")

    def pre(_m, args, kwargs):
        if "attention_mask" in kwargs or i >= len(args):
            kwargs["attention_mask"] = mask
        else:
            args = (*args[:i], mask, *args[i + 1:])
        return args, kwargs

    h = module.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        h.remove()


@torch.no_grad()
def knockout_straightforward(lm, prompt, subject, answer_id, window):
    """(clean p(answer), {edge set: [layers] p(answer)}), one forward pass per layer and edge set."""
    ids, pos = encode(lm, prompt)
    T, L = ids.shape[1], lm.n_layers
    s0, s1 = subject_span(lm, prompt, subject)
    clean = torch.softmax(lm.model(input_ids=ids).logits[0, pos].float(), -1)[answer_id].item()
    out = {}
    for e in EDGE_SETS:
        mask = explicit_mask(T, pos, targets(e, s0, s1, pos, T, lm.masked), lm.masked, lm.model.dtype)
        row = []
        for layer in range(L):
            with contextlib.ExitStack() as stack:
                for j in window_layers(layer, window, L):
                    stack.enter_context(mask_replaced(lm.model.get_submodule(lm.arch.module("attn", j)), mask))
                logits = lm.model(input_ids=ids).logits
            row.append(torch.softmax(logits[0, pos].float(), -1)[answer_id].item())
        out[e] = np.array(row)
    return clean, out
