"""The knowledge-neuron claims: which neurons grammar shares (kn-sharing), what suppressing them does
(det-agreement, overturn, sv-agreement), how well and where grammar localises beside facts (localisation,
kn-layers). Attribution is IG over the critical word at each prompt (docs/paper.md sections 1-3)."""

from __future__ import annotations

import numpy as np

from knlab.core.errors import InputError
from knlab.core.models import LM, weights_checksum
from knlab.core.nethook import per_model
from knlab.core.tokens import single_token
from knlab.methods.attribute import attribute
from knlab.methods.neurons import Selection, coarse_neurons, select
from knlab.studies import published
from knlab.studies.claims.common import ModelRun, Progress, kn_layers, pct, shares_text, tick, timed
from knlab.studies.known_facts import known_subjects
from knlab.studies.localisation import fact_neurons
from knlab.studies.paradigm_analysis import suppress, usable_pairs

DETERMINERS = ("this", "that", "these", "those")
SINGULAR_DETS, PLURAL_DETS = ("this", "that"), ("these", "those")


def both_numbers(lm: LM, name: str, n: int, plural: tuple[str, ...]) -> tuple[list, list[str]]:
    """``usable_pairs``, but with at least one pair of each number (a small ``n`` can draw one number only):
    the last pair is swapped for the first of the missing number from a larger draw."""
    pairs, prompts = usable_pairs(lm, name, n)
    for want in (True, False):
        if not any((p.good_token in plural) == want for p in pairs):
            more, more_prompts = usable_pairs(lm, name, 8 * max(n, 2))
            k = next((i for i, p in enumerate(more) if (p.good_token in plural) == want), None)
            if k is None:
                raise InputError(f"{name}: no usable pair of both numbers on {lm.spec}")
            pairs, prompts = pairs[:-1] + [more[k]], prompts[:-1] + [more_prompts[k]]
    return pairs, prompts


def _maps(lm: LM, pairs, prompts, progress: Progress, share: float = 1.0, start: float = 0.0) -> list[np.ndarray]:
    """IG maps of each prompt's critical (grammatical) word."""
    out = []
    for k, (p, prompt) in enumerate(zip(pairs, prompts)):
        out.append(attribute(lm, prompt, p.good_token).scores)
        tick(progress, start + share * (k + 1) / len(pairs), f"attributing prompt {k + 1}/{len(pairs)}")
    return out


@timed
def kn_sharing(lm: LM, n: int, progress: Progress = None) -> ModelRun:
    """Fig. 2 / Table 4: per determiner, the share of its pairs in which a neuron is a (coarse) KN; the most
    singular-specific and the most plural-specific neuron."""
    pairs, prompts = both_numbers(lm, "determiner_noun_agreement_2", n, PLURAL_DETS)
    coarse = [coarse_neurons(m) for m in _maps(lm, pairs, prompts, progress)]
    by_det = {d: [c for c, p in zip(coarse, pairs) if p.good_token == d] for d in DETERMINERS}
    neurons = sorted(set().union(*coarse))

    def share(nrn, d):
        sets = by_det[d]
        return sum(nrn in s for s in sets) / len(sets) if sets else 0.0

    def specific(own, other):
        return max(neurons, key=lambda x: np.mean([share(x, d) for d in own]) - np.mean([share(x, d) for d in other]))

    sg, pl = specific(SINGULAR_DETS, PLURAL_DETS), specific(PLURAL_DETS, SINGULAR_DETS)
    sg_shares, pl_shares = [share(sg, d) for d in DETERMINERS], [share(pl, d) for d in DETERMINERS]
    pub_sg, pub_pl = published.KN_SHARING[(10, 2096)], published.KN_SHARING[(9, 1094)]
    rows = [{"item": f"singular KN {sg}: share of this / that / these / those pairs", "live": shares_text(sg_shares),
             "published": f"(10, 2096): {shares_text([pub_sg[d] for d in DETERMINERS])}"},
            {"item": f"plural KN {pl}: share of this / that / these / those pairs", "live": shares_text(pl_shares),
             "published": f"(9, 1094): {shares_text([pub_pl[d] for d in DETERMINERS])}"},
            {"item": "pairs per determiner", "live": " / ".join(str(len(by_det[d])) for d in DETERMINERS),
             "published": "283 pairs in all"}]
    holds = bool(min(sg_shares[:2]) >= 0.5 and max(sg_shares[2:]) <= 0.1
                 and min(pl_shares[2:]) >= 0.5 and max(pl_shares[:2]) <= 0.1)
    finding = (f"{'Holds' if holds else 'Does not hold'}: the singular neuron {sg} is a KN in "
               f"{shares_text(sg_shares[:2])} of this / that pairs and {shares_text(sg_shares[2:])} of these / those; "
               f"the plural neuron {pl} in {shares_text(pl_shares[2:])} of these / those and "
               f"{shares_text(pl_shares[:2])} of this / that (the paper: number-specific neurons).")
    figure = {"type": "bar", "title": "Share of each determiner's pairs in which the neuron is a KN",
              "x": list(DETERMINERS), "ylabel": "share of pairs",
              "series": {f"singular KN {sg} (live)": sg_shares, f"plural KN {pl} (live)": pl_shares,
                         "(10, 2096), BERT (paper)": [pub_sg[d] for d in DETERMINERS],
                         "(9, 1094), BERT (paper)": [pub_pl[d] for d in DETERMINERS]}}
    return ModelRun(lm.spec, rows, finding, holds, figure,
                    detail={"singular": list(sg), "plural": list(pl), "n_pairs": len(pairs)})


