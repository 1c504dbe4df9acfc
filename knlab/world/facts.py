"""The shipped fact base: relations with ParaRel-style ids, their facts and paraphrase templates.

The data lives as plain tables under ``assets/world/`` (countries, people, cities, landmarks, the
field -> occupation synonym table) plus ``relations.json``, which says for every relation which table
column is the subject and which the object, and lists its paraphrase templates: the ``train`` ones
appear in the training corpus, the ``held_out`` ones never do, so generality can be measured honestly.

A relation may draw on more tables than its first (``"more"`` in ``relations.json``: P36 and P1376 also
hold the capitals of US and Indian states). Their facts follow the first table's, in table order, and a
table marked ``"corpus": false`` is not in the organisms' training corpus: ``relations(corpus_only=True)``
is the organisms' own world, exactly the facts they were trained on.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from knlab.core.errors import InputError

WORLD_DIR = Path(__file__).resolve().parents[2] / "assets" / "world"
MASK = "[MASK]"


@dataclass(frozen=True)
class Fact:
    relation: str
    subject: str
    object: str
    # the world table the fact comes from, and whether that table is in the organisms' training corpus:
    # where it comes from, not what it says (no part of its equality, hash or repr)
    table: str = field(default="", compare=False, repr=False)
    corpus: bool = field(default=True, compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.relation}:{self.subject}"


@dataclass(frozen=True)
class Relation:
    id: str
    name: str
    train_templates: tuple[str, ...]
    held_out_templates: tuple[str, ...]
    facts: tuple[Fact, ...]

    @property
    def templates(self) -> tuple[str, ...]:
        return self.train_templates + self.held_out_templates

    def fact(self, subject: str) -> Fact:
        for f in self.facts:
            if f.subject == subject:
                return f
        raise KeyError(f"{self.id} has no fact about {subject!r}")

    def same_table(self, fact: Fact) -> tuple[Fact, ...]:
        """The relation's facts from the table ``fact`` comes from (a country's capital among the countries,
        a state's among the states); a fact made by hand, with no table, takes its subject's."""
        table = fact.table or next((f.table for f in self.facts if f.subject == fact.subject), None)
        return tuple(f for f in self.facts if f.table == table) or self.facts


def causal_prompt(template: str, subject: str) -> str:
    """The prompt a causal LM continues: the template up to (not including) the object."""
    return template.replace("{X}", subject)


def masked_prompt(template: str, subject: str) -> str:
    """The same sentence for a masked LM: the object replaced by [MASK] and a final ' .'."""
    return f"{template.replace('{X}', subject)} {MASK} ."


def prompt(template: str, subject: str, masked: bool) -> str:
    """A fact's question as a model of that kind is asked it: the one place that chooses the form."""
    return masked_prompt(template, subject) if masked else causal_prompt(template, subject)


def sentence(template: str, subject: str, obj: str) -> str:
    return f"{template.replace('{X}', subject)} {obj} ."


def read_table(name: str) -> list[dict[str, str]]:
    with open(WORLD_DIR / f"{name}.tsv", newline="", encoding="utf-8") as fh:
        return [dict(row) for row in csv.DictReader(fh, delimiter="\t")]


@lru_cache(maxsize=1)
def occupations() -> dict[str, str]:
    """Field of work -> occupation noun (physics -> physicist): the synonym table of the synonymy test."""
    return {r["field"]: r["occupation"] for r in read_table("fields")}


def _single_word(s: str) -> bool:
    # Objects are single words, so a masked LM can fill them with one [MASK].
    return bool(s) and " " not in s and "-" not in s


def _sources(spec: dict) -> list[dict]:
    """The tables a relation draws on, its first one then ``more``; each with its subject and object
    columns and whether it is in the organisms' training corpus (``corpus``, true unless said)."""
    first = {"table": spec["table"], "subject": spec["subject"], "object": spec["object"]}
    return [{"corpus": True, **s} for s in [first, *spec.get("more", [])]]


def relations(corpus_only: bool = False) -> dict[str, Relation]:
    """Every relation of the world, its facts in table order (the first table's first). ``corpus_only``:
    only the facts of tables in the organisms' training corpus (what world-gpt and world-bert know, and
    what their cards and the corpus count)."""
    return _relations(bool(corpus_only))


@lru_cache(maxsize=2)
def _relations(corpus_only: bool) -> dict[str, Relation]:
    spec = json.loads((WORLD_DIR / "relations.json").read_text(encoding="utf-8"))
    occ = occupations()
    out: dict[str, Relation] = {}
    for rid, r in spec.items():
        facts = []
        seen = set()
        for src in _sources(r):
            if corpus_only and not src["corpus"]:
                continue
            for row in read_table(src["table"]):
                if src["object"] == "occupation":
                    obj = occ.get(row.get("field", ""), "")
                else:
                    obj = row.get(src["object"], "")
                subj = row[src["subject"]]
                if not subj or not _single_word(obj) or subj in seen:
                    continue
                seen.add(subj)
                facts.append(Fact(rid, subj, obj, src["table"], src["corpus"]))
        out[rid] = Relation(rid, r["name"], tuple(r["train"]), tuple(r["held_out"]), tuple(facts))
    return out


def relation(rid: str, corpus_only: bool = False) -> Relation:
    rels = relations(corpus_only)
    if rid not in rels:
        raise InputError(f"unknown relation {rid!r}; the world has: {', '.join(sorted(rels))}")
    return rels[rid]


def all_facts(corpus_only: bool = False) -> list[Fact]:
    return [f for r in relations(corpus_only).values() for f in r.facts]


# Pairs of relations that state the same fact in opposite directions (the symmetry test).
REVERSE_RELATIONS = {"P36": "P1376", "P1376": "P36"}
# Relation whose object is a synonym (via ``occupations``) of another relation's object (synonymy test).
SYNONYM_RELATIONS = {"P101": "P106"}


def guess_subject(prompt: str) -> str:
    """A first guess at the subject for the UI (the user corrects it): the longest subject of the world
    that occurs in the prompt, else the longest run of capitalised words after the first word."""
    prompt = prompt or ""
    known = [f.subject for f in all_facts() if f.subject in prompt]
    if known:
        return max(known, key=len)
    words = prompt.replace("[MASK]", " ").split()
    best, run = [], []
    for i, w in enumerate(words):
        if i > 0 and w[:1].isupper():
            run.append(w)
        else:
            run = []
        if len(run) > len(best):
            best = run[:]
    return " ".join(best) or (words[0] if words else "")
