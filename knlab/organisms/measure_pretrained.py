"""Measure a real pretrained model on the world's facts and paradigms for its model card
(``python -m knlab card smollm2-135m``; knlab.organisms.card writes it): what it knows, its grammar, where
causal tracing finds its facts, its knowledge neurons, and what ROME and the KN edit do to it.

The paper filters to facts its models know; so does the card: a fact is *known* when, after the
relation's first template (the prompt every experiment asks), greedy decoding produces the object's
tokens. That set is written to the metrics and used by every experiment below it.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from knlab.core.batching import equal_length_batches
from knlab.core.errors import InputError
from knlab.core.models import LM, load_model
from knlab.core.tokens import spoken_ids
from knlab.methods.patching import agreement, patch_estimate
from knlab.methods.rome import params_for
from knlab.methods.trace import trace
from knlab.organisms.measure import paradigm_accuracies
from knlab.studies.edit_report import rome_layer
from knlab.studies.localisation import fact_neurons
from knlab.studies.paradigm_analysis import analyse
from knlab.studies.relation_evaluation import evaluate_relation
from knlab.studies.trace_summary import summarize
from knlab.world import facts as F
from knlab.world.paradigms import paradigm_names

# P19 (place of birth) is the paper's Figure 13 relation; P131 (located in) holds its Figure 7 example
# ("The Space Needle is in downtown"), traced too because a model may know none of P19.
CARD_RELATIONS = {"trace": ("P36", "P19", "P131"), "kn": ("P36", "P101", "P1303"), "edit": ("P36", "P1376", "P101")}


@torch.no_grad()
def object_recall(lm: LM, prompts: list[str], objects: list[str], batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt: whether greedy decoding says the object (every object token is the argmax when the
    earlier ones are fed, i.e. teacher-forced argmax == greedy), and p(object) = the product of its tokens'
    probabilities. One forward pass per batch of equal-length (prompt + object) sequences."""
    seqs = []
    for p, o in zip(prompts, objects):
        pid = lm.tokenizer(p)["input_ids"]
        seqs.append((pid, spoken_ids(lm, o, "object")))
    top1 = np.zeros(len(seqs), bool)
    prob = np.zeros(len(seqs))
    for part in equal_length_batches([(len(pid), len(oid)) for pid, oid in seqs], batch):
        lp, lo = len(seqs[part[0]][0]), len(seqs[part[0]][1])
        ids = torch.tensor([seqs[i][0] + seqs[i][1] for i in part], device=lm.device)
        # the last lo positions predict the object's tokens: the output head runs on those alone
        logits = lm.model(input_ids=ids[:, :-1], logits_to_keep=lo).logits.float()
        gold = ids[:, lp:]
        logp = torch.log_softmax(logits, -1).gather(-1, gold[..., None])[..., 0]
        top1[part] = (logits.argmax(-1) == gold).all(-1).cpu().numpy()
        prob[part] = logp.sum(-1).exp().cpu().numpy()
    return top1, prob


def recall(lm: LM, log: Callable[[str], None] = print) -> dict:
    """Top-1 and mean p(object) per relation and template; the known facts (first template)."""
    out = {}
    for rel in F.relations(corpus_only=True).values():  # the world the card has always counted
        rows = []
        for t in rel.templates:
            top1, prob = object_recall(lm, [F.causal_prompt(t, f.subject) for f in rel.facts],
                                       [f.object for f in rel.facts])
            rows.append({"template": t, "held_out": t in rel.held_out_templates, "top1": round(float(top1.mean()), 4),
                         "p_object": round(float(prob.mean()), 4)})
            if t == rel.train_templates[0]:
                known = [f.subject for f, k in zip(rel.facts, top1) if k]
        out[rel.id] = {"name": rel.name, "facts": len(rel.facts), "templates": rows, "known": known}
        log(f"[card] {rel.id:6s} {rel.name:24.24s} known {len(known)}/{len(rel.facts)}; "
            + ", ".join(f"{r['top1']:.2f}" for r in rows))
    return out


