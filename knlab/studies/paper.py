"""The paper's claims (PAPER.md section 7), each rerun live on a shipped model and set beside the published
figure. Used by the Paper tab, ``python -m knlab paper`` and notebooks alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from knlab.core.errors import InputError
from knlab.core.limits import check_count
from knlab.core.models import LM
from knlab.studies.edit import PUBLISHED, evaluate_relation
from knlab.studies.localisation import relation_localisation
from knlab.studies.paradigm import analyse


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    published: str  # the claim as the paper states it
    model: str  # the shipped model it is rerun on
    run: Callable[..., "ClaimResult"] = field(repr=False, compare=False)


@dataclass
class ClaimResult:
    claim: str
    model: str
    rows: list[dict]  # one row per figure: {"item", "live", "published"}
    summary: str
    detail: object = None  # the underlying result (ParadigmAnalysis, Evaluation, ...), for plotting

    def to_json(self) -> dict:
        return {"claim": self.claim, "model": self.model, "rows": self.rows, "summary": self.summary}


def _det_agreement(lm: LM, n: int = 40, progress=None) -> ClaimResult:
    res = analyse(lm, "determiner_noun_agreement_2", n, progress=progress)
    published = {"this": 316.0, "these": -124.0, "that": 208.0, "those": -158.0}
    rows = [{"item": f"rel. change of p({t.token})", "live": round(t.rel_change, 1), "published": published[t.token]}
            for t in res.tokens if t.token in published]
    rows.append({"item": "overturned", "live": round(100 * res.overturned, 1), "published": "<= 5.2"})
    return ClaimResult("det-agreement", lm.spec, rows,
                       f"{len(res.neurons)} shared neurons {res.neurons}; suppressing them overturns "
                       f"{res.overturned:.1%} of {res.n_prompts} grammatical preferences", res)


def _localisation(lm: LM, n: int = 10, progress=None) -> ClaimResult:
    published = {"determiner_noun_agreement_1": (3.94, .71, .56), "determiner_noun_agreement_2": (1.86, .62, .56),
                 "P101": (.167, .515, .399), "P1303": (10.46, .814, .684)}
    rows = []
    for k, (item, (kn, tau, r2)) in enumerate(published.items()):
        if item.startswith("P"):
            loc = relation_localisation(lm, item, n)
            live = (loc.mean_kn, loc.mean_tau, loc.mean_r2_1)
        else:
            res = analyse(lm, item, max(2, 4 * n))
            live = (len(res.neurons), res.tau, res.r2_1)
        rows.append({"item": f"{item}: |KN| / tau / R^2_1", "live": " / ".join(f"{x:.3g}" for x in live),
                     "published": f"{kn} / {tau} / {r2}"})
        if progress:
            progress((k + 1) / len(published), item)
    return ClaimResult("localisation", lm.spec, rows, "KNs per fact or paradigm, final tau and R^2_1 (BERT-base in "
                       "the paper; the shipped masked model here)")


def _rome_table(lm: LM, n: int = 20, progress=None) -> ClaimResult:
    rows, evals = [], []
    for k, (rid, crit) in enumerate((("P36", "symmetry"), ("P1376", "symmetry"), ("P101", "synonymy"))):
        ev = evaluate_relation(lm, "rome", rid, n)
        evals.append(ev)
        for c in ("reliability", crit):
            pub = " | ".join(f"{m} {PUBLISHED['rome'][m][rid][c]}" for m in ("GPT-2 XL", "LLaMA-2-7B"))
            rows.append({"item": f"{rid} {c} (%)", "live": round(100 * (ev.rates[c] or 0), 2), "published": pub})
        if progress:
            progress((k + 1) / 3, rid)
    return ClaimResult("rome-table-1", lm.spec, rows, f"each fact edited on its own; {n} facts per relation", evals)


def _kn_edit(lm: LM, n: int = 20, progress=None) -> ClaimResult:
    ev = evaluate_relation(lm, "kn", "P36", n, progress=progress)
    rows = [{"item": f"KN edit {c} on P36 (%)", "live": round(100 * (ev.rates[c] or 0), 2),
             "published": "reliability: GPT-J 1.66, T5-XL 47.86 (Yao et al. 2023, CounterFact)" if c == "reliability"
             else "-"} for c in ("reliability", "generality", "locality")]
    return ClaimResult("kn-edit", lm.spec, rows, "Dai et al.'s KN edit on the same facts ROME is evaluated on", ev)


CLAIMS = [
    Claim("det-agreement", "Determiner-noun agreement has 'knowledge neurons', but they barely decide anything",
          "BERT: neuron (9, 1094) is a KN in 100% of these/those pairs, (10, 2096) in 93% of 'this' and 75% of "
          "'that' pairs. Suppressing them changes this +316%, these -124%, that +208%, those -158%, yet at most "
          "5.2% of predictions are overturned (det_n_agr_2: 100% -> 94.8% correct).", "world-bert", _det_agreement),
    Claim("localisation", "Grammar localises to KNs about as well as facts do",
          "BERT, |KN| / tau / R^2_1: det_n_agr_1 3.94 / .71 / .56; det_n_agr_2 1.86 / .62 / .56; P101 .167 / .515 / "
          ".399; P1303 10.46 / .814 / .684. KNs sit mostly in layers 9-11.", "world-bert", _localisation),
    Claim("rome-table-1", "ROME edits are reliable but not symmetric and not synonym-aware (Table 1)",
          "GPT-2 XL: P101 99.82% / synonymy 52.35%; P1376 96.37% / symmetry 23.71%; P36 99.79% / 25.17%. "
          "LLaMA-2-7B: P101 100% / 58.36%; P1376 100% / 33.40%; P36 100% / 33.64%.", "world-gpt", _rome_table),
    Claim("kn-edit", "Editing knowledge neurons rarely changes the fact",
          "KN edit reliability reported by Yao et al. 2023: CounterFact GPT-J 1.66%, T5-XL 47.86%.", "world-gpt",
          _kn_edit),
]


def claim(claim_id: str) -> Claim:
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise InputError(f"unknown claim {claim_id!r}; claims: {', '.join(c.id for c in CLAIMS)}")


def rerun(lm: LM, claim_id: str, n: int | None = None, progress=None) -> ClaimResult:
    c = claim(claim_id)
    if n is None:
        return c.run(lm, progress=progress)
    n = check_count(n, "paradigm_prompts", "the number of facts / prompts", low=2)
    return c.run(lm, n, progress=progress)