def _number_kns(lm: LM, pairs, prompts, progress: Progress) -> tuple[Selection, Selection]:
    """The KNs of the singular prompts and of the plural ones (each selected over its own prompts)."""
    maps = _maps(lm, pairs, prompts, progress, share=0.8)
    sg = [m for m, p in zip(maps, pairs) if p.good_token in SINGULAR_DETS]
    pl = [m for m, p in zip(maps, pairs) if p.good_token in PLURAL_DETS]
    return select(sg), select(pl)


@timed
def det_agreement(lm: LM, n: int, progress: Progress = None) -> ModelRun:
    """Fig. 3 / 6a: suppress the plural (and, apart, the singular) KNs of det_n_agr_2 and chart the 24
    modifiers' relative probability change; Fig. 4: does the number-neutral "scattered" move with them?"""
    pairs, prompts = both_numbers(lm, "determiner_noun_agreement_2", n, PLURAL_DETS)
    sel_sg, sel_pl = _number_kns(lm, pairs, prompts, progress)
    by_pl = suppress(lm, pairs, prompts, sel_pl.neurons)
    by_sg = suppress(lm, pairs, prompts, sel_sg.neurons)
    tick(progress, 1.0, "suppressed")
    change = {t.token: t for t in by_pl.tokens}
    rows = [{"item": f"suppress plural KNs {sel_pl.neurons}: rel. change of p({d}) (%)",
             "live": round(change[d].rel_change, 1) if d in change else None, "published": published.DET_SUPPRESSION[d]}
            for d in DETERMINERS]
    sc = change.get("scattered")
    rows.append({"item": "Fig. 4: p(scattered) (number-neutral) with the plural KNs suppressed: rel. change (%), p-value",
                 "live": f"{sc.rel_change:+.1f}, p = {sc.p_value:.2g}" if sc else "not a single token",
                 "published": "drops significantly (a co-occurrence bias, not number)"})
    rows.append({"item": "grammatical preferences overturned (plural / singular KNs suppressed) (%)",
                 "live": f"{pct(by_pl.overturned)} / {pct(by_sg.overturned)}", "published": "<= 5.2"})
    signs = [np.sign(change[d].rel_change) == np.sign(published.DET_SUPPRESSION[d]) for d in DETERMINERS if d in change]
    holds = bool(signs and all(signs) and by_pl.overturned <= 0.2)
    finding = (f"{'Holds' if holds else 'Does not hold'}: suppressing the plural KNs changes p(these) "
               f"{change['these'].rel_change:+.0f}% and p(this) {change['this'].rel_change:+.0f}%, yet overturns only "
               f"{pct(by_pl.overturned)}% of the grammatical preferences (the paper: directions as here, <= 5.2%)."
               if "these" in change and "this" in change else "The determiners are not single tokens of this model.")
    tokens = [t.token for t in by_pl.tokens]
    figure = {"type": "bar", "title": "Relative change of p(modifier) when the KNs are suppressed (%)", "x": tokens,
              "ylabel": "relative change (%)",
              "series": {"plural KNs suppressed (live)": [t.rel_change for t in by_pl.tokens],
                         "singular KNs suppressed (live)": [t.rel_change for t in by_sg.tokens],
                         "plural KNs suppressed, BERT (paper)": [published.DET_SUPPRESSION.get(t) for t in tokens]}}
    detail = {"plural_kns": [list(x) for x in sel_pl.neurons], "singular_kns": [list(x) for x in sel_sg.neurons],
              "tokens": [{"token": t.token, "group": t.group, "rel_change": t.rel_change, "p_value": t.p_value}
                         for t in by_pl.tokens]}
    return ModelRun(lm.spec, rows, finding, holds, figure, detail=detail)


