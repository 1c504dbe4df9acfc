"""After the paper: three follow-up results, run beside Niu et al.'s claims on the same models with the same
instruments (docs/paper.md, "After the paper"). They are not Niu et al.'s claims, and the record says so.

- ``edit-layers`` (Hase et al., NeurIPS 2023): ROME at each layer of a grid beside the causal trace; does
  the trace's peak say where to edit, and how much does the tracing effect explain of edit success
  beyond the layer itself?
- ``knockout`` (Geva et al., EMNLP 2023): cutting the prediction position's attention to the subject,
  the other positions, or itself; where the attribute is read out of the subject.
- ``trace-corruption`` (Zhang & Nanda, ICLR 2024): the early-site MLP peak under Gaussian noise and
  under symmetric token replacement.

Items are one known P36 fact each (``P36:<subject>``), as the tracing claim's are.
"""

from __future__ import annotations

import math

import numpy as np

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.methods.corruption import SubjectCorruption, noise_level, replacement_ids
from knlab.methods.knockout import EDGE_LABELS, EDGE_SETS, knockout
from knlab.methods.predict import encode, next_token_probs, top_token
from knlab.methods.trace import default_window, grid_cells, locate_subject, restored_probs
from knlab.studies import findings, published
from knlab.studies.claims.common import Items, ModelRun, Progress, tick, timed
from knlab.studies.known_facts import fact_prompt, iter_known_subjects, known_subjects, pick_replacement
from knlab.studies.relation_evaluation import counterfactual
from knlab.studies.sweep import sweep
from knlab.world import facts as F

RELATION = "P36"
MIN_EFFECT = 0.02  # as trace-syntax: a peak below two points of probability is noise, not a site
BOOTSTRAP = 1000


def _facts(lm: LM, n: int) -> list[tuple[str, str, str]]:
    """(item key, prompt, subject) of the first ``n`` P36 facts the model states."""
    rel = F.relation(RELATION)
    subjects = known_subjects(lm, RELATION, n)
    if not subjects:
        raise InputError(f"{lm.spec} states no {RELATION} fact: nothing to measure")
    return [(f"{RELATION}:{s}", fact_prompt(lm, rel.train_templates[0], s), s) for s in subjects]


# ---- edit-layers (Hase et al. 2023) ---------------------------------------------------------------------

def grid_step(n_layers: int) -> int:
    """Every layer of a small model; about eight layers of a deep one (every 4th of the real model's 30)."""
    return max(1, math.ceil(n_layers / 8))


def _sweep_item(lm: LM, prompt: str, subject: str) -> dict:
    rel = F.relation(RELATION)
    fact = rel.fact(subject)
    old = top_token(lm, next_token_probs(lm, encode(lm, prompt)))[1]
    new = counterfactual(rel, fact, {old, fact.object})
    res = sweep(lm, prompt, subject, new, list(range(0, lm.n_layers, grid_step(lm.n_layers))))
    return {"new": new, "layers": res.layers, "rewrite": [round(float(x), 6) for x in res.rewrite],
            "trace_mlp": [round(float(x), 6) for x in res.trace_mlp],
            "trace_hidden": [round(float(x), 6) for x in res.trace_hidden],
            "peak": res.trace_peak, "best": res.best_layer}


