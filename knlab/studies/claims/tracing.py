"""trace-syntax (Fig. 7 / 13): causal traces averaged by token category, for facts and for two kinds of
grammar. Facts show the early-MLP (last subject token) / late-attention (last token) split; the paper finds
that grammar does not.

Items: one traced prompt each (``<relation>:<subject>`` or ``<paradigm>:<grammatical sentence>``), its
result the prompt's indirect effects by kind, token category and layer (rounded to 6 decimals) and whether
its own trace shows the facts' signature (``split``). The averaged summaries (Fig. 13's curves) are
recomputed from the items, exactly as ``trace_summary.summarize`` averages (each category over the
prompts that have it)."""

from __future__ import annotations

import numpy as np

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.methods.trace import trace
from knlab.studies import findings, published
from knlab.studies.claims.common import Items, ModelRun, Progress, tick, timed
from knlab.studies.known_facts import known_subjects
from knlab.studies.trace_summary import CATEGORIES, CategorySummary, summarize
from knlab.world import facts as F
from knlab.world import paradigms

MIN_EFFECT = 0.02  # two points of probability
GRAMMAR = {"determiner-noun (det_n_agr_with_adj_1)": "determiner_noun_agreement_with_adj_1",
           "subject-verb (regular_plural_sv_agr_1)": "regular_plural_subject_verb_agreement_1"}
PAPER = {"determiner_noun_agreement_with_adj_1": published.TRACE_SYNTAX["determiner_noun_agreement_with_adj_1"],
         "regular_plural_subject_verb_agreement_1": published.TRACE_SYNTAX["subject_verb_agreement"]}
MOST = 0.5  # the paper's averaged traces show the split (facts) or not (grammar): most prompts' own traces


def fact_relation(lm: LM, n: int) -> tuple[str, list[str]]:
    """The paper traces P19 (place of birth); a model that knows fewer than two of its first 64 facts does
    not know that relation (the real model knows none of all 261: scanning them all takes 5 s on 2 cores)
    and is traced on P36 (capital) instead; the claim says so."""
    if len(known_subjects(lm, "P19", 2, scan=64)) == 2:
        return "P19", known_subjects(lm, "P19", n)
    known = known_subjects(lm, "P36", n)
    if len(known) >= 2:
        return "P36", known
    raise InputError(f"{lm.spec} knows fewer than two P19 or P36 facts: nothing to trace")


def split(summary: CategorySummary, n_layers: int) -> dict:
    """Where the MLP effect peaks (category, layer) and where attention's does, and whether that is the
    facts' signature: the MLP at the last subject token in the first half of the layers, attention at the
    last token in the second half, each restoring at least ``MIN_EFFECT`` of p(answer) (a smaller peak is
    noise, not a site)."""
    def peak(kind):
        cats = summary.kinds.get(kind, {})
        best = max(((c, int(v.argmax()), float(v.max())) for c, v in cats.items()), key=lambda x: x[2],
                   default=(None, -1, 0.0))
        return {"category": best[0], "layer": best[1], "effect": round(best[2], 6)}
    mlp, attn = peak("mlp"), peak("attn")
    signature = (mlp["effect"] >= MIN_EFFECT and attn["effect"] >= MIN_EFFECT
                 and mlp["category"] in ("last subject token", "middle subject tokens", "first subject token")
                 and mlp["layer"] < n_layers / 2 and attn["category"] == "last token" and attn["layer"] >= n_layers / 2)
    return {"mlp": mlp, "attn": attn, "signature": bool(signature)}


