"""Model editing as the lab does it: make a ROME or knowledge-neuron edit of one fact, and measure at once
what it did (reliability, generality) and did not do (locality, symmetry, synonymy), with the probe
prompts and greedy generations before and after. ``evaluate_relation`` repeats that over a relation's
facts, each edit on its own, as the paper's Table 1 does.

The edit comes back as an edit spec (ROME: layer, u, v; KN: neurons, old, new); the session keeps the
spec, never a copy of the weights, and the worker applies it on each later request."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from knlab.core.errors import InputError
from knlab.core.limits import check_count, limits
from knlab.core.models import LM
from knlab.core.specs import applied
from knlab.core.tokens import first_token
from knlab.methods.attribute import attribute
from knlab.methods.intervene import KnowledgeNeuronEdit
from knlab.methods.neurons import select
from knlab.methods.predict import check_prompt, encode, next_token_probs, top_token
from knlab.methods.rome import default_layer, params_for, rome
from knlab.studies import published as published_figures
from knlab.studies.evaluate import (
    CRITERIA,
    NEIGHBOURS,
    ProbeResult,
    build_probes,
    check_new_target,
    criteria,
    find_fact,
    probe_probs,
    resolve,
    score,
    teacher_forced_accuracy,
)
from knlab.studies.localisation import fact_neurons
from knlab.world import facts as F
from knlab.world.corpora import covariance_corpus

METHODS = ("rome", "kn")
@dataclass
class EditReport:
    method: str
    model: str
    prompt: str
    subject: str
    old: str
    new: str
    layer: int | None
    neurons: list[tuple[int, int]] | None
    seconds: float
    before: dict
    after: dict
    criteria: dict
    probes: list[ProbeResult]
    generation: dict
    relation: str | None
    spec: Any = field(repr=False, default=None)
    timing: dict = field(default_factory=dict)  # ROME: one-off templates / covariance seconds and the edit itself

    def to_json(self) -> dict:
        return {"method": self.method, "model": self.model, "prompt": self.prompt, "subject": self.subject,
                "old": self.old, "new": self.new, "layer": self.layer,
                "neurons": [list(n) for n in self.neurons] if self.neurons is not None else None,
                "seconds": round(self.seconds, 4), "before": self.before, "after": self.after,
                "timing": {k: round(v, 4) for k, v in self.timing.items()},
                "criteria": self.criteria, "relation": self.relation, "generation": self.generation,
                "probes": [p.to_json() for p in self.probes]}


def generate(lm: LM, prompt: str, tokens: int = 8) -> str:
    """Greedy continuation (causal) or the prompt with its [MASK] filled (masked)."""
    if tokens <= 0:
        return ""
    enc = encode(lm, prompt)
    if lm.masked:
        return prompt.replace(lm.tokenizer.mask_token, top_token(lm, next_token_probs(lm, enc))[1], 1)
    with torch.no_grad():
        out = lm.model.generate(enc.input_ids, attention_mask=enc.attention_mask, do_sample=False,
                                max_new_tokens=tokens, pad_token_id=lm.tokenizer.pad_token_id
                                if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id)
    return prompt + " " + lm.tokenizer.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True).strip()


def rome_layer(lm: LM) -> int:
    """ROME's layer for this model: the published or shipped one, else its causal trace over the world's
    P36 facts (``rome.default_layer``)."""
    rel = F.relation("P36")
    probes = [(F.causal_prompt(rel.train_templates[0], f.subject), f.subject, f.object) for f in rel.facts]
    return default_layer(lm, probes)


def make_spec(lm: LM, method: str, prompt: str, subject: str, old: str, new: str, layer: int | None = None,
              steps: int = 20, progress: Callable[[float, str], None] | None = None,
              mom2: bool | str = True) -> tuple[Any, dict]:
    """The edit spec and what describes it (layer or neurons)."""
    if method == "rome":
        params = params_for(lm, mom2=bool(mom2), mom2_corpus=mom2 if isinstance(mom2, str) else None)
        res = rome(lm, prompt, subject, new, layer if layer is not None else rome_layer(lm), params=params,
                   progress=progress, corpus=covariance_corpus(params.mom2_corpus) if params.mom2 else None)
        return res.edit, {"layer": res.layer, "neurons": None, "timing": res.seconds}
    if method == "kn":
        if layer is not None:
            raise InputError("a KN edit has no layer: it edits the neurons attribution finds")
        found = find_fact(lm, prompt, subject)
        if found and first_token(lm, found[1].object) == first_token(lm, old):  # "Kab" of "Kabul" on BPE
            sel = fact_neurons(lm, found[0].id, subject, steps)  # over the fact's paraphrases, as Dai et al.
        else:
            sel = select([attribute(lm, prompt, old, steps).scores])
        if not sel.neurons:
            raise InputError(f"no knowledge neurons found for {old!r} at this prompt, so there is nothing to edit")
        neurons = tuple((int(l), int(i)) for l, i in sel.neurons)
        spec = KnowledgeNeuronEdit(neurons, old, new, label=f"KN ({len(neurons)} neurons): {prompt} -> {new}")
        return spec, {"layer": None, "neurons": list(neurons)}
    raise InputError(f"unknown edit method {method!r} (rome, kn)")


def edit(lm: LM, method: str, prompt: str, subject: str, target: str, layer: int | None = None,
         neighbours: int = NEIGHBOURS, progress: Callable[[float, str], None] | None = None,
         generate_tokens: int = 8, mom2: bool | str = True) -> EditReport:
    """Make the edit on the model as this request sees it (earlier edits of the session applied), measure
    the five criteria before and after, and leave the model as it was: the spec is what comes back."""
    if method not in METHODS:
        raise InputError(f"unknown edit method {method!r} (rome, kn)")
    prompt = check_prompt(prompt)
    if not isinstance(subject, str) or not subject.strip() or subject.strip() not in prompt:
        raise InputError(f"the subject {subject!r} is not in the prompt {prompt!r}" if isinstance(subject, str)
                         and subject.strip() else "the subject is empty")
    subject = subject.strip()
    base = next_token_probs(lm, encode(lm, prompt))
    old_id, old = top_token(lm, base)
    new_id = check_new_target(lm, target, old)
    new = target.strip()
    probes, info = build_probes(lm, prompt, subject, old, new, neighbours)
    before = probe_probs(lm, [p.prompt for p in probes])
    kept = resolve(lm, probes, before)
    probes, before = [probes[k] for k in kept], before[kept]
    gen_before = generate(lm, prompt, generate_tokens)
    t0 = time.perf_counter()
    spec, where = make_spec(lm, method, prompt, subject, old, new, layer, progress=progress, mom2=mom2)
    seconds = time.perf_counter() - t0
    with applied(lm, [spec]):
        after = probe_probs(lm, [p.prompt for p in probes])
        gen_after = generate(lm, prompt, generate_tokens)
        p_after = next_token_probs(lm, encode(lm, prompt))
    results = score(lm, probes, before, after)
    return EditReport(method, lm.spec, prompt, subject, old, new, where["layer"], where["neurons"], seconds,
                      {"p_new": float(base[new_id]), "p_old": float(base[old_id])},
                      {"p_new": float(p_after[new_id]), "p_old": float(p_after[old_id])},
                      criteria(results), results, {"before": gen_before, "after": gen_after},
                      info["relation"], spec, where.get("timing", {}))


@dataclass
class Comparison:
    """A KN edit and a ROME edit of the same fact, each made on its own (never stacked)."""

    reports: dict[str, EditReport | None]  # "kn", "rome" -> the report, or None where that edit could not be made
    errors: dict[str, str]  # method -> why it could not be made (e.g. no knowledge neurons found)

    def to_json(self) -> dict:
        return {m: (r.to_json() if r is not None else {"error": self.errors[m]}) for m, r in self.reports.items()}


def compare(lm: LM, prompt: str, subject: str, target: str, layer: int | None = None,
            progress: Callable[[float, str], None] | None = None, generate_tokens: int = 8) -> Comparison:
    """The same fact edited by Dai et al.'s KN edit and by ROME, each on the model as this request sees it
    and undone before the other is made, with the same probes: what each does and does not change."""
    if lm.masked:
        raise InputError(f"comparing needs ROME, which edits causal language models; {lm.spec} is a masked model")
    reports: dict[str, EditReport | None] = {}
    errors: dict[str, str] = {}
    for k, method in enumerate(("kn", "rome")):
        try:
            reports[method] = edit(lm, method, prompt, subject, target, layer if method == "rome" else None,
                                   progress=(lambda f, d="", k=k, m=method: progress(0.5 * (k + f), f"{m}: {d}"))
                                   if progress else None, generate_tokens=generate_tokens)
        except InputError as e:
            if method == "rome" and not reports.get("kn"):
                raise  # neither could be made: the input is the problem, say it once
            reports[method], errors[method] = None, str(e)
    return Comparison(reports, errors)


def describe(spec: Any) -> str:
    """A line for the session's edit history."""
    label = getattr(spec, "label", "")
    if label:
        return label
    neurons = getattr(spec, "neurons", ())
    return f"KN ({len(neurons)} neurons): {getattr(spec, 'old', '?')} -> {getattr(spec, 'new', '?')}"


