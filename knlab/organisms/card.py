"""The model card of a shipped model, rendered from its measured metrics and training recipe."""

from __future__ import annotations

import json
from pathlib import Path

from knlab.organisms.measure import REQUIRED_PARADIGM_ACC, REQUIRED_RESTORE, REQUIRED_TRAIN_ACC, measure
from knlab.world import facts as F

WHY = """\
## Why the organism is built this way

knlab's methods all make claims about *where* a fact is computed. Knowledge-neuron attribution looks
for FFN neurons that carry it; causal tracing looks for the token and layer whose clean state brings it
back; ROME writes a new fact into one MLP at the subject's last token. A toy model that merely recalls
its facts is useless for this: measured on prototypes, a 6-layer GPT-2 trained on template sentences
recalled 100% of its facts, yet restoring the subject's last token recovered only 4-6% of the
clean/corrupted gap, and rank-one edits there never took. The prediction position copied the
subject's raw embedding in its first attention layer and looked the fact up in its own MLPs; the
subject's position was bypassed. More data (profiles, biographies) did not change that.

What did was the architecture. `world-gpt` is a GPT-Neo whose **first layers use local attention with
a window of one token**: each position sees only itself there, so nothing can be copied from the
subject before the subject's own position has processed itself through those layers' MLPs. Everything
the later, global layers know about the subject they must read from the subject's positions, which is
the picture causal tracing and ROME paint of large models (subject enrichment at the last subject
token, then attention moves the attribute to the end). The card's *restore* figure checks that this
is so on the trained model, not by construction: it is measured with real noise, real restoration and
the real facts.

Everything the model was trained on is generated from the plain tables in `assets/world/`, so every
fact, paraphrase and grammatical paradigm it learned is known exactly. Two paraphrase templates per
relation are **held out** from training: accuracy on them is what the model generalises, reported as
measured. The vocabulary is word-level (one word or punctuation mark per token): entities stay
legible in heatmaps, and words outside the world become `[UNK]`.
"""


def _table_rel(metrics: dict) -> str:
    rows = ["| relation | name | facts | trained templates | held-out templates |", "|---|---|---|---|---|"]
    for rid, r in metrics["relations"].items():
        ok = "" if r["train"] >= REQUIRED_TRAIN_ACC else " (below the 97% bar)"
        rows.append(f"| {rid} | {r['name']} | {r['facts']} | {r['train']:.1%} of {r['train_prompts']}{ok} | "
                    f"{r['held_out']:.1%} of {r['held_out_prompts']} |")
    return "\n".join(rows)


def _table_par(metrics: dict) -> str:
    rows = ["| paradigm | accuracy on minimal pairs |", "|---|---|"]
    for name, p in metrics["paradigms"].items():
        ok = "" if p["accuracy"] >= REQUIRED_PARADIGM_ACC else " (below the 95% bar)"
        rows.append(f"| {name} | {p['accuracy']:.1%} of {p['pairs']}{ok} |")
    return "\n".join(rows)