OVERTURN_PARADIGMS = tuple(published.OVERTURN)


@timed
def overturn(lm: LM, n: int, progress: Progress = None) -> ModelRun:
    """Fig. 6b: accuracy on four determiner paradigms before and after suppressing each one's KNs."""
    rows, before, after, pub_b, pub_a = [], [], [], [], []
    for k, name in enumerate(OVERTURN_PARADIGMS):
        pairs, prompts = usable_pairs(lm, name, n)
        sel = select(_maps(lm, pairs, prompts, progress, 1 / len(OVERTURN_PARADIGMS), k / len(OVERTURN_PARADIGMS)))
        sup = suppress(lm, pairs, prompts, sel.neurons)
        b, a = published.OVERTURN[name]
        rows.append({"item": f"{name}: accuracy before -> after (%)",
                     "live": f"{pct(sup.correct_before)} -> {pct(sup.correct_after)}", "published": f"{b} -> {a}"})
        before.append(pct(sup.correct_before))
        after.append(pct(sup.correct_after))
        pub_b.append(b)
        pub_a.append(a)
    drops = [b - a for b, a in zip(before, after)]
    holds = bool(max(drops) <= 10)
    finding = (f"{'Holds' if holds else 'Does not hold'}: suppressing the KNs lowers accuracy by "
               f"{min(drops):.1f}-{max(drops):.1f} points (the paper: 2.0-5.2), far from overturning the paradigm.")
    figure = {"type": "bar", "title": "Accuracy before and after suppressing the KNs (%)",
              "x": [x.replace("determiner_noun_agreement", "det_n_agr") for x in OVERTURN_PARADIGMS],
              "ylabel": "accuracy (%)", "series": {"before (live)": before, "after (live)": after,
                                                   "before, BERT (paper)": pub_b, "after, BERT (paper)": pub_a}}
    return ModelRun(lm.spec, rows, finding, holds, figure)


def _causal_paradigms() -> tuple[str, ...]:
    """The four _1 determiner paradigms (the critical noun after its determiner: a causal model can be
    asked), in Table 8's order."""
    return tuple(published.LOCALISATION["GPT-2"])


def _selections(lm: LM) -> dict:
    """The KN selections already made on these exact weights. localisation and kn-layers select the same
    paradigms' and P101's KNs (kn-layers: a subset), each costing up to a minute on the real model; `paper
    --all` runs both. Keyed on the weights' checksum (1.4 s on the real model, once per claim), so a model
    with an edit applied never reads its base weights' selections, nor the other way round."""
    memo = per_model(lm.model, "claim_selections")
    weights = weights_checksum(lm.model)
    if memo.get("weights") != weights:
        memo.clear()
        memo["weights"] = weights
    return memo


def _paradigm_selection(lm: LM, name: str, n: int, progress: Progress, share: float, start: float,
                        made: dict) -> Selection:
    """The paradigm's KNs over ``n`` prompts, from ``made`` (``_selections``) when already selected."""
    if ("paradigm", name, n) not in made:
        pairs, prompts = usable_pairs(lm, name, n)
        made["paradigm", name, n] = select(_maps(lm, pairs, prompts, progress, share, start))
    return made["paradigm", name, n]


def _relation_selections(lm: LM, relation: str, n: int, made: dict) -> list[Selection]:
    """The KNs of each of the first ``n`` known facts, from ``made`` when already selected."""
    if ("relation", relation, n) not in made:
        made["relation", relation, n] = [fact_neurons(lm, relation, s) for s in known_subjects(lm, relation, n)]
    return made["relation", relation, n]


