"""Does the trace tell you where to edit? (Hase et al., "Does Localization Inform Editing?", NeurIPS 2023.)

For one fact, ROME at each layer of a grid gives the rewrite score per layer,
(p_new after - p_new before) / (1 - p_new before) on the edit prompt, beside the causal trace's effect
per layer at the subject's last token (the MLP window restored, as knlab's trace; and the hidden state).
Hase et al. found the two barely related: which layer you edit explains edit success far better than
the tracing effect does.

Every layer's edit is exactly the one ``edit_report.edit(lm, "rome", ..., layer=L)`` makes (the same
parameters, templates, covariance and measurement), so a row's rewrite score is the one ``knlab edit
rome --layer L`` reports. What the layers share is computed once: the clean run (p_new before), the
trace (one batched run for every layer), the context templates (ROME's own per-model cache) and the
covariances of every layer of the grid, in one pass over the corpus (``layers_stats``) or from the cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.specs import applied
from knlab.methods.corruption import noise_level
from knlab.methods.predict import check_prompt, encode, next_token_probs, top_token
from knlab.methods.rome import params_for, rome
from knlab.methods.rome.layer_stats import layers_stats
from knlab.methods.trace import default_window, grid_cells, locate_subject, restored_probs
from knlab.studies.edit_report import check_new_target
from knlab.world.covariance_texts import covariance_corpus

TRACE_SAMPLES = 10


def rewrite_score(before: float, after: float) -> float:
    """Hase et al.'s rewrite score: the share of the way from p_new before to 1 that the edit went."""
    return (after - before) / (1.0 - before) if before < 1.0 else 0.0


def check_layers(lm: LM, layers: Sequence[int] | str | None) -> list[int]:
    """The grid: every layer (None), a list, or "0,3,6" as typed; sorted, each once."""
    if layers is None or (isinstance(layers, str) and not layers.strip()):
        return list(range(lm.n_layers))
    if isinstance(layers, str):
        try:
            layers = [int(x) for x in layers.replace(" ", "").split(",") if x]
        except ValueError:
            raise InputError(f"layers must be whole numbers separated by commas, like 0,3,6, not {layers!r}") from None
    out = sorted({int(l) for l in layers})
    if not out or out[0] < 0 or out[-1] >= lm.n_layers:
        raise InputError(f"layers must be from 0 to {lm.n_layers - 1}")
    return out


def every(lm: LM, step: int) -> list[int]:
    """Every ``step``-th layer, from 0 (a coarse grid)."""
    return list(range(0, lm.n_layers, max(1, step)))