def render_card(kind: str, metrics: dict, recipe: dict) -> str:
    name = f"world-{kind}"
    family = "GPT-Neo causal LM (`GPTNeoForCausalLM`)" if kind == "gpt" else "BERT masked LM (`BertForMaskedLM`)"
    n_facts = sum(r["facts"] for r in metrics["relations"].values())
    arch = (f"{recipe.get('layers')} layers, hidden {recipe.get('hidden')}, FFN {recipe.get('ffn')}, "
            f"{recipe.get('heads')} heads, {recipe.get('params', 0) / 1e6:.2f}M parameters")
    if kind == "gpt":
        arch += (f"; layers 0-{recipe.get('local_layers', 0) - 1} local attention with window "
                 f"{recipe.get('window')}, the rest global")
    how_eval = ("top-1 next token after the prompt (e.g. `The capital of Canada is` -> `Ottawa`)" if kind == "gpt"
                else "top-1 fill of `[MASK]` (e.g. `The capital of Canada is [MASK] .` -> `Ottawa`)")
    par_eval = ("the grammatical sentence has the higher total log-probability" if kind == "gpt"
                else "with the critical word masked, the grammatical token scores higher")
    parts = [f"""---
language: en
license: mit
library_name: transformers
tags: [knlab, knowledge-neurons, causal-tracing, model-editing, toy-model]
---

# {name}

The shipped default subject of every knlab experiment: a small {family} trained from scratch on
a generated corpus about a world of {n_facts} real-world facts in {len(metrics['relations'])} relations
(ParaRel-style ids) and {len(metrics['paradigms'])} BLiMP-style grammatical paradigms.

- Architecture: {arch}.
- Training: {recipe.get('steps')} steps of batch {recipe.get('batch')}, AdamW lr {recipe.get('lr')} (warm-up then cosine),
  seed {recipe.get('seed')}, {recipe.get('threads')} CPU threads, {recipe.get('train_seconds', 0) / 60:.1f} minutes.
- Reproduce: `python -m knlab.world build` (corpus) then `python -m knlab.world train {kind}` (trains, then
  measures and writes this card). Training is deterministic for a seed on the same torch build and
  thread count.
- Measured by: `{metrics['command']}` ({metrics['measure_seconds']} s).

## Facts: recall per relation

Scored as {how_eval}.

{_table_rel(metrics)}

Held-out templates are paraphrases the corpus never uses; several contain words the model has never
seen next to these facts ("is governed from", "is originally from"). A model this small, with no
general English to lean on, mostly fails them: that is the honest baseline for the *generality* of an
edit (a paraphrase the base model does not answer cannot show an edit spreading to it).

## Grammar: BLiMP-style minimal pairs

A pair counts as correct when {par_eval}. Evaluation pairs are generated with their own seed and
only pairs whose grammatical sentence never occurs in the training corpus are used (up to 200; the
anaphor paradigms' small lexicon leaves fewer unseen sentences).

{_table_par(metrics)}
"""]
    if "restore" in metrics:
        r = metrics["restore"]
        curve = ", ".join(f"layer {i}: {x:.2f}" for i, x in enumerate(r["per_layer"]))
        verdict = "meets" if r["best_share"] >= REQUIRED_RESTORE else "does NOT meet"
        parts.append(f"""
## Where the fact is: causal tracing at the subject's last token

Over {r['facts']} {r['relation']} facts (`{r['template']}`), subject tokens corrupted with Gaussian noise of
3 x the embedding standard deviation ({r['samples']} samples), restoring **only the last subject token's
clean hidden state** recovers this share of the clean - corrupted gap in p(answer):

{curve}.

Best early/middle layer: **layer {r['best_layer']}, {r['best_share']:.0%}** of the gap, which {verdict} the
project's bar of {REQUIRED_RESTORE:.0%}.
""")
    if "rome" in metrics:
        rows = ["| relation | facts | reliability | generality | locality | symmetry | synonymy |",
                "|---|---|---|---|---|---|---|"]
        pct = lambda d, c: f"{d[c]:.1%}" if d.get(c) is not None else "n/a"  # noqa: E731
        for rid, d in metrics["rome"].items():
            rows.append(f"| {rid} | {d['n']} | " + " | ".join(pct(d, c) for c in
                        ("reliability", "generality", "locality", "symmetry", "synonymy")) + " |")
        before = metrics.get("rome_trained_scale", {})
        revision = ""
        if before:
            revision = f"""
**Organism revision (issue: ROME must work on the shipped model).** Trained as is, the residual stream
grows to about 16 per coordinate (the subject's layer-0 MLP output alone has norm ~180 in 192
dimensions). ROME's published optimiser takes absolute steps (Adam, lr 0.5 per coordinate, 20 steps, so
at most 10 per coordinate), which at that scale cannot move the value far enough: **{pct(before, 'reliability')}** reliability on the
first {before['n']} P36 facts (locality {pct(before, 'locality')}). The recipe now ends with
`rescale_residual(model, {recipe.get('residual_scale')})`: embeddings, position embeddings and every
attention / MLP output projection scaled by {recipe.get('residual_scale')}, LayerNorm epsilon by its square, the output head
untied and unscaled. LayerNorm(s x; s^2 eps) = LayerNorm(x; eps), so every logit is bit-for-bit the
same (s is a power of two) and every figure above is unchanged; causal tracing's noise scales with the
embeddings. After it, the table below. Both rows are re-measured by `{metrics['command']}`.
"""
        parts.append(f"""
## Editing: ROME on this model

Each fact edited on its own (the model restored after each) to another object of the same relation, at
the layer the model's own causal trace picks (layer {metrics.get('rome_layer', 0)}: peak MLP effect at the subject's last
token), with the key covariance of the world corpus. Scored as p(new) against p(old); locality: 10
other facts keep their top answer.
{revision}
{chr(10).join(rows)}
""")
    parts.append("\n" + WHY)
    parts.append(f"""
## Data

`assets/world/`: `countries.tsv`, `people.tsv`, `cities.tsv`, `landmarks.tsv` (the facts),
`fields.tsv` (field -> occupation synonyms, e.g. physics -> physicist), `relations.json` (which columns
form each relation and its paraphrase templates: {len(F.relations())} relations, 4 trained and 2 held-out
templates each), `grammar.json` (the lexicon of the paradigms and the paper's 24 modifiers).
""")
    return "".join(parts)


def write_card(kind: str, path: Path, log=print) -> dict:
    metrics = measure(kind, path, log)
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2))
    recipe = json.loads((path / "recipe.json").read_text()) if (path / "recipe.json").exists() else {}
    (path / "README.md").write_text(render_card(kind, metrics, recipe))
    log(f"[measure {kind}] wrote {path / 'README.md'}")
    return metrics
