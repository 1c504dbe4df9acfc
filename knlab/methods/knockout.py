"""Attention knockout (Geva et al. 2023, "Dissecting Recall of Factual Associations"): cut attention edges
from the prediction position to a set of positions, in a window of layers, and see how much p(answer)
drops. Cutting last -> subject in the upper-middle layers drops it most: that is where the attribute is
read out of the subject; cutting last -> non-subject or last -> last drops it far less.

One mechanism for every family: each attention module gets its ``attention_mask`` argument replaced
(``nethook.edit_argument``) by the mask it would have used with the blocked edges added as -inf-like
entries. Every family's attention takes that argument and adds it to its scores (eager) or hands it to
``scaled_dot_product_attention`` (sdpa), so no attention code is copied per family. A layer with nothing
blocked gets no hook at all, so a run with no edge blocked *is* the plain forward pass.

All (layer window, edge set) configurations run as rows of one batch, each row with its own mask;
``tests/reference/knockout.py`` is the straightforward loop (one forward per configuration) it must equal.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.nethook import edit_argument, get_module
from knlab.methods.predict import encode
from knlab.methods.trace import answer_for, default_window, locate_subject, restore_window

# the edge sets of Geva et al.'s Fig. 2 / 3: from the prediction position to ...
EDGE_SETS = ("subject", "non-subject", "last")
EDGE_LABELS = {"subject": "last -> subject", "non-subject": "last -> non-subject", "last": "last -> last"}
MAX_ROWS = 96  # rows of one forward pass (a knockout prompt is short: ~10 positions)

Blocked = dict[int, Sequence[int]]  # layer -> the positions the prediction position may not attend to


def edge_targets(edge_set: str, subject_range: tuple[int, int], position: int, n_tokens: int,
                 masked: bool) -> list[int]:
    """The positions whose edges from ``position`` the edge set cuts. ``non-subject`` is every other
    position the prediction position can see (a causal model's earlier ones; a masked model's all),
    neither the subject's nor its own."""
    s0, s1 = subject_range
    if edge_set == "subject":
        return list(range(s0, s1))
    if edge_set == "last":
        return [position]
    if edge_set == "non-subject":
        seen = range(n_tokens) if masked else range(position + 1)
        return [j for j in seen if not s0 <= j < s1 and j != position]
    raise InputError(f"unknown edge set {edge_set!r} ({', '.join(EDGE_SETS)})")


def _with_blocked(mask: torch.Tensor | None, blocked: torch.Tensor, causal: bool, dtype: torch.dtype) -> torch.Tensor:
    """The additive attention mask [rows, 1, T, T]: the one the model passed (None, boolean "may attend",
    or additive float) with the ``blocked`` [rows, T, T] edges set to the dtype's minimum. Where the
    model passed None, its attention builds its mask itself (sdpa's ``is_causal``), so the causal part is
    written here; a masked model's is all zeros."""
    T = blocked.shape[-1]
    dtype = mask.dtype if mask is not None and mask.is_floating_point() else dtype
    neg = torch.finfo(dtype).min
    if mask is None:
        allowed = torch.ones(T, T, dtype=torch.bool, device=blocked.device)
        base = torch.zeros(T, T, dtype=dtype, device=blocked.device).masked_fill(~allowed.tril() if causal
                                                                                  else ~allowed, neg)
        base = base[None, None]
    elif mask.dtype == torch.bool:
        base = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, neg)
    else:
        base = mask
    base = base[..., -T:, -T:]
    return torch.where(blocked[:, None], torch.tensor(neg, dtype=dtype, device=blocked.device), base)


@contextlib.contextmanager
def blocking(lm: LM, per_layer: dict[int, torch.Tensor]):
    """Within the block, layer l's attention cannot use the edges ``per_layer[l]`` ([rows, T, T] booleans,
    query x key) marks; rows are the batch's. Layers not in ``per_layer`` are untouched."""
    with contextlib.ExitStack() as stack:
        for l, blocked in per_layer.items():
            module = get_module(lm.model, lm.arch.module("attn", l))
            stack.enter_context(edit_argument(
                module, "attention_mask",
                lambda m, b=blocked: _with_blocked(m, b, not lm.masked, lm.model.dtype)))
        yield


