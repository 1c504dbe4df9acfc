"""Measure a shipped model and write its model card: recall per relation (training vs held-out
templates), minimal-pair accuracy per paradigm and, for world-gpt, how much of a fact causal tracing
finds at the subject's last token. ``python -m knlab.world measure gpt|bert`` reruns all of it."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from knlab.core.models import LM, load_model
from knlab.methods.predict import answer_logits
from knlab.methods.trace import restore_last_subject_token
from knlab.organisms.train import RECIPES, rescale_residual
from knlab.studies.edit import TABLE_RELATIONS, evaluate_relation, rome_layer
from knlab.world import facts as F
from knlab.world import paradigms as P
from knlab.world.corpus import EVAL_PAIRS, evaluation_pairs

REQUIRED_TRAIN_ACC = 0.97
REQUIRED_PARADIGM_ACC = 0.95
REQUIRED_RESTORE = 0.50


@torch.no_grad()
def sentence_logprob(lm: LM, sentences: list[str]) -> np.ndarray:
    enc = [lm.tokenizer(s)["input_ids"] for s in sentences]
    out = np.zeros(len(sentences))
    groups: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(enc):
        groups[len(ids)].append(i)
    for idx in groups.values():
        ids = torch.tensor([enc[i] for i in idx], device=lm.device)
        logp = torch.log_softmax(lm.model(input_ids=ids).logits.float(), -1)
        tok_lp = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
        out[idx] = tok_lp.sum(-1).cpu().numpy()
    return out


def relation_accuracy(lm: LM, rel: F.Relation, templates: tuple[str, ...]) -> tuple[float, int]:
    prompts, gold = [], []
    for f in rel.facts:
        oid = lm.tokenizer.convert_tokens_to_ids(f.object)
        for t in templates:
            prompts.append(F.prompt(t, f.subject, lm.masked))
            gold.append(oid)
    pred = answer_logits(lm, prompts).argmax(-1)
    return float((pred == torch.tensor(gold)).float().mean()), len(prompts)


def paradigm_accuracy(lm: LM, name: str, n: int = EVAL_PAIRS) -> tuple[float, int]:
    pairs = evaluation_pairs(name, n)
    if lm.masked:
        logits = answer_logits(lm, [p.masked_prompt for p in pairs])
        good = torch.tensor([lm.tokenizer.convert_tokens_to_ids(p.good_token) for p in pairs])
        bad = torch.tensor([lm.tokenizer.convert_tokens_to_ids(p.bad_token) for p in pairs])
        ar = torch.arange(len(pairs))
        ok = logits[ar, good] > logits[ar, bad]
        return float(ok.float().mean()), len(pairs)
    good = sentence_logprob(lm, [p.good for p in pairs])
    bad = sentence_logprob(lm, [p.bad for p in pairs])
    return float((good > bad).mean()), len(pairs)


def restore_curve(lm: LM, relation: str = "P36", template: str = "The capital of {X} is",
                  samples: int = 10, limit: int | None = None) -> dict:
    """Share of the clean-corrupted gap recovered by restoring only the last subject token, per layer."""
    rel = F.relation(relation)
    shares, used = [], 0
    for f in rel.facts[:limit]:
        prompt = F.causal_prompt(template, f.subject)
        oid = lm.tokenizer.convert_tokens_to_ids(f.object)
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


def measure(kind: str, path: Path, log=print) -> dict:
    t0 = time.time()
    lm = load_model(str(path), device="cpu")
    lm.spec = f"world-{kind}"
    rels = {}
    for rel in F.relations().values():
        tr, n_tr = relation_accuracy(lm, rel, rel.train_templates)
        ho, n_ho = relation_accuracy(lm, rel, rel.held_out_templates)
        rels[rel.id] = {"name": rel.name, "facts": len(rel.facts), "train": round(tr, 4), "train_prompts": n_tr,
                        "held_out": round(ho, 4), "held_out_prompts": n_ho}
        log(f"[measure {kind}] {rel.id:6s} {rel.name:22.22s} train {tr:.3f}  held-out {ho:.3f}")
    pars = {}
    for name in P.TRAINED_PARADIGMS:
        acc, n = paradigm_accuracy(lm, name)
        pars[name] = {"accuracy": round(acc, 4), "pairs": n}
        log(f"[measure {kind}] {name:45s} {acc:.3f}")
    metrics = {"model": f"world-{kind}", "relations": rels, "paradigms": pars}
    if kind == "gpt":
        metrics["restore"] = restore_curve(lm)
        log(f"[measure {kind}] restore (last subject token, P36): {metrics['restore']}")
        metrics["rome_layer"] = rome_layer(lm)
        metrics["rome"] = rome_check(lm)
        log(f"[measure {kind}] ROME: {metrics['rome']}")
        metrics["rome_trained_scale"] = rome_at_trained_scale(path)
        log(f"[measure {kind}] ROME at the trained scale: {metrics['rome_trained_scale']}")
    metrics["measure_seconds"] = round(time.time() - t0, 1)
    metrics["command"] = f"python -m knlab.world measure {kind}"
    return metrics
