"""trace-syntax (Fig. 7 / 13): causal traces averaged by token category, for facts and for two kinds of
grammar. Facts show the early-MLP (last subject token) / late-attention (last token) split; the paper finds
that grammar does not."""

from __future__ import annotations

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.studies import published
from knlab.studies.claims.common import ModelRun, Progress, tick, timed
from knlab.studies.known_facts import known_subjects
from knlab.studies.trace_summary import CategorySummary, trace_paradigm, trace_relation

MIN_EFFECT = 0.02  # two points of probability
GRAMMAR = {"determiner-noun (det_n_agr_with_adj_1)": "determiner_noun_agreement_with_adj_1",
           "subject-verb (regular_plural_sv_agr_1)": "regular_plural_subject_verb_agreement_1"}


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
        return {"category": best[0], "layer": best[1], "effect": best[2]}
    mlp, attn = peak("mlp"), peak("attn")
    signature = (mlp["effect"] >= MIN_EFFECT and attn["effect"] >= MIN_EFFECT
                 and mlp["category"] in ("last subject token", "middle subject tokens", "first subject token")
                 and mlp["layer"] < n_layers / 2 and attn["category"] == "last token" and attn["layer"] >= n_layers / 2)
    return {"mlp": mlp, "attn": attn, "signature": bool(signature)}


@timed
def trace_syntax(lm: LM, n: int, progress: Progress = None) -> ModelRun:
    L = lm.n_layers
    relation, subjects = fact_relation(lm, n)
    tick(progress, 0.05, f"tracing {relation}")
    summaries = {f"facts ({relation})": trace_relation(lm, relation, subjects=subjects)}
    for k, (label, name) in enumerate(GRAMMAR.items()):
        tick(progress, 0.35 + 0.3 * k, f"tracing {name}")
        summaries[label] = trace_paradigm(lm, name, n)
    tick(progress, 1.0, "traced")
    splits = {label: split(s, L) for label, s in summaries.items()}
    rows = []
    for label, sp in splits.items():
        paper_figure = (published.TRACE_SYNTAX["facts"] if label.startswith("facts") else
                        published.TRACE_SYNTAX["determiner_noun_agreement_with_adj_1"] if "determiner" in label else
                        published.TRACE_SYNTAX["subject_verb_agreement"])
        rows.append({"item": f"{label}: MLP peak (category, layer) / attention peak",
                     "live": f"{sp['mlp']['category']} L{sp['mlp']['layer']} ({sp['mlp']['effect']:.2f}) / "
                             f"{sp['attn']['category']} L{sp['attn']['layer']} ({sp['attn']['effect']:.2f}); "
                             f"split {'shows' if sp['signature'] else 'absent'}",
                     "published": paper_figure})
    facts_split = splits[f"facts ({relation})"]["signature"]
    grammar_split = [sp["signature"] for label, sp in splits.items() if not label.startswith("facts")]
    holds = bool(facts_split and not any(grammar_split))
    finding = (f"{'Holds' if holds else 'Does not hold'}: the facts' early-MLP / late-attention split "
               f"{'shows' if facts_split else 'does not show'} on {relation}"
               f"{' (the paper traces P19, which this model does not know)' if relation != 'P19' else ''}, and "
               f"{sum(grammar_split)} of {len(grammar_split)} grammatical phenomena show it (the paper: none).")
    series = {}
    for label, s in summaries.items():
        if "mlp" in s.kinds and "last subject token" in s.kinds["mlp"]:
            series[f"{label}: MLP at the last subject token"] = s.kinds["mlp"]["last subject token"].tolist()
        if "attn" in s.kinds and "last token" in s.kinds["attn"]:
            series[f"{label}: attention at the last token"] = s.kinds["attn"]["last token"].tolist()
    figure = {"type": "line", "title": "Average indirect effect by layer (Fig. 13's two signature curves)",
              "x": list(range(L)), "xlabel": "layer (centre of the restored window)", "ylabel": "indirect effect",
              "series": series}
    return ModelRun(lm.spec, rows, finding, holds, figure,
                    detail={"summaries": {label: s.to_json() for label, s in summaries.items()},
                            "splits": splits, "relation": relation})
