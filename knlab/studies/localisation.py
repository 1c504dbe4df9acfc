"""Knowledge neurons of the world's facts: one fact over its paraphrases, and a relation's localisation figures
(|KN|, tau, R^2_1: the paper's Table 8 rows; docs/paper.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.methods.attribute import IG_STEPS, attribute
from knlab.methods.neurons import Selection, select
from knlab.world import facts as F


@dataclass
class Localisation:
    """The paper's localisation figures for a relation or paradigm: mean |KN|, final tau and R^2_1."""

    source: str
    n: int
    mean_kn: float
    mean_tau: float
    mean_r2_1: float
    per_item: list[dict]

    def to_json(self) -> dict:
        return {"source": self.source, "n": self.n, "kn": self.mean_kn, "tau": self.mean_tau,
                "r2_1": self.mean_r2_1, "items": self.per_item}


def fact_neurons(lm: LM, relation: str, subject: str, steps: int = IG_STEPS, site: str = "activation") -> Selection:
    """Knowledge neurons of one fact over its paraphrase (training) templates."""
    rel = F.relation(relation)
    try:
        fact = rel.fact(subject)
    except KeyError:
        raise InputError(f"{relation} has no fact about {subject!r}") from None
    return select([attribute(lm, F.prompt(t, fact.subject, lm.masked), fact.object, steps, site=site).scores
                   for t in rel.train_templates])


def relation_localisation(lm: LM, relation: str, limit: int = 10, steps: int = IG_STEPS, progress=None,
                          site: str = "activation") -> Localisation:
    """|KN|, tau and R^2_1 averaged over a relation's first ``limit`` facts (the paper's P101 / P1303 rows)."""
    facts = F.relation(relation).facts[:limit]
    items = []
    for k, f in enumerate(facts):
        sel = fact_neurons(lm, relation, f.subject, steps, site)
        items.append({"subject": f.subject, **sel.to_json()})
        if progress:
            progress((k + 1) / len(facts))
    return Localisation(relation, len(items), float(np.mean([len(i["neurons"]) for i in items])),
                        float(np.mean([i["tau"] for i in items])), float(np.mean([i["r2_1"] for i in items])), items)