def knocked_probs(lm: LM, input_ids: torch.Tensor, position: int, answer_id: int, configs: Sequence[Blocked],
                  max_rows: int = MAX_ROWS, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """p(answer) at ``position`` with each configuration's edges cut (one batch row per configuration);
    an empty configuration is the plain forward pass."""
    T = input_ids.shape[1]
    out = np.zeros(len(configs))
    with torch.no_grad():
        for start in range(0, len(configs), max_rows):
            chunk = configs[start : start + max_rows]
            R = len(chunk)
            per_layer: dict[int, torch.Tensor] = {}
            for r, cfg in enumerate(chunk):
                for l, targets in cfg.items():
                    if len(targets):
                        if l not in per_layer:
                            per_layer[l] = torch.zeros(R, T, T, dtype=torch.bool, device=lm.device)
                        per_layer[l][r, position, list(targets)] = True
            with blocking(lm, per_layer):
                logits = lm.model(input_ids=input_ids.expand(R, T), use_cache=False).logits
            p = torch.softmax(logits[:, position].float(), -1)[:, answer_id]
            out[start : start + R] = p.cpu().numpy()
            if progress:
                progress(min(1.0, (start + R) / len(configs)))
    return out


@dataclass
class KnockoutResult:
    """p(answer) with each edge set cut in the window around each layer, and its change relative to the
    clean run (Geva et al.'s Fig. 2 / 3: % change of the prediction's probability)."""

    model: str
    prompt: str
    tokens: list[str]
    subject_range: tuple[int, int]
    answer: str
    answer_id: int
    position: int
    clean: float
    window: int
    probs: dict[str, np.ndarray]  # edge set -> [layers] p(answer)

    def change(self, edge_set: str) -> np.ndarray:
        """(p knocked - p clean) / p clean, per layer."""
        return (self.probs[edge_set] - self.clean) / self.clean

    def strongest(self, edge_set: str = "subject") -> tuple[int, float]:
        """The layer (window centre) where cutting ``edge_set`` drops p(answer) most, and that change."""
        c = self.change(edge_set)
        return int(c.argmin()), float(c.min())

    def to_json(self) -> dict:
        return {"model": self.model, "prompt": self.prompt, "tokens": self.tokens,
                "subject_range": list(self.subject_range), "answer": self.answer, "position": self.position,
                "clean": self.clean, "window": self.window,
                "probs": {k: v.tolist() for k, v in self.probs.items()},
                "change": {k: self.change(k).tolist() for k in self.probs}}


def knockout(lm: LM, prompt: str, subject: str, answer: str | None = None, window: int | None = None,
             edge_sets: Iterable[str] = EDGE_SETS, progress: Callable[[float], None] | None = None) -> KnockoutResult:
    """Geva et al.'s attention knockout of ``prompt``: for each layer and edge set, p(answer) with the
    prediction position's edges to that set cut in the ``window`` layers around it (default: the trace's
    window, a fifth of the depth; Geva et al. cut 9 of GPT-2 XL's 48). ``answer``: the model's top
    prediction unless given. On a masked model the prediction position is the [MASK]."""
    edge_sets = tuple(edge_sets)
    if not edge_sets:
        raise InputError("choose at least one edge set")
    L = lm.n_layers
    if window is None:
        window = default_window(L)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= L:
        raise InputError(f"window must be a whole number from 1 to {L}")
    enc = encode(lm, prompt)
    T, pos = enc.input_ids.shape[1], enc.position
    rng = locate_subject(lm, prompt, subject)
    if rng[0] <= pos < rng[1]:
        raise InputError("the prediction position is inside the subject: nothing to cut between them")
    ans, aid = answer_for(lm, prompt, answer)
    targets = {e: edge_targets(e, rng, pos, T, lm.masked) for e in edge_sets}
    configs: list[Blocked] = [{j: targets[e] for j in restore_window(l, window, L)}
                              for e in edge_sets for l in range(L)]
    clean = float(knocked_probs(lm, enc.input_ids, pos, aid, [{}])[0])  # the plain forward pass
    p = knocked_probs(lm, enc.input_ids, pos, aid, configs, progress=progress)
    probs = {e: p[k * L : (k + 1) * L] for k, e in enumerate(edge_sets)}
    return KnockoutResult(lm.spec, prompt.strip(), enc.tokens, rng, ans, aid, pos, clean, window, probs)
