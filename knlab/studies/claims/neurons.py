"""The knowledge-neuron claims: which neurons grammar shares (kn-sharing), what suppressing them does
(det-agreement, overturn, sv-agreement), how well and where grammar localises beside facts (localisation,
kn-layers). Attribution is IG over the critical word at each prompt (docs/paper.md sections 1-3).

Items: a pair's attribution is one item (its coarse neurons and its critical word; the IG map itself goes
through ``Items.array``), so the KNs of a paradigm are selected again from the stored items without a
single attribution; what suppressing them does to a pair is a second item ("suppress:..."), the pair's
probabilities before and after. A paradigm's or a fact's whole selection (localisation, kn-layers) is one
item. Probabilities are kept to 6 significant digits, so a rerun of the same items gives equal results.

Each finding is one statement of the paper with its rule written once, here, beside the paper's figure
read from ``studies.published``. Two caveats the rules carry: the number-specific neurons of kn-sharing
are picked on the very pairs they are then counted on (as the paper picks them), which favours the
paper's side; and a per-pair relative change (what an interval needs) is not the paper's relative change
of the mean probability, which the rows and the figure still show."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from knlab.core.errors import InputError
from knlab.core.models import LM, weights_checksum
from knlab.core.nethook import per_model
from knlab.core.tokens import single_token
from knlab.methods.attribute import attribute
from knlab.methods.intervene import NeuronIntervention
from knlab.methods.neurons import coarse_neurons, r2_1, select_coarse
from knlab.methods.predict import answer_logits
from knlab.studies import findings, published
from knlab.studies.claims.common import Items, ModelRun, Progress, kn_layers, pct, shares_text, tick, timed
from knlab.studies.known_facts import known_subjects
from knlab.studies.paradigm_analysis import TokenChange, usable_groups, usable_pairs
from knlab.world import facts as F
from knlab.world import paradigms

DETERMINERS = ("this", "that", "these", "those")
SINGULAR_DETS, PLURAL_DETS = ("this", "that"), ("these", "those")
# kn-sharing: the paper finds each number's neuron in 0% of the other number's pairs ("neither appears for
# the other number"). An interval on a few dozen pairs can never lie below 0, so the rule asks for fewer
# than one in five: at 0 of n pairs Wilson's upper end is 3.84 / (n + 3.84), below 20% from 16 pairs on (the
# claim's 40 pairs give about 20 of each number); the excluded (11, 1835), a KN in 3% of "these" pairs,
# would count as singular-specific too.
OTHER_NUMBER = 0.2
MAJORITY = 0.5  # "is a KN in most of its pairs" (the paper: 75-100%)
OVERTURN_BOUNDARY = 0.1  # the paper: at most 5.2 points; twice that still reads "rarely overturned"


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


def _key(p: paradigms.MinimalPair) -> str:
    """A pair's item key: its paradigm and grammatical sentence (unique within a paradigm; a masked prompt
    is not: "this dog" and "that dog" share "[MASK] dog")."""
    return f"{p.paradigm}:{p.good}"


def _sig(x: float) -> float:
    """6 significant digits: a probability of 1e-9 keeps its size (6 decimals would make it 0)."""
    return float(f"{float(x):.6g}")


def _sited(key: str, site: str) -> str:
    """An item's key at a KN site: knlab's own site keeps the plain key (the records before sites were a
    parameter read back unchanged), another site is named in front."""
    return key if site == "activation" else f"{site}:{key}"


def _map(lm: LM, items: Items, p: paradigms.MinimalPair, prompt: str, site: str) -> np.ndarray:
    """The IG map of the pair's critical (grammatical) word at the KN ``site``, a heavy intermediate."""
    return items.array(_sited(f"ig:{_key(p)}", site), lambda: attribute(lm, prompt, p.good_token, site=site).scores)


def _attributed(lm: LM, items: Items, pairs, prompts, progress: Progress, share: float = 1.0,
                start: float = 0.0, site: str = "activation") -> list[dict]:
    """Each pair's item: its critical word and its coarse neurons (score > 0.2 x the map's maximum)."""
    out = []
    for k, (p, prompt) in enumerate(zip(pairs, prompts)):
        out.append(items.measure(_sited(_key(p), site), lambda p=p, prompt=prompt: {
            "target": p.good_token,
            "coarse": sorted([int(l), int(i)] for l, i in coarse_neurons(_map(lm, items, p, prompt, site)))}))
        tick(progress, start + share * (k + 1) / len(pairs), f"attributing prompt {k + 1}/{len(pairs)}")
    return out


def _coarse(result: dict) -> set[tuple[int, int]]:
    return {(l, i) for l, i in result["coarse"]}


def _kns(results: list[dict]) -> list[tuple[int, int]]:
    """The KNs shared by these pairs (the tau search over their coarse sets)."""
    return select_coarse([_coarse(r) for r in results])[0] if results else []


