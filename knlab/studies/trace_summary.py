"""Causal traces summarised over many prompts: paper Fig. 13's token categories, over a relation's facts or a
grammatical paradigm's sentences (docs/paper.md section 4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.methods.trace import TraceResult, trace
from knlab.studies.known_facts import pick_replacement
from knlab.world import facts as F
from knlab.world import paradigms

def trace_prompt(lm: LM, prompt: str, subject: str, answer: str | None = None, samples: int = 10,
                 window: int | None = None, noise: float | str | None = None, seed: int = 0, progress=None,
                 corruption: str = "noise", replacement: str | None = None, metric: str = "prob") -> TraceResult:
    """One prompt's trace (``methods.trace.trace``, the same arguments), where symmetric token replacement
    with no replacement typed takes one from the world's facts (``known_facts.pick_replacement``): the CLI,
    the Trace tab and the HTTP API all trace through here."""
    if corruption == "replace" and not (replacement or "").strip():
        replacement = pick_replacement(lm, prompt, subject)
    return trace(lm, prompt, subject, answer, samples, window, noise, seed, progress=progress,
                 corruption=corruption, replacement=replacement, metric=metric)


CATEGORIES = ("first subject token", "middle subject tokens", "last subject token",
              "first subsequent token", "further tokens", "last token")


def token_categories(n_tokens: int, subject_range: tuple[int, int], position: int) -> list[str | None]:
    """Paper figure 13's token categories; tokens before the subject (never corrupted) get None."""
    s0, s1 = subject_range
    out: list[str | None] = []
    for t in range(n_tokens):
        if t == position:
            out.append("last token")
        elif t < s0:
            out.append(None)
        elif t == s1 - 1:
            out.append("last subject token")
        elif t == s0:
            out.append("first subject token")
        elif t < s1:
            out.append("middle subject tokens")
        elif t == s1:
            out.append("first subsequent token")
        else:
            out.append("further tokens")
    return out


@dataclass
class CategorySummary:
    """Average indirect effect (restored - corrupted p(answer)) per token category and layer."""

    model: str
    kinds: dict[str, dict[str, np.ndarray]]  # kind -> category -> [layers]
    counts: dict[str, int]  # category -> number of prompts that have it
    n_prompts: int
    source: str

    def to_json(self) -> dict:
        return {"model": self.model, "source": self.source, "n": self.n_prompts, "counts": self.counts,
                "kinds": {k: {c: v.tolist() for c, v in cats.items()} for k, cats in self.kinds.items()},
                "peak": {k: {c: float(np.max(v)) for c, v in cats.items()} for k, cats in self.kinds.items()}}


def summarize(results: Sequence[TraceResult], source: str = "") -> CategorySummary:
    if not results:
        raise InputError("nothing to summarise: no prompt could be traced")
    kinds = list(results[0].grids)
    L = results[0].grids[kinds[0]].shape[1]
    sums = {k: {c: np.zeros(L) for c in CATEGORIES} for k in kinds}
    counts = {c: 0 for c in CATEGORIES}
    for r in results:
        cats = token_categories(len(r.tokens), r.subject_range, r.position)
        for c in CATEGORIES:
            rows = [t for t, x in enumerate(cats) if x == c]
            if not rows:
                continue
            counts[c] += 1
            for k in kinds:
                sums[k][c] += r.indirect_effect(k)[rows].mean(0)
    avg = {k: {c: sums[k][c] / max(1, counts[c]) for c in CATEGORIES if counts[c]} for k in kinds}
    return CategorySummary(results[0].model, avg, {c: n for c, n in counts.items() if n}, len(results), source)


def trace_relation(lm: LM, relation: str, limit: int | None = None, template: str | None = None,
                   progress=None, subjects: list[str] | None = None, **kwargs) -> CategorySummary:
    """Figure 13 over a relation's facts (the first training template, or ``template``), answer = the object;
    ``subjects``: only these facts (e.g. the ones the model knows)."""
    rel = F.relation(relation)
    template = template or rel.train_templates[0]
    facts = rel.facts if subjects is None else [rel.fact(s) for s in subjects]
    facts = facts[: limit or None]
    results = []
    for i, f in enumerate(facts):
        prompt = F.prompt(template, f.subject, lm.masked)
        try:
            results.append(trace(lm, prompt, f.subject, f.object, **kwargs))
        except InputError:
            continue  # an object the model cannot say: skip the fact
        if progress:
            progress((i + 1) / len(facts), f"{i + 1}/{len(facts)} facts")
    return summarize(results, f"{relation} ({template})")


def trace_paradigm(lm: LM, name: str, limit: int | None = 20, progress=None, **kwargs) -> CategorySummary:
    """Figure 13 over a grammatical paradigm: the 'subject' is the word the critical word agrees with
    (the noun for a determiner, the name for a reflexive); the answer is the grammatical word."""
    pairs = paradigms.minimal_pairs(name, limit or 20, seed=1)
    results = []
    for i, p in enumerate(pairs):
        if lm.masked:
            prompt = p.masked_prompt
        else:
            if p.controller_index > p.critical_index:
                raise InputError(f"in {name} the agreeing word ({p.controller!r}) comes after the critical one, "
                                 f"so a causal model cannot be traced on it; use a masked model")
            prompt = p.causal_prefix()
        try:
            results.append(trace(lm, prompt, p.controller, p.good_token, **kwargs))
        except InputError:
            continue
        if progress:
            progress((i + 1) / len(pairs), f"{i + 1}/{len(pairs)} prompts")
    return summarize(results, name)