def _prompts(lm: LM, source: str, n: int, subjects: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    """(item key, prompt, corrupted words, answer) of a relation's known facts (first training template,
    as ``trace_relation``) or of a paradigm's first ``n`` pairs (as ``trace_paradigm``)."""
    if source.startswith("P"):
        rel = F.relation(source)
        return [(f"{source}:{f.subject}", F.prompt(rel.train_templates[0], f.subject, lm.masked), f.subject, f.object)
                for f in (rel.fact(s) for s in subjects or [])]
    out = []
    for p in paradigms.minimal_pairs(source, n, seed=1):
        if not lm.masked and p.controller_index > p.critical_index:
            raise InputError(f"in {source} the agreeing word ({p.controller!r}) comes after the critical one, "
                             f"so a causal model cannot be traced on it; use a masked model")
        out.append((f"{source}:{p.good}", p.masked_prompt if lm.masked else p.causal_prefix(), p.controller,
                    p.good_token))
    return out


def _traced(lm: LM, prompt: str, subject: str, answer: str) -> dict:
    """One prompt's item: its indirect effects by kind, category and layer, and its own split."""
    one = summarize([trace(lm, prompt, subject, answer)])
    return {"kinds": {k: {c: [round(float(x), 6) for x in v] for c, v in cats.items()} for k, cats in one.kinds.items()},
            "split": split(one, lm.n_layers)}


def _averaged(lm: LM, results: list[dict], source: str) -> CategorySummary:
    """``summarize`` over the items: each category's curve averaged over the prompts that have it."""
    if not results:
        raise InputError(f"nothing to summarise: no prompt of {source} could be traced")
    kinds = list(results[0]["kinds"])
    counts = {c: sum(c in r["kinds"][kinds[0]] for r in results) for c in CATEGORIES}
    avg = {k: {c: np.mean([r["kinds"][k][c] for r in results if c in r["kinds"][k]], axis=0)
               for c in CATEGORIES if counts[c]} for k in kinds}
    return CategorySummary(lm.spec, avg, {c: m for c, m in counts.items() if m}, len(results), source)


@timed
def trace_syntax(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    items = items if items is not None else Items()
    L = lm.n_layers
    relation, subjects = fact_relation(lm, n)
    sources = {f"facts ({relation})": relation, **GRAMMAR}
    per_source: dict[str, list[dict]] = {}
    for k, (label, source) in enumerate(sources.items()):
        prompts = _prompts(lm, source, n, subjects)
        done = []
        for j, (key, prompt, subject, answer) in enumerate(prompts):
            try:
                done.append(items.measure(key, lambda p=prompt, s=subject, a=answer: _traced(lm, p, s, a)))
            except InputError as e:  # an answer the model cannot say: the prompt is left out
                items.leave_out(key, str(e))
            tick(progress, (k + (j + 1) / len(prompts)) / len(sources), f"tracing {source} {j + 1}/{len(prompts)}")
        per_source[label] = done
    summaries = {label: _averaged(lm, done, sources[label]) for label, done in per_source.items()}
    splits = {label: split(s, L) for label, s in summaries.items()}
    rows, found = [], []
    for label, sp in splits.items():
        source = sources[label]
        paper_figure = published.TRACE_SYNTAX["facts"] if source == relation else PAPER[source]
        rows.append({"item": f"{label}: MLP peak (category, layer) / attention peak",
                     "live": f"{sp['mlp']['category']} L{sp['mlp']['layer']} ({sp['mlp']['effect']:.2f}) / "
                             f"{sp['attn']['category']} L{sp['attn']['layer']} ({sp['attn']['effect']:.2f}); "
                             f"split {'shows' if sp['signature'] else 'absent'}",
                     "published": paper_figure})
        # the paper reads the split off averaged traces; an interval needs it per prompt: the share of
        # prompts whose own trace shows it, most of them for facts, fewer than half for grammar
        shows = sum(r["split"]["signature"] for r in per_source[label])
        note = " (the paper traces P19, which this model does not know)" if source == "P36" else ""
        found.append(findings.share(f"{label}: prompts whose trace shows the split", shows, len(per_source[label]),
                                    "above" if source == relation else "below", MOST,
                                    f"GPT-2 XL: {paper_figure}{note}"))
    series = {}
    for label, s in summaries.items():
        if "mlp" in s.kinds and "last subject token" in s.kinds["mlp"]:
            series[f"{label}: MLP at the last subject token"] = s.kinds["mlp"]["last subject token"].tolist()
        if "attn" in s.kinds and "last token" in s.kinds["attn"]:
            series[f"{label}: attention at the last token"] = s.kinds["attn"]["last token"].tolist()
    figure = {"type": "line", "title": "Average indirect effect by layer (Fig. 13's two signature curves)",
              "x": list(range(L)), "xlabel": "layer (centre of the restored window)", "ylabel": "indirect effect",
              "series": series}
    return ModelRun(lm.spec, rows, found, figure,
                    detail={"summaries": {label: s.to_json() for label, s in summaries.items()},
                            "splits": splits, "relation": relation})
