"""The paper's Table 1 on a model: every fact of a relation edited on its own (the model restored after
each, the new object another fact's of the relation), and per criterion the share of facts for which it
held, beside the published figures (``studies.published``)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from knlab.core.errors import InputError
from knlab.core.limits import check_count, limits
from knlab.core.models import LM
from knlab.core.specs import applied
from knlab.core.tokens import first_token
from knlab.methods.intervene import summed_activation
from knlab.methods.predict import encode, next_token_probs, top_token
from knlab.studies.edit_report import METHODS, edit
from knlab.studies.known_facts import known_subjects
from knlab.studies.probes import CRITERIA, NEIGHBOURS, teacher_forced_accuracy
from knlab.studies.published import KN_EDIT_NOTE, rome_table_1
from knlab.world import facts as F

TABLE_RELATIONS = ("P36", "P1376", "P101")


@dataclass
class Evaluation:
    method: str
    model: str
    relation: str
    n: int
    counts: dict  # criterion -> [holds, probes]
    rates: dict  # criterion -> share of facts for which the criterion held (None: not applicable)
    skipped: list[dict]
    facts: list[dict]
    seconds: float
    # the seed's scoring (teacher-forced accuracy of the expected string, ``probes.teacher_forced_accuracy``)
    # per criterion, averaged over facts; None unless asked for
    seed_rates: dict | None = None

    def to_json(self) -> dict:
        out = {"method": self.method, "model": self.model, "relation": self.relation, "n": self.n}
        if self.seed_rates is not None:
            out["seed_scoring"] = self.seed_rates
        for c in CRITERIA:
            if c in ("symmetry", "synonymy") and self.counts[c][1] == 0:
                continue
            out[c] = self.rates[c]
        out.update(counts=self.counts, skipped=self.skipped, facts=self.facts, seconds=round(self.seconds, 2),
                   published=published_figures(self.method, self.relation))
        return out


def published_figures(method: str, relation: str) -> dict:
    """What the paper publishes beside this evaluation (``studies.published``): Table 1's row of the relation
    for ROME; for the KN edit, which the paper quotes on other data only, the note saying so."""
    if method == "kn":
        return {"note": KN_EDIT_NOTE}
    return rome_table_1(relation)


def counterfactual(rel: F.Relation, fact: F.Fact, avoid: set[str], prefer: set[str] | None = None) -> str:
    """The new object for an edit of ``fact``: another object of the same relation and table (a country's
    capital another country's, a state's another state's), fixed by a seed derived from the fact (Canada's
    capital may become Rome, never Ottawa); among ``prefer`` when any is left (the
    objects whose own reverse fact the model states, so that the symmetry probe can be asked)."""
    objects = sorted({f.object for f in rel.same_table(fact)} - avoid - {fact.object})
    preferred = [o for o in objects if prefer is not None and o in prefer]
    return random.Random(fact.id).choice(preferred or objects)


def answerable_objects(lm: LM, rel: F.Relation) -> set[str] | None:
    """The objects of ``rel`` whose own fact in the reverse relation the model states ("Rome is the capital
    of" -> Italy), or None for a relation without a reverse."""
    if rel.id not in F.REVERSE_RELATIONS:
        return None
    reverse = F.relation(F.REVERSE_RELATIONS[rel.id])
    return set(known_subjects(lm, reverse.id, len(reverse.facts)))


def _no_measure(key: str, fn: Callable[[], dict]) -> dict:
    return fn()


def edit_fact(lm: LM, method: str, rel: F.Relation, fact: F.Fact, prefer: set[str] | None, neighbours: int,
              layer: int | None, mom2: bool | str, seed_scoring: bool, rule: str = "dai",
              neurons: list[tuple[int, int]] | None = None) -> dict:
    """One fact edited and scored: the plain-JSON row of it, or ``{"skipped": why}``. A KN edit's row
    keeps its neurons and their summed activation at the prompt (``intervene.summed_activation``)."""
    prompt = F.prompt(rel.train_templates[0], fact.subject, lm.masked)
    top, answer = top_token(lm, next_token_probs(lm, encode(lm, prompt)))
    if top != first_token(lm, fact.object):  # the word itself, or a BPE model's first piece of it
        return {"skipped": f"model answers {answer!r}, not {fact.object!r}"}
    new = counterfactual(rel, fact, {answer, fact.object}, prefer)
    try:
        rep = edit(lm, method, prompt, fact.subject, new, layer=layer, neighbours=neighbours, generate_tokens=0,
                   mom2=mom2, rule=rule, neurons=neurons)
    except InputError as e:
        return {"skipped": str(e)}
    row: dict = {"subject": fact.subject, "old": rep.old, "new": new}
    if method == "kn":
        row["neurons"] = [list(n) for n in rep.neurons]
        row["activation"] = round(summed_activation(lm, prompt, tuple(map(tuple, rep.neurons))), 6)
    if seed_scoring:
        with applied(lm, [rep.spec]):
            scored = [(p.criterion, teacher_forced_accuracy(lm, p.prompt, p.expected)) for p in rep.probes
                      if p.criterion in ("reliability", "generality", "symmetry", "synonymy")]
        row["seed"] = {c: round(float(np.mean([a for cc, a in scored if cc == c])), 6) for c in
                       sorted({cc for cc, _ in scored})}
    for c in CRITERIA:
        v = rep.criteria.get(c)
        row[c] = None if v is None else round(float(v), 6)
        row[f"{c}_probes"] = [sum(p.holds for p in rep.probes if p.criterion == c),
                              sum(1 for p in rep.probes if p.criterion == c)]
    row["left_out"] = rep.left_out
    return row


def evaluate_relation(lm: LM, method: str, relation: str, limit: int | None = None, neighbours: int = NEIGHBOURS,
                      progress: Callable[[float, str], None] | None = None, layer: int | None = None,
                      mom2: bool | str = True, subjects: list[str] | None = None,
                      seed_scoring: bool = False, rule: str = "dai",
                      neurons: dict[str, list[tuple[int, int]]] | None = None,
                      measure: Callable[[str, Callable[[], dict]], dict] = _no_measure) -> Evaluation:
    """Edit each fact of ``relation`` independently (the model restored after each) and report, per
    criterion, the share of facts for which it held (for a fact with several probes of one criterion, the
    share of its probes): the paper's scoring, p(new) against p(old). Facts the model gets wrong before
    editing are skipped and listed; probes the model cannot answer before the edit are left out
    (``studies.probes``), and the new object is one whose own reverse fact the model states where there is
    one. ``seed_scoring``: also the seed's ``evaluate_edit.py`` scoring (teacher-forced accuracy of each
    probe's expected string). ``rule``: the KN edit's (``intervene.KN_RULES``); ``neurons``: subject -> the
    KNs to edit (another rule's, to compare rules on the same neurons). ``measure(key, fn)``: how each fact's row is obtained (a
    record passes its checkpoint: a fact measured before is read back, a new one kept the moment it exists)."""
    if method not in METHODS:
        raise InputError(f"unknown edit method {method!r} (rome, kn)")
    if method == "rome" and lm.masked:
        raise InputError(f"ROME edits causal language models; {lm.spec} is a masked model (use the KN edit)")
    rel = F.relation(relation)
    if limit is not None:
        limit = check_count(limit, "evaluate_facts", "limit")
    facts = rel.facts if subjects is None else [rel.fact(s) for s in subjects]  # e.g. the facts a model knows
    facts = facts[: limit or limits().evaluate_facts]
    t0 = time.perf_counter()
    prefer = answerable_objects(lm, rel)
    counts = {c: [0, 0] for c in CRITERIA}
    per_fact, skipped = [], []
    for k, fact in enumerate(facts):
        key = f"{method}:{relation}:{fact.subject}" if method == "rome" else f"kn@{rule}:{relation}:{fact.subject}"
        row = measure(key, lambda fact=fact: edit_fact(lm, method, rel, fact, prefer, neighbours, layer, mom2,
                                                       seed_scoring, rule, (neurons or {}).get(fact.subject)))
        if "skipped" in row:
            skipped.append({"subject": fact.subject, "reason": row["skipped"]})
        else:
            for c in CRITERIA:
                counts[c][0] += row[f"{c}_probes"][0]
                counts[c][1] += row[f"{c}_probes"][1]
            per_fact.append(row)
        if progress:
            progress((k + 1) / len(facts), f"{k + 1}/{len(facts)} facts edited")
    n = len(per_fact)
    rates = {c: (float(np.mean([r[c] for r in per_fact if r[c] is not None]))
                 if any(r[c] is not None for r in per_fact) else None) for c in CRITERIA}
    seed_rates = None
    if seed_scoring:
        seed_rates = {c: float(np.mean([r["seed"][c] for r in per_fact if c in r.get("seed", {})]))
                      for c in ("reliability", "generality", "symmetry", "synonymy")
                      if any(c in r.get("seed", {}) for r in per_fact)}
    return Evaluation(method, lm.spec, relation, n, counts, rates, skipped, per_fact, time.perf_counter() - t0,
                      seed_rates)