def _known_facts(metrics: dict, relation: str, n: int) -> list[F.Fact]:
    rel = F.relation(relation)
    return [rel.fact(s) for s in metrics["recall"][relation]["known"][:n]]


def tracing(lm: LM, metrics: dict, n: int, log: Callable[[str], None] = print) -> dict:
    """Per relation: the last-subject-token restore curve (share of the clean - corrupted gap, per layer),
    the token-category summary (Fig. 13) of full traces, and how well attribution patching's preview
    agrees with each exact trace."""
    out = {}
    for rid in CARD_RELATIONS["trace"]:
        rel = F.relation(rid)
        shares, results, agree, seconds = [], [], [], {"exact": 0.0, "preview": 0.0}
        for f in _known_facts(metrics, rid, n):
            prompt = F.causal_prompt(rel.train_templates[0], f.subject)
            t0 = time.perf_counter()
            res = trace(lm, prompt, f.subject, f.object)
            seconds["exact"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            est = patch_estimate(lm, prompt, f.subject, f.object)
            seconds["preview"] += time.perf_counter() - t0
            results.append(res)
            agree.append(agreement(est, res))
            gap = res.clean - res.corrupted
            if gap > 1e-6:
                shares.append((res.grids["hidden"][res.subject_range[1] - 1] - res.corrupted) / gap)
            log(f"[card] trace {rid} {f.subject}: clean {res.clean:.3f} corrupted {res.corrupted:.3f} "
                f"preview r={agree[-1]['overall']}")
        if not results:
            out[rid] = {"facts": 0}
            continue
        curve = np.mean(shares, axis=0) if shares else np.zeros(lm.n_layers)
        summary = summarize(results, f"{rid} ({rel.train_templates[0]})").to_json()
        kinds = ("hidden", "mlp", "attn", "overall")
        mean_r = {k: round(float(np.mean([a[k] for a in agree if a.get(k) is not None])), 3) for k in kinds}
        out[rid] = {"facts": len(results), "template": rel.train_templates[0], "window": results[0].window,
                    "samples": results[0].samples, "restore_last_subject_token": [round(float(x), 3) for x in curve],
                    "summary": summary, "preview_agreement": mean_r,
                    "seconds_per_fact": {k: round(v / len(results), 2) for k, v in seconds.items()}}
    return out


def knowledge_neurons(lm: LM, metrics: dict, n: int, log: Callable[[str], None] = print) -> dict:
    """|KN|, tau and R^2_1 per relation over known facts (each over its four training templates), and per
    causal paradigm over its prompts; the layers the KNs sit in."""
    out = {}
    for rid in CARD_RELATIONS["kn"]:
        items = []
        for f in _known_facts(metrics, rid, n):
            sel = fact_neurons(lm, rid, f.subject)
            items.append(sel)
            log(f"[card] KN {rid} {f.subject}: {len(sel.neurons)} neurons, tau {sel.tau:.2f}, R2 {sel.r2_1:.2f}")
        out[rid] = _localisation_row(items)
    for name in paradigm_names():
        try:
            res = analyse(lm, name, max(4, n))
        except InputError as e:  # not askable of a causal model, or words that are not single tokens
            out[name] = {"skipped": str(e)}
            continue
        out[name] = {"kn": round(res.kn_count, 3), "tau": round(res.tau, 3), "r2_1": round(res.r2_1, 3),
                     "layers": sorted({l for g in res.groups for l, _ in g.neurons}), "n": res.n_prompts,
                     "overturned": round(res.overturned, 3), "grouping": "by target type, the seed's"}
        log(f"[card] KN {name}: {out[name]}")
    return out


def _localisation_row(sels) -> dict:
    if not sels:
        return {"n": 0}
    layers = [l for s in sels for l, _ in s.neurons]
    return {"n": len(sels), "kn": round(float(np.mean([len(s.neurons) for s in sels])), 3),
            "tau": round(float(np.mean([s.tau for s in sels])), 3),
            "r2_1": round(float(np.mean([s.r2_1 for s in sels])), 3),
            "layers": {int(l): layers.count(l) for l in sorted(set(layers))}}


def editing(lm: LM, metrics: dict, n: int, log: Callable[[str], None] = print,
            corpora: tuple = ("world", "english", False), layers: tuple[int, ...] = (2, 5, 8, 12)) -> dict:
    """ROME (at its default layer, with each covariance corpus and with none) and the KN edit on known
    facts of P36, P1376, P101; and, for the choice of ROME's layer, a sweep over ``layers`` on P36."""
    out: dict = {"rome_layer": rome_layer(lm), "rome_params": {k: v for k, v in vars(params_for(lm)).items()}}
    keep = ("n", "reliability", "generality", "locality", "symmetry", "synonymy", "seconds")

    def run(method: str, rid: str, k: int = n, **kw) -> dict:
        subjects = metrics["recall"][rid]["known"][:k]
        ev = evaluate_relation(lm, method, rid, subjects=subjects, **kw).to_json()
        row = {k: ev.get(k) for k in keep}
        log(f"[card] {method} {rid} {kw}: {row}")
        return row

    out["rome"] = {}
    for corpus in corpora:
        name = corpus if corpus else "none"
        rids = CARD_RELATIONS["edit"] if corpus == corpora[0] else ("P36",)
        try:
            out["rome"][name] = {rid: run("rome", rid, mom2=corpus) for rid in rids}
        except InputError as e:  # e.g. the English corpus is not installed
            out["rome"][name] = {"skipped": str(e)}
    # the sweep and the KN edit (integrated gradients over four templates per fact) on fewer facts
    out["layer_sweep"] = {int(l): run("rome", "P36", max(2, n // 2), layer=l, mom2=corpora[0]) for l in layers}
    out["kn"] = {rid: run("kn", rid, max(2, n // 2)) for rid in CARD_RELATIONS["edit"]}
    return out


def measure_pretrained(spec: str, size: int = 10, log: Callable[[str], None] = print,
                       parts: tuple[str, ...] | None = None, previous: dict | None = None,
                       checkpoint: Callable[[dict], None] | None = None) -> dict:
    """Everything the card shows; ``parts`` re-measures only some sections (the rest kept from ``previous``);
    ``checkpoint`` gets the metrics after every section (a long run that stops keeps what it measured)."""
    t0 = time.time()
    lm = load_model(spec, device="cpu")
    metrics = dict(previous or {})
    metrics.update(model=spec, size=size, family=lm.arch.family, layers=lm.n_layers, ffn=lm.ffn_width)
    steps = {"recall": lambda: recall(lm, log),
             "grammar": lambda: paradigm_accuracies(lm, paradigm_names(), lambda s: log(f"[card] {s}")),
             "tracing": lambda: tracing(lm, metrics, size, log),
             "knowledge_neurons": lambda: knowledge_neurons(lm, metrics, max(2, size // 2), log),
             "editing": lambda: editing(lm, metrics, size, log)}
    seconds = dict(metrics.get("seconds", {}))
    for part, fn in steps.items():
        if parts and part not in parts:
            continue
        s0 = time.time()
        metrics[part] = fn()
        seconds[part] = round(time.time() - s0, 1)
        log(f"[card] {part} done in {seconds[part]} s")
        if checkpoint:
            checkpoint({**metrics, "seconds": seconds})
    metrics["seconds"] = seconds
    metrics["measure_seconds"] = round(sum(seconds.values()), 1)
    metrics["command"] = f"python -m knlab card {spec} --size {size}"
    metrics["threads"] = torch.get_num_threads()
    metrics["wall_seconds_this_run"] = round(time.time() - t0, 1)
    return metrics
