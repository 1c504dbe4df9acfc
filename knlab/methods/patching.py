"""Attribution patching: a first-order preview of causal tracing (docs/paper.md section 4).

Causal tracing restores one clean state (or a window of module outputs) in the corrupted run and measures
p(answer) again: one forward pass per cell. Attribution patching (Nanda 2023; Kramar et al., "AtP*", 2024)
linearises that: for a corrupted run c and the clean run x, restoring state h is estimated as

    p_c + (h_x - h_c) . dp/dh      (dp/dh on the corrupted run; a window of module outputs sums its terms)

so one clean forward, one corrupted forward and one backward give every cell of all three grids. The
corrupted runs are exactly the trace's (same noise level, same seed, same draws), so an estimate and an
exact trace of the same prompt can be compared cell by cell; ``agreement`` does that. The estimate is
exact for linear effects and can miss saturating ones (it is not even bounded to [0, 1]): report its
agreement with the exact trace rather than assume it.

Two things to expect. At the published noise (3 sd) the clean run is far from the corrupted one and
p saturates, so the estimate mostly underestimates the large restorations while ranking cells much as the
trace does. At small noise, averaged over samples, the first-order terms of the zero-mean noise cancel and
the trace's effects are second order; there the estimate (linearised at the corrupted point) comes out
about twice the exact effect. And where a window's modules each carry the whole residual stream (BERT's
attention output is post-LayerNorm), the window's terms add up the same restoration several times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.nethook import Trace, TraceDict
from knlab.methods.corruption import add_subject_noise, subject_noise
from knlab.methods.trace import (KINDS, TraceResult, cannot_change, grid_cells, module_name,
                                prepare)

METHOD = "attribution patching"


@dataclass
class PatchEstimate(TraceResult):
    """A ``TraceResult`` whose grids are first-order estimates of p(answer), not measured restorations.

    Plots and the UI draw it as a trace; ``to_json`` is the trace's plus ``"method"``."""

    method: str = METHOD

    def to_json(self) -> dict:
        out = super().to_json()
        out["method"] = self.method
        return out


def _prob_dtype(dtype: torch.dtype) -> torch.dtype:
    """p(answer) in float32, or in the model's own precision where that is higher (float64 tests)."""
    return torch.promote_types(dtype, torch.float32)


def patch_estimate(lm: LM, prompt: str, subject: str, answer: str | None = None, samples: int = 10,
                   window: int | None = None, noise: float | str | None = None, seed: int = 0,
                   kinds: Iterable[str] = KINDS, progress=None) -> PatchEstimate:
    """Attribution-patching estimate of ``trace(lm, prompt, subject, ...)`` with the same arguments: for every
    (token, layer) and kind, p_c + (clean - corrupted) . dp/dh, averaged over the same noise samples.

    Cells that cannot change p(answer) (``trace.cannot_change``) are exactly the corrupted p, as in the trace."""
    st = prepare(lm, prompt, subject, answer, samples, window, noise, kinds)
    kinds, window, level, enc, (s0, s1), ans, aid = (st.kinds, st.window, st.noise, st.enc, st.subject_range,
                                                      st.answer, st.answer_id)
    ids, pos = enc.input_ids, enc.position
    T, L = ids.shape[1], lm.n_layers
    names = [module_name(lm, k, l) for k in kinds for l in range(L)]

    # the noise exactly as restored_probs draws it (same seed: the same draws)
    noise_t = subject_noise(lm, samples, (s0, s1), level, seed)

    def corrupt(x, _name):
        # the parameters need no gradient; the corrupted run's states do (everything downstream of here)
        return add_subject_noise(x, noise_t, (s0, s1)).requires_grad_(True)

    # clean run: p(answer) and every state a cell restores
    with torch.no_grad(), TraceDict(lm.model, names) as td:
        logits = lm.model(input_ids=ids, use_cache=False).logits
    clean_p = torch.softmax(logits[0, pos].to(_prob_dtype(logits.dtype)), -1)[aid].item()
    clean = {m: td[m].output[0] for m in names}  # [T, d]

    # corrupted run, one row per sample, with the graph kept from the noisy embeddings on
    with torch.enable_grad():
        with Trace(lm.model, lm.arch.embed, retain_output=False, edit_output=corrupt), \
                TraceDict(lm.model, names, detach=False) as td:
            logits = lm.model(input_ids=ids.expand(samples, T), use_cache=False).logits
        p = torch.softmax(logits[:, pos].to(_prob_dtype(logits.dtype)), -1)[:, aid]  # [samples]
        states = [td[m].output for m in names]  # [samples, T, d], in the graph
        # one backward: row s of the sum depends only on sample s, so each row gets its own dp_s/dh_s
        grads = torch.autograd.grad(p.sum(), states, allow_unused=True)
    corrupted_p = p.mean().item()

    # per module output: the first-order term of restoring it at each token, averaged over samples
    terms: dict[str, np.ndarray] = {}
    for m, h, g in zip(names, states, grads):
        if g is None:  # nothing downstream reads this output
            terms[m] = np.zeros(T)
            continue
        dt = _prob_dtype(g.dtype)
        delta = clean[m].to(dt)[None] - h.detach().to(dt)
        terms[m] = (delta * g.to(dt)).sum(-1).mean(0).cpu().numpy()  # [T]

    grids = {}
    for k in kinds:
        grid = np.full((T, L), corrupted_p)
        for t in range(T):
            for l in range(L):
                cells = [c for c in grid_cells(k, t, l, window, L) if not cannot_change(c, s0, pos, L, lm.masked)]
                if cells:
                    grid[t, l] = corrupted_p + sum(float(terms[module_name(lm, kk, j)][tt]) for kk, j, tt in cells)
        grids[k] = grid
    if progress:
        progress(1.0)
    return PatchEstimate(lm.spec, prompt.strip(), enc.tokens, (s0, s1), ans, aid, pos, clean_p, corrupted_p,
                         grids, samples, window, level, seed,
                         lm.weights_dtype, str(lm.device))  # no autocast: the weights' own dtype


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson's r, or None where it is undefined (a grid with no variation)."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    if not np.isfinite(den) or den <= 1e-300:
        return None
    return float((a * b).sum() / den)


def agreement(estimate: TraceResult, exact: TraceResult) -> dict:
    """How well an estimate (``patch_estimate``) agrees with an exact trace (``trace``) of the same prompt:
    Pearson's r between the grids, flattened, per kind both have, and ``"overall"`` over all their cells
    together. ``None`` where r is undefined (a grid that does not vary)."""
    kinds = [k for k in KINDS if k in estimate.grids and k in exact.grids]
    if not kinds:
        raise InputError("the two results have no grid kind in common")
    for k in kinds:
        if estimate.grids[k].shape != exact.grids[k].shape:
            raise InputError(f"the {k} grids differ in shape ({estimate.grids[k].shape} vs "
                             f"{exact.grids[k].shape}): not the same prompt and model")
    out: dict = {k: _pearson(estimate.grids[k], exact.grids[k]) for k in kinds}
    out["overall"] = _pearson(np.concatenate([estimate.grids[k].ravel() for k in kinds]),
                              np.concatenate([exact.grids[k].ravel() for k in kinds]))
    return out
