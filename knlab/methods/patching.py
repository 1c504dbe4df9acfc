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
from knlab.methods.corruption import SubjectCorruption
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
                   kinds: Iterable[str] = KINDS, progress=None, corruption: str = "noise",
                   replacement: str | None = None, metric: str = "prob") -> PatchEstimate:
    """Attribution-patching estimate of ``trace(lm, prompt, subject, ...)`` with the same arguments: for every
    (token, layer) and kind, m_c + (clean - corrupted) . dm/dh, averaged over the same noise samples, m the
    trace's metric (p(answer), or the logit difference) and the corrupted run the trace's (the same noise
    draws, or the same replacement subject).

    Cells that cannot change p(answer) (``trace.cannot_change``) are exactly the corrupted p, as in the trace."""
    st = prepare(lm, prompt, subject, answer, samples, window, noise, kinds, corruption, replacement, metric)
    kinds, window, level, enc, (s0, s1), ans, aid = (st.kinds, st.window, st.noise, st.enc, st.subject_range,
                                                      st.answer, st.answer_id)
    ids, pos = enc.input_ids, enc.position
    T, L = ids.shape[1], lm.n_layers
    names = [module_name(lm, k, l) for k in kinds for l in range(L)]

    # the corruption exactly as restored_probs makes it (same seed: the same noise draws)
    swap = st.replacement is not None
    corruptor = (SubjectCorruption.replacement(lm, st.replacement, (s0, s1)) if swap
                 else SubjectCorruption.noise(lm, samples, (s0, s1), level, seed))
    samples = corruptor.samples

    def corrupt(x, _name):
        # the parameters need no gradient; the corrupted run's states do (everything downstream of here)
        return corruptor.apply(x).requires_grad_(True)

    foil = [None]

    def score(logits_at_pos: torch.Tensor) -> torch.Tensor:
        """The trace's metric of each row (``trace.restored_probs``'s, in the probability dtype)."""
        z = logits_at_pos.to(_prob_dtype(logits_at_pos.dtype))
        if metric == "logit_diff":
            return z[:, aid] - z[:, foil[0]]
        return torch.softmax(z, -1)[:, aid]

    # clean run: p(answer) and every state a cell restores
    with torch.no_grad(), TraceDict(lm.model, names) as td:
        clean_logits = lm.model(input_ids=ids, use_cache=False).logits[:, pos]
    clean = {m: td[m].output[0] for m in names}  # [T, d]

    # corrupted run, one row per sample, with the graph kept from the noisy embeddings on
    with torch.enable_grad():
        with Trace(lm.model, lm.arch.embed, retain_output=False, edit_output=corrupt), \
                TraceDict(lm.model, names, detach=False) as td:
            logits = lm.model(input_ids=ids.expand(samples, T), use_cache=False).logits
        mean_p = torch.softmax(logits[:, pos].detach().float(), -1).mean(0)
        mean_p[aid] = -1.0
        foil[0] = int(mean_p.argmax())  # the corrupted run's answer (logit_diff subtracts its logit)
        p = score(logits[:, pos])  # [samples]
        states = [td[m].output for m in names]  # [samples, T, d], in the graph
        # one backward: row s of the sum depends only on sample s, so each row gets its own dp_s/dh_s
        grads = torch.autograd.grad(p.sum(), states, allow_unused=True)
    corrupted_p = p.mean().item()
    with torch.no_grad():
        clean_p = score(clean_logits).item()

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
                         grids, samples, window, level, seed, lm.weights_dtype, corruption,  # no autocast: the weights' dtype
                         replacement.strip() if swap else None, metric,
                         lm.tokenizer.decode([foil[0]]).strip() if metric == "logit_diff" else None,
                         device=str(lm.device))


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
