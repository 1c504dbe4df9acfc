"""Measure an organism (world-gpt, world-bert) for its model card: recall per relation (training vs
held-out templates), minimal-pair accuracy per paradigm and, for world-gpt, how much of a fact causal
tracing finds at the subject's last token and what ROME does at the trained scale and after the revision.
``python -m knlab card world-gpt|world-bert`` reruns all of it (knlab.organisms.card writes the card)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from knlab.core.models import LM, load_model
from knlab.core.tokens import single_token
from knlab.methods.predict import answer_logits
from knlab.methods.trace import restore_last_subject_token
from knlab.organisms.measure import paradigm_accuracies
from knlab.organisms.train import RECIPES, model_name, rescale_residual
from knlab.studies.edit_report import rome_layer
from knlab.studies.relation_evaluation import TABLE_RELATIONS, evaluate_relation
from knlab.world import facts as F
from knlab.world import paradigms

# The bars the card holds each organism to (it says, per row, where a figure falls below its bar).
REQUIRED_TRAIN_ACC = 0.97
REQUIRED_PARADIGM_ACC = 0.95
REQUIRED_RESTORE = 0.50


def relation_accuracy(lm: LM, rel: F.Relation, templates: tuple[str, ...]) -> tuple[float, int]:
    prompts, gold = [], []
    for f in rel.facts:
        oid = single_token(lm, f.object)
        for t in templates:
            prompts.append(F.prompt(t, f.subject, lm.masked))
            gold.append(oid)
    pred = answer_logits(lm, prompts).argmax(-1)
    return float((pred == torch.tensor(gold)).float().mean()), len(prompts)


def restore_curve(lm: LM, relation: str = "P36", template: str = "The capital of {X} is",
                  samples: int = 10, limit: int | None = None) -> dict:
    """Share of the clean-corrupted gap recovered by restoring only the last subject token, per layer."""
    rel = F.relation(relation, corpus_only=True)
    shares, used = [], 0
    for f in rel.facts[:limit]:
        prompt = F.causal_prompt(template, f.subject)
        oid = single_token(lm, f.object)
        res, _ = restore_last_subject_token(lm, prompt, f.subject, oid, samples=samples)
        gap = res.clean - res.corrupted
        if gap <= 1e-6:
            continue  # noise did not hurt (or the model never knew): no gap to recover
        shares.append((res.probs - res.corrupted) / gap)
        used += 1
    curve = np.mean(shares, axis=0)
    early = max(1, (2 * lm.n_layers + 2) // 3)  # early / middle layers: the first two thirds
    best = int(np.argmax(curve[:early]))
    return {"relation": relation, "template": template, "facts": used, "samples": samples,
            "per_layer": [round(float(x), 4) for x in curve], "best_layer": best,
            "best_share": round(float(curve[best]), 4)}


def rome_check(lm: LM, limit: int = 30) -> dict:
    """ROME on the first ``limit`` facts of the paper's three relations (each edited on its own)."""
    out = {}
    for rid in TABLE_RELATIONS:
        ev = evaluate_relation(lm, "rome", rid, limit)
        out[rid] = {k: v for k, v in ev.to_json().items() if k not in ("facts", "skipped", "published", "model")}
    return out


def rome_at_trained_scale(path: Path, limit: int = 30) -> dict:
    """The same check on the model as training left it, before ``rescale_residual`` (the organism revision
    the card reports): the scale is undone exactly (a power of two), so only the scale differs."""
    lm = load_model(str(path), device="cpu")
    lm.spec = "world-gpt@trained-scale"
    rescale_residual(lm.model, 1.0 / RECIPES["gpt"].residual_scale)
    ev = evaluate_relation(lm, "rome", "P36", limit)
    return {k: v for k, v in ev.to_json().items() if k not in ("facts", "skipped", "published", "model")}


def measure_organism(kind: str, path: Path, log: Callable[[str], None] = print) -> dict:
    """Everything the organism's card shows, measured on the weights in ``path`` (``kind``: gpt or bert)."""
    t0 = time.time()
    name = model_name(kind)
    lm = load_model(str(path), device="cpu")
    lm.spec = name

    def say(s: str) -> None:
        log(f"[measure {kind}] {s}")

    rels = {}
    for rel in F.relations(corpus_only=True).values():  # the organism's own world
        tr, n_tr = relation_accuracy(lm, rel, rel.train_templates)
        ho, n_ho = relation_accuracy(lm, rel, rel.held_out_templates)
        rels[rel.id] = {"name": rel.name, "facts": len(rel.facts), "train": round(tr, 4), "train_prompts": n_tr,
                        "held_out": round(ho, 4), "held_out_prompts": n_ho}
        say(f"{rel.id:6s} {rel.name:22.22s} train {tr:.3f}  held-out {ho:.3f}")
    metrics = {"model": name, "relations": rels, "paradigms": paradigm_accuracies(lm, paradigms.TRAINED_PARADIGMS, say)}
    if kind == "gpt":
        metrics["restore"] = restore_curve(lm)
        say(f"restore (last subject token, P36): {metrics['restore']}")
        metrics["rome_layer"] = rome_layer(lm)
        metrics["rome"] = rome_check(lm)
        say(f"ROME: {metrics['rome']}")
        metrics["rome_trained_scale"] = rome_at_trained_scale(path)
        say(f"ROME at the trained scale: {metrics['rome_trained_scale']}")
    metrics["measure_seconds"] = round(time.time() - t0, 1)
    metrics["command"] = f"python -m knlab card world-{kind}"
    return metrics