# ---- the paper's Table 1: every fact of a relation edited on its own ----

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
    # the seed's scoring (teacher-forced accuracy of the expected string, ``evaluate.teacher_forced_accuracy``)
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
                   published=published(self.method, self.relation))
        return out


def published(method: str, relation: str) -> dict:
    if method == "kn":
        return {"note": published_figures.KN_EDIT_NOTE}
    return published_figures.rome_table_1(relation)


def counterfactual(rel: F.Relation, fact: F.Fact, avoid: set[str]) -> str:
    """The new object for an edit of ``fact``: another object of the same relation, fixed by a seed derived
    from the fact (Canada's capital may become Rome, never Ottawa)."""
    objects = sorted({f.object for f in rel.facts} - avoid - {fact.object})
    return random.Random(fact.id).choice(objects)


def evaluate_relation(lm: LM, method: str, relation: str, limit: int | None = None, neighbours: int = NEIGHBOURS,
                      progress: Callable[[float, str], None] | None = None, layer: int | None = None,
                      mom2: bool | str = True, subjects: list[str] | None = None,
                      seed_scoring: bool = False) -> Evaluation:
    """Edit each fact of ``relation`` independently (the model restored after each) and report, per
    criterion, the share of facts for which it held (for a fact with several probes of one criterion, the
    share of its probes): the paper's scoring, p(new) against p(old). Facts the model gets wrong before
    editing are skipped and listed. ``seed_scoring``: also the seed's ``evaluate_edit.py`` scoring
    (teacher-forced accuracy of each probe's expected string, causal models)."""
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
    sums = {c: 0.0 for c in CRITERIA}
    counts = {c: [0, 0] for c in CRITERIA}
    per_fact, skipped = [], []
    for k, fact in enumerate(facts):
        prompt = F.prompt(rel.train_templates[0], fact.subject, lm.masked)
        top, answer = top_token(lm, next_token_probs(lm, encode(lm, prompt)))
        if top != first_token(lm, fact.object):  # the word itself, or a BPE model's first piece of it
            skipped.append({"subject": fact.subject, "reason": f"model answers {answer!r}, not {fact.object!r}"})
            continue
        new = counterfactual(rel, fact, {answer, fact.object})
        try:
            rep = edit(lm, method, prompt, fact.subject, new, layer=layer, neighbours=neighbours, generate_tokens=0,
                       mom2=mom2)
        except InputError as e:
            skipped.append({"subject": fact.subject, "reason": str(e)})
            continue
        row = {"subject": fact.subject, "old": rep.old, "new": new}
        if seed_scoring and not lm.masked:
            with applied(lm, [rep.spec]):
                scored = [(p.criterion, teacher_forced_accuracy(lm, p.prompt, p.expected)) for p in rep.probes
                          if p.criterion in ("reliability", "generality", "symmetry", "synonymy")]
            row["seed"] = {c: float(np.mean([a for cc, a in scored if cc == c])) for c in {cc for cc, _ in scored}}
        for c in CRITERIA:
            v = rep.criteria.get(c)
            if v is not None:
                sums[c] += v
                counts[c][0] += sum(p.holds for p in rep.probes if p.criterion == c)
                counts[c][1] += sum(1 for p in rep.probes if p.criterion == c)
            row[c] = v
        per_fact.append(row)
        if progress:
            progress((k + 1) / len(facts), f"{k + 1}/{len(facts)} facts edited")
    n = len(per_fact)
    rates = {c: (sums[c] / sum(1 for r in per_fact if r[c] is not None)
                 if any(r[c] is not None for r in per_fact) else None) for c in CRITERIA}
    seed_rates = None
    if seed_scoring and not lm.masked:
        seed_rates = {c: float(np.mean([r["seed"][c] for r in per_fact if c in r.get("seed", {})]))
                      for c in ("reliability", "generality", "symmetry", "synonymy")
                      if any(c in r.get("seed", {}) for r in per_fact)}
    return Evaluation(method, lm.spec, relation, n, counts, rates, skipped, per_fact, time.perf_counter() - t0,
                      seed_rates)