@torch.no_grad()
def _probs(lm: LM, prompt: str, words: list[str], neurons: list[tuple[int, int]] | None = None) -> dict[str, float]:
    """p(word) at the prompt's prediction position, with ``neurons`` suppressed when given."""
    if neurons:
        with NeuronIntervention(tuple(neurons), "suppress").apply(lm):
            logits = answer_logits(lm, [prompt])
    else:
        logits = answer_logits(lm, [prompt])
    probs = torch.softmax(logits[0].float(), -1)
    return {w: _sig(probs[single_token(lm, w)]) for w in words}


def _suppressed(lm: LM, items: Items, p, prompt: str, words: list[str],
                kns: dict[str, list[tuple[int, int]]]) -> dict:
    """The pair's suppression item: p(word) before, and after suppressing each set of ``kns``; keyed on the
    sets too, since another size selects other KNs (a record must never read back another set's result)."""
    sets = hashlib.sha1(json.dumps(sorted((k, sorted(map(list, v))) for k, v in kns.items())).encode()).hexdigest()
    return items.measure(f"suppress:{sets[:10]}:{_key(p)}", lambda: {
        "before": _probs(lm, prompt, words), **{name: _probs(lm, prompt, words, nrns) for name, nrns in kns.items()}})


def rel_change(pre: float, post: float) -> float:
    """The paper's relative change, in percent: (post - pre) / min(pre, post)."""
    return 100.0 * (post - pre) / max(min(pre, post), 1e-12)


def _chart(results: list[dict], after: str, vocab: list[tuple[str, str]]) -> list[TokenChange]:
    """The paper's chart over the pairs: each word's relative change of its mean probability, with a
    two-sample t-test (as ``paradigm_analysis.suppress``)."""
    from scipy import stats  # here, not at the top: 1.1 s of every app start for a test few requests run

    out = []
    for tok, group in vocab:
        pre = np.array([r["before"][tok] for r in results])
        post = np.array([r[after][tok] for r in results])
        pval = 1.0 if np.allclose(pre, post) else float(stats.ttest_ind(pre, post).pvalue)
        out.append(TokenChange(tok, group, float(pre.mean()), float(post.mean()),
                               rel_change(float(pre.mean()), float(post.mean())), pval))
    return out


def _overturned(results: list[dict], pairs, after: str) -> tuple[int, int, int]:
    """(correct before, correct after, overturned: correct before and wrong after) pair counts."""
    ok_b = [r["before"][p.good_token] > r["before"][p.bad_token] for r, p in zip(results, pairs)]
    ok_a = [r[after][p.good_token] > r[after][p.bad_token] for r, p in zip(results, pairs)]
    return sum(ok_b), sum(ok_a), sum(b and not a for b, a in zip(ok_b, ok_a))