def r_squared(y: np.ndarray, X: np.ndarray) -> float:
    """R^2 of the least-squares fit of ``y`` on the columns of ``X`` (which holds its own intercept)."""
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    ss_res = float(((y - X @ beta) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0


def regression(results: list[dict]) -> dict[str, float]:
    """Hase et al.'s regression of the rewrite score, one row per (fact, edited layer): on the layer as a
    category (one-hot), on the tracing effect at that layer (with an intercept), and on both with their
    interaction, as their analysis fits it (R's ``score ~ factor(layer) * effect``, belief-localization's
    data-analysis notebook): each layer its own intercept and its own slope on the tracing effect."""
    layers = results[0]["layers"]
    y = np.array([r for res in results for r in res["rewrite"]])
    onehot = np.array([[1.0 if l == m else 0.0 for m in layers] for _res in results for l in layers])
    effect = np.array([[res["trace_mlp"][l]] for res in results for l in layers])
    ones = np.ones((len(y), 1))
    r_layer = r_squared(y, onehot)
    r_trace = r_squared(y, np.hstack([ones, effect]))
    r_both = r_squared(y, np.hstack([onehot, onehot * effect]))
    return {"layer": r_layer, "trace": r_trace, "both": r_both, "added": r_both - r_layer}


def bootstrap_added(results: list[dict], n: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """The 95% interval of the R^2 the tracing effect adds beyond the layer, facts resampled with
    replacement (a fact's layers stay together: they are one fact's edits)."""
    rng = np.random.default_rng(seed)
    added = [regression([results[i] for i in rng.integers(0, len(results), len(results))])["added"]
             for _ in range(n)]
    return float(np.percentile(added, 2.5)), float(np.percentile(added, 97.5))


@timed
def edit_layers(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    items = items if items is not None else Items()
    facts = _facts(lm, n)
    step = grid_step(lm.n_layers)
    done = []
    for j, (key, prompt, subject) in enumerate(facts):
        try:
            done.append(items.measure(key, lambda p=prompt, s=subject: _sweep_item(lm, p, s)))
        except InputError as e:  # a new object the model cannot say
            items.leave_out(key, str(e))
        tick(progress, (j + 1) / len(facts), f"ROME at every {step} layer(s), fact {j + 1}/{len(facts)}")
    if len(done) < 2:
        raise InputError(f"{lm.spec}: fewer than two facts could be swept")
    near = sum(abs(r["best"] - r["peak"]) <= step for r in done)
    reg = regression(done)
    low, high = bootstrap_added(done)
    found = [findings.share("facts whose best edit layer is the trace's peak (within one grid step)", near, len(done),
                            "below", 0.5, published.HASE["peak"]),
             findings.Finding("R^2 the tracing effect adds beyond the layer", reg["added"], low, high, len(done),
                              findings.outcome(low, high, "below", published.HASE_ADDED_BOUNDARY),
                              f"the paper: below {published.HASE_ADDED_BOUNDARY:g} R^2 ({published.HASE['r2']})",
                              "R^2")]
    rows = [{"item": "best edit layer = trace peak (within a grid step)", "live": f"{near} of {len(done)}",
             "published": published.HASE["peak"]},
            {"item": "R^2 of the rewrite score: layer / tracing effect / both",
             "live": f"{reg['layer']:.3f} / {reg['trace']:.3f} / {reg['both']:.3f} (tracing adds {reg['added']:.3f}, "
                     f"95% {low:.3f} to {high:.3f})", "published": published.HASE["r2"]}]
    layers = done[0]["layers"]
    figure = {"type": "line", "title": "ROME's rewrite score by edit layer, and the trace's effect",
              "x": layers, "xlabel": "layer", "ylabel": "mean over facts",
              "series": {"rewrite score": [round(float(np.mean([r["rewrite"][k] for r in done])), 6)
                                           for k in range(len(layers))],
                         "tracing effect (MLP, last subject token)":
                             [round(float(np.mean([r["trace_mlp"][l] for r in done])), 6) for l in layers]}}
    return ModelRun(lm.spec, rows, found, figure, detail={"regression": reg, "interval": [low, high], "step": step})


# ---- knockout (Geva et al. 2023) ------------------------------------------------------------------------

def _knockout_item(lm: LM, prompt: str, subject: str) -> dict:
    res = knockout(lm, prompt, subject)
    return {"clean": round(res.clean, 6), "window": res.window,
            "change": {e: [round(float(x), 6) for x in res.change(e)] for e in EDGE_SETS}}


def upper_middle(n_layers: int) -> tuple[int, int]:
    """Geva et al.'s "upper-middle" layers as a share of depth: from 40% up to 85% of the layers
    ([lo, hi) as layer indices)."""
    return int(round(0.4 * n_layers)), int(round(0.85 * n_layers))


@timed
def knockout_claim(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    items = items if items is not None else Items()
    facts = _facts(lm, n)
    done = []
    for j, (key, prompt, subject) in enumerate(facts):
        try:
            done.append(items.measure(key, lambda p=prompt, s=subject: _knockout_item(lm, p, s)))
        except InputError as e:
            items.leave_out(key, str(e))
        tick(progress, (j + 1) / len(facts), f"attention knockout, fact {j + 1}/{len(facts)}")
    if not done:
        raise InputError(f"{lm.spec}: no fact could be knocked out")
    L = lm.n_layers
    lo, hi = upper_middle(L)
    mean = {e: np.mean([r["change"][e] for r in done], axis=0) for e in EDGE_SETS}
    centre = int(mean["subject"].argmin())
    window = done[0]["window"]
    band = (max(0, centre - window // 2), min(L - 1, centre - (-window // 2) - 1))
    in_band = sum(lo <= int(np.argmin(r["change"]["subject"])) < hi for r in done)
    drop = {e: [-min(r["change"][e]) for r in done] for e in EDGE_SETS}
    # Geva et al.'s two critical points: the relation's positions (non-subject) first, then the subject's
    later = sum(int(np.argmin(r["change"]["subject"])) > int(np.argmin(r["change"]["non-subject"])) for r in done)
    beats_last = sum(s > o for s, o in zip(drop["subject"], drop["last"]))
    found = [findings.share("facts whose largest last -> subject drop is in the upper-middle layers (40-85% of the "
                            "depth)",
                            in_band, len(done), "above", 0.5, published.GEVA["where"]),
             findings.share("facts whose last -> subject drop peaks at a later layer than the last -> non-subject "
                            "drop", later, len(done), "above", 0.5, published.GEVA["order"]),
             findings.share("facts where cutting last -> subject drops p(answer) more than cutting last -> last",
                            beats_last, len(done), "above", 0.5, published.GEVA["against"])]
    rows = [{"item": "band of the largest mean last -> subject drop",
             "live": f"layers {band[0]}-{band[1]} (window {window} around layer {centre}): "
                     f"{100 * mean['subject'][centre]:+.0f}%", "published": published.GEVA["where"]},
            {"item": "largest drop per edge set (mean over facts)",
             "live": ", ".join(f"{EDGE_LABELS[e]} {100 * np.mean(drop[e]):.0f}%" for e in EDGE_SETS),
             "published": published.GEVA["order"] + "; " + published.GEVA["against"]}]
    figure = {"type": "line", "title": "Attention knockout: % change of p(answer) by layer (Geva et al. Fig. 2)",
              "x": list(range(L)), "xlabel": f"layer (centre of {window} cut layers)", "ylabel": "% change",
              "series": {EDGE_LABELS[e]: [round(100 * float(x), 4) for x in mean[e]] for e in EDGE_SETS}}
    return ModelRun(lm.spec, rows, found, figure, detail={"band": list(band), "centre": centre, "window": window})


# ---- trace-corruption (Zhang & Nanda 2024) --------------------------------------------------------------

def _mlp_curve(lm: LM, prompt: str, rng: tuple[int, int], answer_id: int,
               corruption: SubjectCorruption | None) -> tuple[list[float], float, float]:
    """The MLP window's indirect effect per layer at the last subject token, with the clean and corrupted p."""
    L, t = lm.n_layers, rng[1] - 1
    configs = [grid_cells("mlp", t, l, default_window(L), L) for l in range(L)]
    res = restored_probs(lm, prompt, rng, answer_id, configs, 10, noise_level(lm), 0, corruption=corruption)
    return [round(float(p - res.corrupted), 6) for p in res.probs], res.clean, res.corrupted


def _corruption_item(lm: LM, prompt: str, subject: str) -> dict:
    rng = locate_subject(lm, prompt, subject)
    aid = int(next_token_probs(lm, encode(lm, prompt)).argmax())
    other = pick_replacement(lm, prompt, subject)
    swap = SubjectCorruption.replacement(lm, replacement_ids(lm, prompt, subject, rng, other), rng)
    out = {"replacement": other}
    for name, corruption in (("noise", None), ("replace", swap)):
        curve, clean, corrupted = _mlp_curve(lm, prompt, rng, aid, corruption)
        out[name] = {"effect": curve, "clean": round(clean, 6), "corrupted": round(corrupted, 6)}
    return out


def early_site(curve: list[float], n_layers: int) -> bool:
    """The early-site MLP peak: the curve's largest effect is in the first half and at least MIN_EFFECT."""
    k = int(np.argmax(curve))
    return k < n_layers / 2 and curve[k] >= MIN_EFFECT


def restored_share(item: dict, name: str) -> float:
    """The peak effect as a share of what the corruption took away (clean - corrupted): comparable
    between corruptions that take away different amounts."""
    gap = item[name]["clean"] - item[name]["corrupted"]
    return max(item[name]["effect"]) / gap if gap > 0 else 0.0


@timed
def trace_corruption(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    items = items if items is not None else Items()
    rel, done = F.relation(RELATION), []
    # n facts measured under both corruptions: a known fact with no known subject of its token length to swap in
    # is left out (said so) and the next known fact taken, so the finding's N is n where the relation allows
    for subject in iter_known_subjects(lm, RELATION):
        if len(done) == n:
            break
        key, prompt = f"{RELATION}:{subject}", fact_prompt(lm, rel.train_templates[0], subject)
        try:
            done.append(items.measure(key, lambda p=prompt, s=subject: _corruption_item(lm, p, s)))
        except InputError as e:  # no subject of the same token length that the model knows
            items.leave_out(key, str(e))
        tick(progress, len(done) / n, f"tracing under noise and replacement, fact {len(done)}/{n}")
    if not done:
        raise InputError(f"{lm.spec}: no fact could be traced under both corruptions")
    L = lm.n_layers
    both = sum(early_site(r["noise"]["effect"], L) and early_site(r["replace"]["effect"], L) for r in done)
    weaker = sum(restored_share(r, "replace") < restored_share(r, "noise") for r in done)
    found = [findings.share("facts whose early-site MLP peak shows under both corruptions", both, len(done),
                            "below", 0.5, published.ZHANG_NANDA["both"]),
             findings.share("facts whose MLP peak restores less under replacement than under noise", weaker,
                            len(done), "above", 0.5, published.ZHANG_NANDA["weaker"])]
    mean = {k: np.mean([r[k]["effect"] for r in done], axis=0) for k in ("noise", "replace")}
    rows = [{"item": "mean MLP peak at the last subject token (indirect effect, layer)",
             "live": "; ".join(f"{k}: {float(v.max()):.3f} at layer {int(v.argmax())}" for k, v in mean.items()),
             "published": published.ZHANG_NANDA["weaker"]},
            {"item": "mean peak as a share of what the corruption took away",
             "live": "; ".join(f"{k}: {100 * np.mean([restored_share(r, k) for r in done]):.0f}%"
                               for k in ("noise", "replace")), "published": published.ZHANG_NANDA["weaker"]}]
    figure = {"type": "line", "title": "MLP effect at the last subject token under each corruption "
                                       "(Zhang & Nanda Fig. 2)",
              "x": list(range(L)), "xlabel": "layer (centre of the restored window)", "ylabel": "indirect effect",
              "series": {"Gaussian noise (3 sd)": [round(float(x), 6) for x in mean["noise"]],
                         "symmetric token replacement": [round(float(x), 6) for x in mean["replace"]]}}
    return ModelRun(lm.spec, rows, found, figure, detail={})