def trace_effects(lm: LM, prompt: str, subject: str, answer_id: int, samples: int = TRACE_SAMPLES,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """The causal trace's indirect effect per layer at the subject's last token: (MLP window restored,
    hidden state restored, window), one batched trace (knlab's noise, 3 sd; knlab's window)."""
    L = lm.n_layers
    rng = locate_subject(lm, prompt, subject)
    t = rng[1] - 1
    window = default_window(L)
    configs = [grid_cells("mlp", t, l, window, L) for l in range(L)] + [[("hidden", l, t)] for l in range(L)]
    res = restored_probs(lm, prompt, rng, answer_id, configs, samples, noise_level(lm), seed)
    effect = np.asarray(res.probs) - res.corrupted
    return effect[:L], effect[L:], window


@dataclass
class SweepResult:
    """ROME's rewrite score at each layer of a grid, and the trace's effect at every layer."""

    model: str
    prompt: str
    subject: str
    old: str
    new: str
    p_new_before: float
    layers: list[int]
    p_new_after: np.ndarray  # [grid]
    rewrite: np.ndarray  # [grid]
    trace_mlp: np.ndarray  # [n_layers] indirect effect, MLP window restored at the last subject token
    trace_hidden: np.ndarray  # [n_layers] indirect effect, hidden state restored there
    window: int
    samples: int
    seconds: dict = field(default_factory=dict)

    @property
    def trace_peak(self) -> int:
        """The layer whose MLP window restores most: where the trace says the fact is."""
        return int(np.argmax(self.trace_mlp))

    @property
    def best_layer(self) -> int:
        """The grid layer where ROME's edit rewrites most."""
        return self.layers[int(np.argmax(self.rewrite))]

    def rows(self) -> list[dict]:
        return [{"layer": l, "rewrite_score": round(float(r), 6), "p_new_after": round(float(p), 6),
                 "trace_effect": round(float(self.trace_mlp[l]), 6),
                 "trace_hidden_effect": round(float(self.trace_hidden[l]), 6)}
                for l, r, p in zip(self.layers, self.rewrite, self.p_new_after)]

    def to_json(self) -> dict:
        return {"model": self.model, "prompt": self.prompt, "subject": self.subject, "old": self.old,
                "new": self.new, "p_new_before": round(self.p_new_before, 6), "window": self.window,
                "samples": self.samples, "trace_peak": self.trace_peak, "best_layer": self.best_layer,
                "rows": self.rows(), "trace_mlp": [round(float(x), 6) for x in self.trace_mlp],
                "trace_hidden": [round(float(x), 6) for x in self.trace_hidden],
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}


@dataclass
class SweepPlan:
    """What every layer's edit of one sweep shares, computed once (``prepare``): the checked fact, p_new
    before, the trace and ROME's parameters (each layer's covariance is then in the cache). Small: the app
    sends it with every layer's request, across ZeroGPU's process boundary, so it names the covariance's
    corpus (``params.mom2_corpus``) rather than carrying its texts (megabytes)."""

    prompt: str
    subject: str
    old: str
    new: str
    new_id: int
    p_new_before: float
    layers: list[int]
    trace_mlp: np.ndarray
    trace_hidden: np.ndarray
    window: int
    samples: int
    params: object  # RomeParams
    seconds: dict = field(default_factory=dict)


def prepare(lm: LM, prompt: str, subject: str, target: str, layers: Sequence[int] | str | None = None,
            samples: int = TRACE_SAMPLES, progress: Callable[[float, str], None] | None = None,
            mom2: bool = True) -> SweepPlan:
    """Check the fact, measure p_new before, trace it, and bring every grid layer's key covariance into the
    cache (one pass over the corpus for those missing)."""
    if lm.masked:
        raise InputError(f"ROME edits causal language models; {lm.spec} is a masked model")
    prompt = check_prompt(prompt)
    if not isinstance(subject, str) or not subject.strip() or subject.strip() not in prompt:
        raise InputError(f"the subject {subject!r} is not in the prompt {prompt!r}" if isinstance(subject, str)
                         and subject.strip() else "the subject is empty")
    subject = subject.strip()
    grid = check_layers(lm, layers)
    base = next_token_probs(lm, encode(lm, prompt))
    old_id, old = top_token(lm, base)
    new_id = check_new_target(lm, target, old)
    params = params_for(lm, mom2=bool(mom2))
    corpus = covariance_corpus(params.mom2_corpus) if params.mom2 else None
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if progress:
        progress(0.0, "tracing the fact")
    trace_mlp, trace_hidden, window = trace_effects(lm, prompt, subject, old_id, samples)
    seconds["trace"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if corpus is not None:  # every layer's key covariance in one pass (or from the cache)
        layers_stats(lm, grid, corpus, tokens=params.mom2_tokens,
                     progress=(lambda f: progress(f, "key covariances (once per model and layer)")) if progress else None)
    seconds["covariance"] = time.perf_counter() - t0
    return SweepPlan(prompt, subject, old, target.strip(), new_id, float(base[new_id]), grid, trace_mlp,
                     trace_hidden, window, samples, params, seconds)


def edit_at(lm: LM, plan: SweepPlan, layer: int) -> float:
    """p_new on the edit prompt after ROME at ``layer`` (the edit undone on return): exactly the edit and the
    measurement of ``edit_report.edit(lm, "rome", ..., layer=layer)``."""
    corpus = covariance_corpus(plan.params.mom2_corpus) if plan.params.mom2 else None  # as edit_report's
    res = rome(lm, plan.prompt, plan.subject, plan.new, layer, params=plan.params, corpus=corpus)
    with applied(lm, [res.edit]):
        return float(next_token_probs(lm, encode(lm, plan.prompt))[plan.new_id])


def finish(lm_spec: str, plan: SweepPlan, after: Sequence[float], edit_seconds: float = 0.0) -> SweepResult:
    """The sweep's result from its plan and each grid layer's p_new after."""
    if len(after) != len(plan.layers):
        raise InputError(f"{len(after)} edits for a grid of {len(plan.layers)} layers")
    after = np.asarray(after, dtype=float)
    rewrite = np.array([rewrite_score(plan.p_new_before, a) for a in after])
    return SweepResult(lm_spec, plan.prompt, plan.subject, plan.old, plan.new, plan.p_new_before, plan.layers,
                       after, rewrite, plan.trace_mlp, plan.trace_hidden, plan.window, plan.samples,
                       {**plan.seconds, "edits": edit_seconds})


def sweep(lm: LM, prompt: str, subject: str, target: str, layers: Sequence[int] | str | None = None,
          samples: int = TRACE_SAMPLES, progress: Callable[[float, str], None] | None = None,
          mom2: bool = True) -> SweepResult:
    """ROME at each of ``layers`` (default: every layer) making ``prompt`` say ``target``, each edit made on
    its own and undone, and the causal trace's effect per layer, on the model as this request sees it.
    (The app runs the same three steps, ``prepare``, ``edit_at`` per layer and ``finish``, one request
    each, so that a user can stop between layers.)"""
    plan = prepare(lm, prompt, subject, target, layers, samples,
                   (lambda f, d: progress(0.3 * f, d)) if progress else None, mom2)
    t0 = time.perf_counter()
    after = []
    for k, layer in enumerate(plan.layers):
        if progress:
            progress(0.3 + 0.7 * k / len(plan.layers), f"ROME at layer {layer} ({k + 1}/{len(plan.layers)})")
        after.append(edit_at(lm, plan, layer))
    if progress:
        progress(1.0, "done")
    return finish(lm.spec, plan, after, time.perf_counter() - t0)