@timed
def localisation(lm: LM, n: int, progress: Progress = None) -> ModelRun:
    """Fig. 5a / Table 8: |KN|, tau and R^2_1 of each paradigm (over its prompts) and of two relations (per
    fact, over its paraphrases), beside the paper's row for the model it ran."""
    items = list(published.LOCALISATION["BERT-base"]) if lm.masked else list(_causal_paradigms()) + ["P101"]
    rows, live, made = [], {}, _selections(lm)
    for k, item in enumerate(items):
        if item.startswith("P"):
            sels = _relation_selections(lm, item, max(1, n // 3), made)
            if not sels:
                rows.append({"item": f"{item}: |KN| / tau / R^2_1", "live": "no known facts", "published": "-"})
                continue
            vals = (np.mean([len(s.neurons) for s in sels]), np.mean([s.tau for s in sels]),
                    np.mean([s.r2_1 for s in sels]))
        else:
            s = _paradigm_selection(lm, item, n, progress, 1 / len(items), k / len(items), made)
            vals = (len(s.neurons), s.tau, s.r2_1)
        live[item] = [float(v) for v in vals]
        paper_figure = (f"BERT {published.localisation_row('BERT-base', item)}" if lm.masked else
                        " | ".join(f"{m} {published.localisation_row(m, item)}"
                                   for m in ("GPT-2", "LLaMA-2-7B", "BERT-base")
                                   if published.localisation_row(m, item) != "-"))
        rows.append({"item": f"{item}: |KN| / tau / R^2_1", "live": " / ".join(f"{v:.3g}" for v in vals),
                     "published": paper_figure})
        tick(progress, (k + 1) / len(items), item)
    gram = [v for i, v in live.items() if not i.startswith("P")]
    facts = [v for i, v in live.items() if i.startswith("P")]
    g_r2 = float(np.mean([v[2] for v in gram])) if gram else float("nan")
    f_r2 = float(np.mean([v[2] for v in facts])) if facts else float("nan")
    holds = bool(gram and facts and np.mean([v[0] for v in gram]) >= 1 and g_r2 >= 0.5 * f_r2)
    finding = (f"{'Holds' if holds else 'Does not hold'}: grammar's paradigms have {np.mean([v[0] for v in gram]):.1f} "
               f"KNs on average (R^2_1 {g_r2:.2f}) against the facts' {np.mean([v[0] for v in facts]) if facts else 0:.1f} "
               f"(R^2_1 {f_r2:.2f}) (the paper: grammar localises to KNs about as well as facts do)."
               if gram and facts else "Too few items could be measured on this model.")
    figure = {"type": "bar", "title": "|KN| per paradigm / relation", "x": list(live), "ylabel": "|KN|",
              "series": {"live": [v[0] for v in live.values()],
                         **{f"{m} (paper)": [published.LOCALISATION[m].get(i, (None,))[0] for i in live]
                            for m in (("BERT-base",) if lm.masked else ("GPT-2", "LLaMA-2-7B"))}}}
    return ModelRun(lm.spec, rows, finding, holds, figure, detail={"live": live})


@timed
def kn_layers_claim(lm: LM, n: int, progress: Progress = None) -> ModelRun:
    """Fig. 5b / 12: the layers the KNs of grammar and of facts sit in."""
    paradigms = ("determiner_noun_agreement_1", "determiner_noun_agreement_2") if lm.masked else _causal_paradigms()[:2]
    L, made = lm.n_layers, _selections(lm)
    grammar = np.zeros(L)
    for k, name in enumerate(paradigms):
        grammar += kn_layers(_paradigm_selection(lm, name, n, progress, 0.6 / len(paradigms),
                                                 0.6 * k / len(paradigms), made).neurons, L)
    facts = np.zeros(L)
    for s in _relation_selections(lm, "P101", max(1, n // 3), made):
        facts += kn_layers(s.neurons, L)
    tick(progress, 1.0, "facts")
    share_g = grammar / max(1, grammar.sum())
    share_f = facts / max(1, facts.sum())

    def where(share):
        top = np.argsort(share)[::-1][:3]
        return ", ".join(f"{int(l)} ({100 * share[l]:.0f}%)" for l in top if share[l] > 0) or "none"

    paper_figure = "; ".join(f"{m}: {t}" for m, t in published.KN_LAYERS.items())
    rows = [{"item": "layers holding the most grammar KNs (share)", "live": where(share_g), "published": paper_figure},
            {"item": "layers holding the most fact KNs (P101) (share)", "live": where(share_f),
             "published": paper_figure},
            {"item": "KNs counted (grammar / facts)", "live": f"{int(grammar.sum())} / {int(facts.sum())}",
             "published": "-"}]
    top_f = set(np.argsort(share_f)[::-1][:2].tolist())
    overlap = float(sum(share_g[l] for l in top_f))
    holds = bool(grammar.sum() and facts.sum() and overlap >= 0.5)
    finding = (f"{'Holds' if holds else 'Does not hold'}: {100 * overlap:.0f}% of grammar's KNs sit in the two layers "
               f"holding most fact KNs (the paper: the same layers for both).")
    figure = {"type": "bar", "title": "Where the KNs sit (share of KNs per layer)", "x": list(range(L)),
              "xlabel": "layer", "ylabel": "share of KNs", "series": {"grammar": share_g.tolist(), "facts (P101)": share_f.tolist()}}
    return ModelRun(lm.spec, rows, finding, holds, figure)


SV_PARADIGM = "regular_plural_subject_verb_agreement_1"


@timed
def sv_agreement(lm: LM, n: int, progress: Progress = None) -> ModelRun:
    """Fig. 11: the singular and the plural KNs of subject-verb agreement, each suppressed, and the change of
    p(verb) for the paper's verb pairs."""
    pairs, prompts = both_numbers(lm, SV_PARADIGM, n, ("are", "were"))
    maps = _maps(lm, pairs, prompts, progress, 0.8)
    singular = [m for m, p in zip(maps, pairs) if p.good_token in ("is", "was")]
    plural = [m for m, p in zip(maps, pairs) if p.good_token in ("are", "were")]
    sel_sg, sel_pl = select(singular), select(plural)
    verbs = {"plural verbs": [pl for pl, _ in published.SV_VERBS],
             "singular verbs": [sg for _, sg in published.SV_VERBS]}
    by_sg = suppress(lm, pairs, prompts, sel_sg.neurons, verbs)
    by_pl = suppress(lm, pairs, prompts, sel_pl.neurons, verbs)
    tick(progress, 1.0, "suppressed")

    def mean_change(sup, group):
        vals = [t.rel_change for t in sup.tokens if t.group == group]
        return float(np.mean(vals)) if vals else float("nan")

    rows = []
    for label, sup, sel in (("singular", by_sg, sel_sg), ("plural", by_pl, sel_pl)):
        rows.append({"item": f"{label} KNs {sel.neurons} suppressed: mean rel. change of singular / plural verbs (%)",
                     "live": f"{mean_change(sup, 'singular verbs'):+.1f} / {mean_change(sup, 'plural verbs'):+.1f}",
                     "published": f"GPT-2: {published.SV_AGREEMENT['GPT-2']}; "
                                  f"LLaMA-2: {published.SV_AGREEMENT['LLaMA-2-7B']}"})
    missing = [v for g in verbs.values() for v in g if single_token(lm, v) is None]
    rows.append({"item": "verbs charted (not single tokens of the model: left out)",
                 "live": f"{len(by_sg.tokens)} of {2 * len(published.SV_VERBS)}"
                         + (f"; missing {missing}" if missing else ""),
                 "published": ", ".join("/".join(p) for p in published.SV_VERBS)})
    s_own, s_other = mean_change(by_sg, "singular verbs"), mean_change(by_sg, "plural verbs")
    holds = bool(np.isfinite(s_own) and s_own < 0 and s_own < s_other)
    finding = (f"{'Holds' if holds else 'Does not hold'}: suppressing the singular KNs changes singular verbs "
               f"{s_own:+.0f}% and plural verbs {s_other:+.0f}% (GPT-2 in the paper: singular verbs fall, plural "
               f"ones barely move).")
    figure = {"type": "bar", "title": "Relative change of p(verb) when the KNs are suppressed (%)",
              "x": [t.token for t in by_sg.tokens], "ylabel": "relative change (%)",
              "series": {"singular KNs suppressed": [t.rel_change for t in by_sg.tokens],
                         "plural KNs suppressed": [t.rel_change for t in by_pl.tokens]}}
    return ModelRun(lm.spec, rows, finding, holds, figure,
                    detail={"singular_kns": [list(x) for x in sel_sg.neurons],
                            "plural_kns": [list(x) for x in sel_pl.neurons]})