@timed
def kn_sharing(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    """Fig. 2 / Table 4: per determiner, the share of its pairs in which a neuron is a (coarse) KN; the most
    singular-specific and the most plural-specific neuron."""
    items = items if items is not None else Items()
    pairs, prompts = both_numbers(lm, "determiner_noun_agreement_2", n, PLURAL_DETS)
    results = _attributed(lm, items, pairs, prompts, progress, site=lm.arch.seed_site)
    coarse = [_coarse(r) for r in results]
    by_det = {d: [c for c, r in zip(coarse, results) if r["target"] == d] for d in DETERMINERS}
    neurons = sorted(set().union(*coarse))
    if not neurons:
        raise InputError(f"no coarse neuron in any pair on {lm.spec}: nothing to share")

    def count(nrn, dets):
        return sum(nrn in s for d in dets for s in by_det[d]), sum(len(by_det[d]) for d in dets)

    def share(nrn, d):
        k, m = count(nrn, (d,))
        return k / m if m else 0.0

    def specific(own, other):
        return max(neurons, key=lambda x: np.mean([share(x, d) for d in own]) - np.mean([share(x, d) for d in other]))

    sg, pl = specific(SINGULAR_DETS, PLURAL_DETS), specific(PLURAL_DETS, SINGULAR_DETS)
    sg_shares, pl_shares = [share(sg, d) for d in DETERMINERS], [share(pl, d) for d in DETERMINERS]
    pub_sg, pub_pl = published.KN_SHARING[(10, 2096)], published.KN_SHARING[(9, 1094)]

    def paper(neuron, pub, dets):
        return f"BERT's {neuron}: " + ", ".join(f"{d} {100 * pub[d]:.0f}%" for d in dets)

    found = []
    for label, nrn, pub, own, other, pub_n in (("singular", sg, pub_sg, SINGULAR_DETS, PLURAL_DETS, "(10, 2096)"),
                                                ("plural", pl, pub_pl, PLURAL_DETS, SINGULAR_DETS, "(9, 1094)")):
        found.append(findings.share(f"{label} KN {nrn}: a KN in {' / '.join(own)} pairs", *count(nrn, own),
                                    "above", MAJORITY, paper(pub_n, pub, own)))
        found.append(findings.share(f"{label} KN {nrn}: a KN in {' / '.join(other)} pairs", *count(nrn, other),
                                    "below", OTHER_NUMBER, paper(pub_n, pub, other) + "; neither number's neuron "
                                    "appears for the other"))
    rows = [{"item": f"singular KN {sg}: share of this / that / these / those pairs", "live": shares_text(sg_shares),
             "published": f"(10, 2096): {shares_text([pub_sg[d] for d in DETERMINERS])}"},
            {"item": f"plural KN {pl}: share of this / that / these / those pairs", "live": shares_text(pl_shares),
             "published": f"(9, 1094): {shares_text([pub_pl[d] for d in DETERMINERS])}"},
            {"item": "pairs per determiner", "live": " / ".join(str(len(by_det[d])) for d in DETERMINERS),
             "published": "283 pairs in all"}]
    sizes = [len(by_det[d]) for d in DETERMINERS]
    sg_name, pl_name = f"singular KN {sg} (live)", f"plural KN {pl} (live)"
    figure = {"type": "bar", "title": "Share of each determiner's pairs in which the neuron is a KN",
              "x": list(DETERMINERS), "ylabel": "share of pairs",
              "series": {sg_name: sg_shares, pl_name: pl_shares,
                         "(10, 2096), BERT (paper)": [pub_sg[d] for d in DETERMINERS],
                         "(9, 1094), BERT (paper)": [pub_pl[d] for d in DETERMINERS]},
              "intervals": {sg_name: [findings.share_bar(count(sg, (d,))[0], size, 1) for d, size in zip(DETERMINERS, sizes)],
                         pl_name: [findings.share_bar(count(pl, (d,))[0], size, 1) for d, size in zip(DETERMINERS, sizes)]}}
    return ModelRun(lm.spec, rows, found, figure,
                    detail={"singular": list(sg), "plural": list(pl), "n_pairs": len(pairs)})


@timed
def det_agreement(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    """Fig. 3 / 6a: suppress the plural (and, apart, the singular) KNs of det_n_agr_2 and chart the 24
    modifiers' relative probability change; Fig. 4: does the number-neutral "scattered" move with them?"""
    items = items if items is not None else Items()
    pairs, prompts = both_numbers(lm, "determiner_noun_agreement_2", n, PLURAL_DETS)
    results = _attributed(lm, items, pairs, prompts, progress, share=0.8, site=lm.arch.seed_site)
    kns = {"plural_kns": _kns([r for r in results if r["target"] in PLURAL_DETS]),
           "singular_kns": _kns([r for r in results if r["target"] in SINGULAR_DETS])}
    vocab = [(tok, g) for g, toks in paradigms.modifiers().items() for tok in toks if single_token(lm, tok) is not None]
    words = sorted({t for t, _ in vocab} | {w for p in pairs for w in (p.good_token, p.bad_token)})
    sup = []
    for k, (p, prompt) in enumerate(zip(pairs, prompts)):
        sup.append(_suppressed(lm, items, p, prompt, words, kns))
        tick(progress, 0.8 + 0.2 * (k + 1) / len(pairs), f"suppressing at prompt {k + 1}/{len(pairs)}")
    by_pl, by_sg = _chart(sup, "plural_kns", vocab), _chart(sup, "singular_kns", vocab)
    change = {t.token: t for t in by_pl}

    def per_pair(tok, after="plural_kns"):
        return [round(rel_change(r["before"][tok], r[after][tok]), 6) for r in sup]

    found = [findings.mean(f"p({d}), plural KNs suppressed", per_pair(d),
                           "above" if published.DET_SUPPRESSION[d] > 0 else "below", 0,
                           f"BERT: {d} {published.DET_SUPPRESSION[d]:+g}% (Fig. 3)", "% relative change per pair")
             for d in DETERMINERS if d in change]
    overturned = {after: _overturned(sup, pairs, after) for after in kns}
    for after, label in (("plural_kns", "plural"), ("singular_kns", "singular")):
        found.append(findings.share(f"preferences overturned, {label} KNs suppressed", overturned[after][2],
                                    len(pairs), "below", OVERTURN_BOUNDARY,
                                    f"BERT: at most {published.most_overturned()} points (Fig. 6b)"))
    sc = change.get("scattered")
    if sc:
        found.append(findings.mean("p(scattered), plural KNs suppressed", per_pair("scattered"), "below", 0,
                                   "BERT: drops significantly although it marks no number (Fig. 4)",
                                   "% relative change per pair"))
    rows = [{"item": f"suppress plural KNs {kns['plural_kns']}: rel. change of p({d}) (%)",
             "live": round(change[d].rel_change, 1) if d in change else None, "published": published.DET_SUPPRESSION[d]}
            for d in DETERMINERS]
    rows.append({"item": "Fig. 4: p(scattered) (number-neutral) with the plural KNs suppressed: rel. change (%), p-value",
                 "live": f"{sc.rel_change:+.1f}, p = {sc.p_value:.2g}" if sc else "not a single token",
                 "published": "drops significantly (a co-occurrence bias, not number)"})
    rows.append({"item": "grammatical preferences overturned (plural / singular KNs suppressed) (%)",
                 "live": f"{pct(overturned['plural_kns'][2] / len(pairs))} / "
                         f"{pct(overturned['singular_kns'][2] / len(pairs))}", "published": "<= 5.2"})
    tokens = [t.token for t in by_pl]
    figure = {"type": "bar", "title": "Relative change of p(modifier) when the KNs are suppressed (%)", "x": tokens,
              "ylabel": "relative change (%)",
              "series": {"plural KNs suppressed (live)": [t.rel_change for t in by_pl],
                         "singular KNs suppressed (live)": [t.rel_change for t in by_sg],
                         "plural KNs suppressed, BERT (paper)": [published.DET_SUPPRESSION.get(t) for t in tokens]}}
    detail = {"plural_kns": [list(x) for x in kns["plural_kns"]], "singular_kns": [list(x) for x in kns["singular_kns"]],
              "tokens": [{"token": t.token, "group": t.group, "rel_change": t.rel_change, "p_value": t.p_value}
                         for t in by_pl]}
    return ModelRun(lm.spec, rows, found, figure, detail=detail)


OVERTURN_PARADIGMS = tuple(published.OVERTURN)


@timed
def overturn(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    """Fig. 6b: accuracy on four determiner paradigms before and after suppressing each one's KNs."""
    items = items if items is not None else Items()
    rows, found, before, after, pub_b, pub_a, sizes = [], [], [], [], [], [], []
    m = len(OVERTURN_PARADIGMS)
    for k, name in enumerate(OVERTURN_PARADIGMS):
        pairs, prompts = usable_pairs(lm, name, n)
        kns = {"kns": _kns(_attributed(lm, items, pairs, prompts, progress, 0.9 / m, k / m, lm.arch.seed_site))}
        sup = [_suppressed(lm, items, p, prompt, [p.good_token, p.bad_token], kns) for p, prompt in zip(pairs, prompts)]
        tick(progress, (k + 1) / m, f"{name} suppressed")
        ok_b, ok_a, over = _overturned(sup, pairs, "kns")
        b, a = published.OVERTURN[name]
        found.append(findings.share(f"{name}: overturned", over, len(pairs), "below", OVERTURN_BOUNDARY,
                                    f"BERT {b:g} -> {a:g}% correct, {b - a:.1f} points (Fig. 6b)"))
        rows.append({"item": f"{name}: accuracy before -> after (%)",
                     "live": f"{pct(ok_b / len(pairs))} -> {pct(ok_a / len(pairs))}", "published": f"{b} -> {a}"})
        before.append((ok_b, pct(ok_b / len(pairs))))
        after.append((ok_a, pct(ok_a / len(pairs))))
        sizes.append(len(pairs))
        pub_b.append(b)
        pub_a.append(a)

    def pct_errors(counts):
        return [findings.share_bar(c, size) for (c, _), size in zip(counts, sizes)]
    figure = {"type": "bar", "title": "Accuracy before and after suppressing the KNs (%)",
              "x": [x.replace("determiner_noun_agreement", "det_n_agr") for x in OVERTURN_PARADIGMS],
              "ylabel": "accuracy (%)",
              "series": {"before (live)": [v for _, v in before], "after (live)": [v for _, v in after],
                         "before, BERT (paper)": pub_b, "after, BERT (paper)": pub_a},
              "intervals": {"before (live)": pct_errors(before), "after (live)": pct_errors(after)}}
    return ModelRun(lm.spec, rows, found, figure)


def _selections(lm: LM) -> dict:
    """The KN selections already made on these exact weights (item results: neurons, tau, R^2_1).
    localisation and kn-layers select the same paradigms' and P101's KNs (kn-layers: a subset), each
    costing up to a minute on the real model; `paper --all` runs both. Keyed on the weights' checksum (1.4 s
    on the real model, once per claim), so a model with an edit applied never reads its base weights'
    selections, nor the other way round."""
    memo = per_model(lm.model, "claim_selections")
    weights = weights_checksum(lm.model)
    if memo.get("weights") != weights:
        memo.clear()
        memo["weights"] = weights
    return memo


def _selection(key: str, n: int, items: Items, made: dict, fn) -> dict:
    """One selection item (``{"neurons", "tau", "r2_1", "n_prompts"}``), from ``made`` when this process
    already selected it on these weights at this size."""
    memo_key = (key, n)
    result = items.measure(key, lambda: made[memo_key] if memo_key in made else fn())
    made.setdefault(memo_key, result)
    return result


def _selected(maps: list[np.ndarray]) -> dict:
    """The seed's figures of one group of prompts: its KNs (the tau search), the final tau and R^2_1 over its
    raw maps (``cosine_sim_n``)."""
    neurons, tau = select_coarse([coarse_neurons(m) for m in maps])
    return {"neurons": [list(x) for x in neurons], "tau": round(tau, 6), "r2_1": round(r2_1(maps), 6),
            "n_prompts": len(maps)}


# How each figure groups its prompts, named in the findings
BY_TARGET_TYPE = "grouping: a paradigm's prompts by target type, the seed's"
BY_TEMPLATE = "facts: a relation's facts per template"
BY_FACT = "facts: each fact over its 4 paraphrases"


def _paradigm_groups(lm: LM, name: str, n: int, items: Items, made: dict, progress: Progress, share: float,
                     start: float, site: str) -> dict[str, dict]:
    """The paradigm's KNs as the seed's ``search_kns`` finds them: per target type (``usable_groups``: the
    critical word's number, or gender), over up to ``n`` prompts of that type, at the KN ``site``; one
    item ``paradigm:<name>:<type>@<n>`` per group (``{"neurons", "tau", "r2_1", "n_prompts"}``).
    ``usable_pairs``'s InputError when the model cannot be asked the paradigm."""
    groups = usable_groups(lm, name, n)
    if not groups:
        raise InputError(f"{name}: no target type has two usable pairs on {lm.spec}")
    out, total, done = {}, sum(len(g[0]) for g in groups.values()), 0
    for kind, (pairs, prompts) in groups.items():
        def select_now(pairs=pairs, prompts=prompts, before=done):
            maps = []
            for k, (p, prompt) in enumerate(zip(pairs, prompts)):
                maps.append(_map(lm, items, p, prompt, site))
                tick(progress, start + share * (before + k + 1) / total,
                     f"{name} ({kind}): attributing prompt {k + 1}/{len(pairs)}")
            return _selected(maps)
        out[kind] = _selection(_sited(f"paradigm:{name}:{kind}@{n}", site), n, items, made, select_now)
        done += len(pairs)
    return out


def _fact_maps(lm: LM, relation: str, subject: str, items: Items, site: str) -> list[np.ndarray]:
    """The IG maps of one fact's object at each of its relation's training templates."""
    rel = F.relation(relation)
    fact = rel.fact(subject)
    return [items.array(_sited(f"ig:{relation}:{fact.subject}:{t}", site),
                        lambda t=t: attribute(lm, F.prompt(t, fact.subject, lm.masked), fact.object, site=site).scores)
            for t in rel.train_templates]


def _fact_selections(lm: LM, relation: str, n: int, items: Items, made: dict, site: str) -> list[dict]:
    """The KNs of each of the first ``n`` known facts over its paraphrases (Dai et al.'s per-fact search),
    one item ``fact:<rel>:<subject>``."""
    return [_selection(_sited(f"fact:{relation}:{subject}", site), n, items, made,
                       lambda subject=subject: _selected(_fact_maps(lm, relation, subject, items, site)))
            for subject in known_subjects(lm, relation, n)]


def _relation_groups(lm: LM, relation: str, n: int, items: Items, made: dict, site: str) -> list[dict]:
    """A relation's KNs as the paper's relation rows are read here (docs/paper.md, section 2): per training
    template, over the prompts of up to ``n`` known facts of the relation (a ParaRel relation's prompts
    pooled across its facts, as a paradigm's across its items); one item ``relation:<rel>:<k>@<n>`` per
    template. Empty when the model knows fewer than two of its facts."""
    subjects = known_subjects(lm, relation, n)
    if len(subjects) < 2:
        return []
    out = []
    for k in range(len(F.relation(relation).train_templates)):
        def select_now(k=k):
            return _selected([_fact_maps(lm, relation, s, items, site)[k] for s in subjects])
        out.append(_selection(_sited(f"relation:{relation}:{k}@{n}", site), n, items, made, select_now))
    return out


def _mean_figures(sels: list[dict]) -> list[float]:
    """[|KN|, tau, R^2_1], each the mean over the groups (the paper's per-paradigm figure)."""
    return [float(np.mean([len(s["neurons"]) for s in sels])), float(np.mean([s["tau"] for s in sels])),
            float(np.mean([s["r2_1"] for s in sels]))]


def localisation_paradigms(lm: LM) -> tuple[str, ...]:
    """Every BLiMP paradigm of the paper (Table 2) the world has; on a causal model those whose critical
    word comes before its controller are left out when asked (``usable_pairs`` says why)."""
    return tuple(p for p in published.PARADIGMS if p in paradigms.paradigm_names())


def localisation_relations(lm: LM) -> tuple[str, ...]:
    """The relations of the paper's Table 8 rows: P101 and P1303 beside BERT's paradigms, P101 otherwise."""
    return tuple(i for i in published.LOCALISATION["BERT-base"] if i.startswith("P")) if lm.masked else ("P101",)


def _range(model: str, names) -> str:
    vals = [published.LOCALISATION[model][x][0] for x in names if x in published.LOCALISATION[model]]
    return f"{min(vals):g}-{max(vals):g}" if vals else "-"


@timed
def localisation(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    """Fig. 5a / Table 8: |KN|, tau and R^2_1 of every paradigm the model can be asked and of the relations,
    beside the paper's rows, measured as the seed measures them: a paradigm's figures are the mean over its
    target types (sg / pl), each over up to ``n`` prompts (``_paradigm_groups``); a relation's the mean over
    its templates, each over up to ``n`` known facts (``_relation_groups``); at the family's seed site."""
    items = items if items is not None else Items()
    site = lm.arch.seed_site
    names, relations, made = localisation_paradigms(lm), localisation_relations(lm), _selections(lm)
    rows, live, by_relation = [], {}, {}
    steps = len(names) + len(relations)
    facts: dict[str, list[dict]] = {}
    per_fact: dict[str, list[dict]] = {}
    # the relations first: their per-fact items are the ones a smaller rerun shares with a larger record
    for k, relation in enumerate(relations):
        sels = _relation_groups(lm, relation, n, items, made, site)
        tick(progress, (k + 1) / steps, relation)
        if not sels:
            items.leave_out(f"relation:{relation}", f"{lm.spec} knows fewer than two of {relation}'s facts")
            rows.append({"item": f"{relation}: |KN| / tau / R^2_1", "live": "fewer than two known facts",
                         "published": published.localisation_row("BERT-base", relation)})
            continue
        facts[relation] = sels
        per_fact[relation] = _fact_selections(lm, relation, n, items, made, site)  # the same maps, by fact
        by_relation[relation] = _mean_figures(sels)
    for k, name in enumerate(names):
        try:
            groups = _paradigm_groups(lm, name, n, items, made, progress, 1 / steps, (len(relations) + k) / steps,
                                      site)
        except InputError as e:
            items.leave_out(f"paradigm:{name}", str(e))
            continue
        live[name] = _mean_figures(list(groups.values()))
    live.update(by_relation)
    for item, vals in live.items():
        paper_figure = (f"BERT {published.localisation_row('BERT-base', item)}" if lm.masked else
                        " | ".join(f"{m} {published.localisation_row(m, item)}"
                                   for m in ("GPT-2", "LLaMA-2-7B", "BERT-base")
                                   if published.localisation_row(m, item) != "-")) or "-"
        rows.append({"item": f"{item}: |KN| / tau / R^2_1", "live": " / ".join(f"{v:.3g}" for v in vals),
                     "published": paper_figure})
    for relation, sels in per_fact.items():
        rows.append({"item": f"{relation}, each fact over its 4 paraphrases (knlab's earlier grouping): "
                             "|KN| / tau / R^2_1", "live": " / ".join(f"{v:.3g}" for v in _mean_figures(sels)),
                     "published": "-"})
    grammar = {i: v for i, v in live.items() if not i.startswith("P")}
    variant = f"site {site}; " + BY_TARGET_TYPE
    # The thesis: grammar localises to KNs as facts do. |KN| >= 1 on average, the paper's BERT paradigms
    # having 1.86-9.79 (GPT-2's four fewer: 0.06-1.32). The tau search lowers tau until it keeps 2 neurons
    # or more, so this finding is nearly bound to agree: the R^2_1 one is the test.
    det = [x for x in published.LOCALISATION["BERT-base"] if not x.startswith("P")]
    found = [findings.mean(f"grammar: |KN| per paradigm ({variant})", [v[0] for v in grammar.values()], "above", 1,
                           f"BERT {_range('BERT-base', det)} per paradigm; GPT-2 {_range('GPT-2', det)}, "
                           f"LLaMA-2 {_range('LLaMA-2-7B', det)}", "KNs")]
    # R^2_1 (how much a paradigm's prompts agree on their map) per paradigm, less the facts' mean: the
    # paper's BERT paradigms (.55-.67) sit about as high as its facts (P101 .399, P1303 .684). "About as
    # well": no more than 0.1 below the facts (the facts' own mean is taken as exact here). The facts' side
    # as the relation rows are read (per template across a relation's facts), and beside it knlab's earlier
    # per-fact grouping, whose four paraphrases are near-identical sentences in the organisms' world.
    if grammar:
        pub_g = np.mean([published.LOCALISATION["BERT-base"][x][2] for x in det])
        pub_f = np.mean([published.LOCALISATION["BERT-base"][x][2] for x in published.LOCALISATION["BERT-base"]
                         if x.startswith("P")])
        paper = f"BERT: paradigms {pub_g:.2f} vs relations {pub_f:.2f}, {pub_g - pub_f:+.2f}"
        for sides, fact_label, note in (
                (facts, BY_TEMPLATE, "; the world's 4 templates are near-identical sentences, "
                 "ParaRel's paraphrases are not: a relation is pooled across its facts per template"),
                (per_fact, BY_FACT, "; knlab's earlier facts' side, not the paper's")):
            fact_r2 = [s["r2_1"] for sels in sides.values() for s in sels]
            if not fact_r2:
                continue
            f_mean = float(np.mean(fact_r2))
            found.append(findings.mean(f"grammar's R^2_1 less the facts' ({variant}; {fact_label})",
                                       [round(v[2] - f_mean, 6) for v in grammar.values()], "above", -0.1,
                                       paper + note, "R^2_1"))
    figure = {"type": "bar", "title": "|KN| per paradigm / relation", "x": list(live), "ylabel": "|KN|",
              "series": {"live": [v[0] for v in live.values()],
                         **{f"{m} (paper)": [published.LOCALISATION[m].get(i, (None,))[0] for i in live]
                            for m in (("BERT-base",) if lm.masked else ("GPT-2", "LLaMA-2-7B"))}}}
    return ModelRun(lm.spec, rows, found, figure, detail={"live": live, "site": site, "group_size": n})


@timed
def kn_layers_claim(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    """Fig. 5b / 12: the layers the KNs of grammar (per target type, as ``localisation``) and of facts (each
    P101 fact over its paraphrases) sit in, at the family's seed site."""
    items = items if items is not None else Items()
    site = lm.arch.seed_site
    paradigms_ = (("determiner_noun_agreement_1", "determiner_noun_agreement_2") if lm.masked else
                  tuple(published.LOCALISATION["GPT-2"])[:2])
    L, made = lm.n_layers, _selections(lm)
    grammar = np.zeros(L)
    for k, name in enumerate(paradigms_):
        groups = _paradigm_groups(lm, name, n, items, made, progress, 0.6 / len(paradigms_),
                                  0.6 * k / len(paradigms_), site)
        for s in groups.values():
            grammar += kn_layers([tuple(x) for x in s["neurons"]], L)
    facts = np.zeros(L)
    for s in _fact_selections(lm, "P101", max(1, n // 3), items, made, site):
        facts += kn_layers([tuple(x) for x in s["neurons"]], L)
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
    # the paper: grammar's and facts' KNs sit in the same layers, so most grammar KNs (above 50%) sit in the
    # two layers holding most fact KNs; k = grammar KNs there, n = grammar KNs (no fact KN: nothing to ask)
    top_f = sorted(np.argsort(share_f)[::-1][:2].tolist()) if facts.sum() else []
    paper_model = "BERT-base" if lm.masked else "GPT-2"
    variant = f"site {site}; " + BY_TARGET_TYPE + "; " + BY_FACT
    rows.append({"item": "the two layers holding the most fact KNs", "live": str(top_f), "published": "-"})
    found = [findings.share(f"grammar KNs in the fact KNs' two top layers ({variant})",
                            int(sum(grammar[l] for l in top_f)) if top_f else 0, int(grammar.sum()) if top_f else 0,
                            "above", MAJORITY, f"{paper_model}: {published.KN_LAYERS[paper_model]}")]
    figure = {"type": "bar", "title": "Where the KNs sit (share of KNs per layer)", "x": list(range(L)),
              "xlabel": "layer", "ylabel": "share of KNs", "series": {"grammar": share_g.tolist(), "facts (P101)": share_f.tolist()}}
    return ModelRun(lm.spec, rows, found, figure, detail={"fact_top_layers": top_f, "site": site})


SV_PARADIGM = "regular_plural_subject_verb_agreement_1"


@timed
def sv_agreement(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    """Fig. 11: the singular and the plural KNs of subject-verb agreement, each suppressed, and the change of
    p(verb) for the paper's verb pairs. The KNs of each number are searched over that number's pairs (the
    seed's grouping) at the family's seed site; knlab's own site (after the activation function) gives one
    finding beside them, to show whether an outcome changes with the site."""
    items = items if items is not None else Items()
    pairs, prompts = both_numbers(lm, SV_PARADIGM, n, ("are", "were"))
    site, own = lm.arch.seed_site, "activation"
    sites = (site,) if site == own else (site, own)
    kns = {}
    for j, at in enumerate(sites):
        results = _attributed(lm, items, pairs, prompts, progress, 0.8 / len(sites), 0.8 * j / len(sites), at)
        tag = "" if at == site else f"@{at}"
        kns[f"singular_kns{tag}"] = _kns([r for r in results if r["target"] in ("is", "was")])
        kns[f"plural_kns{tag}"] = _kns([r for r in results if r["target"] in ("are", "were")])
    groups = {"plural verbs": [pl for pl, _ in published.SV_VERBS], "singular verbs": [sg for _, sg in published.SV_VERBS]}
    vocab = [(v, g) for g, vs in groups.items() for v in vs if single_token(lm, v) is not None]
    words = sorted({v for v, _ in vocab} | {w for p in pairs for w in (p.good_token, p.bad_token)})
    sup = []
    for k, (p, prompt) in enumerate(zip(pairs, prompts)):
        sup.append(_suppressed(lm, items, p, prompt, words, kns))
        tick(progress, 0.8 + 0.2 * (k + 1) / len(pairs), f"suppressing at prompt {k + 1}/{len(pairs)}")
    by = {after: _chart(sup, after, vocab) for after in ("singular_kns", "plural_kns")}

    def mean_change(after, group):
        vals = [t.rel_change for t in by[after] if t.group == group]
        return float(np.mean(vals)) if vals else float("nan")

    def per_pair(after, group, magnitude=False):
        """Each pair's mean relative change over the group's verbs (``magnitude``: of its absolute value)."""
        out = []
        for r in sup:
            vals = [rel_change(r["before"][v], r[after][v]) for v, g in vocab if group in (g, "all verbs")]
            out.append(float(np.mean(np.abs(vals) if magnitude else vals)) if vals else float("nan"))
        return out

    gpt2 = f"GPT-2: {published.SV_AGREEMENT['GPT-2']}"
    sg_sg, sg_pl = per_pair("singular_kns", "singular verbs"), per_pair("singular_kns", "plural verbs")
    found = []
    variant = f"site {site}; grouping: by number, the seed's"
    if vocab:  # each statement is one clause of the paper's GPT-2 sentence
        found.append(findings.mean(f"singular verbs, singular KNs suppressed ({variant})", [round(x, 6) for x in sg_sg],
                                   "below", 0, gpt2, "% relative change per pair"))
        found.append(findings.mean(f"singular verbs' change less plural verbs', singular KNs suppressed ({variant})",
                                   [round(a - b, 6) for a, b in zip(sg_sg, sg_pl)], "below", 0, gpt2,
                                   "% relative change per pair"))
        found.append(findings.mean(f"|change| of all verbs, plural KNs less singular KNs ({variant})",
                                   [round(a - b, 6) for a, b in zip(per_pair("plural_kns", "all verbs", True),
                                                                    per_pair("singular_kns", "all verbs", True))],
                                   "above", 0, gpt2, "% relative change per pair"))
        if site != own:  # the same clause at knlab's own site: does the outcome change with the site?
            own_sg, own_pl = (per_pair(f"singular_kns@{own}", "singular verbs"),
                              per_pair(f"singular_kns@{own}", "plural verbs"))
            found.append(findings.mean(f"singular verbs' change less plural verbs', singular KNs suppressed "
                                       f"(site {own}, knlab's; grouping: by number, the seed's)",
                                       [round(a - b, 6) for a, b in zip(own_sg, own_pl)], "below", 0, gpt2,
                                       "% relative change per pair"))
    rows = []
    for label, after in (("singular", "singular_kns"), ("plural", "plural_kns")):
        rows.append({"item": f"{label} KNs {kns[after]} suppressed: mean rel. change of singular / plural verbs (%)",
                     "live": f"{mean_change(after, 'singular verbs'):+.1f} / {mean_change(after, 'plural verbs'):+.1f}",
                     "published": f"GPT-2: {published.SV_AGREEMENT['GPT-2']}; "
                                  f"LLaMA-2: {published.SV_AGREEMENT['LLaMA-2-7B']}"})
    missing = [v for g in groups.values() for v in g if single_token(lm, v) is None]
    rows.append({"item": "verbs charted (not single tokens of the model: left out)",
                 "live": f"{len(vocab)} of {2 * len(published.SV_VERBS)}" + (f"; missing {missing}" if missing else ""),
                 "published": ", ".join("/".join(p) for p in published.SV_VERBS)})
    figure = {"type": "bar", "title": "Relative change of p(verb) when the KNs are suppressed (%)",
              "x": [t.token for t in by["singular_kns"]], "ylabel": "relative change (%)",
              "series": {"singular KNs suppressed": [t.rel_change for t in by["singular_kns"]],
                         "plural KNs suppressed": [t.rel_change for t in by["plural_kns"]]}}
    return ModelRun(lm.spec, rows, found, figure,
                    detail={"site": site, **{k: [list(x) for x in v] for k, v in kns.items()}})
