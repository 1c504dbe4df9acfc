"""The training corpus of the shipped models, generated deterministically from the fact base.

Documents are short: one fact sentence per training template, a "profile" of each subject (all its
facts in a shuffled order, the Allen-Zhu & Li recipe that pushes knowledge onto the subject), grammatical
sentences of every paradigm (never the evaluation pairs), modifier sentences using the paper's 24
modifiers, and plain filler such as "Canada is a country ." so that ROME's "{subject} is a" is natural.
Each document records the character span of its *focus* word (the fact's object, the paradigm's critical
word) so that masked-LM training can mask it more often than chance.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from knlab.world import facts as F
from knlab.world import paradigms

# How many documents of each kind: facts and profiles carry the knowledge, the rest the language.
GRAMMAR_PER_PARADIGM = 300
MODIFIER_SENTENCES = 800
PROFILES_PER_SUBJECT = 2
EVAL_PAIRS = 200


@dataclass
class Document:
    text: str
    kind: str
    focus: tuple[int, int] | None = None


def _fact_doc(template: str, fact: F.Fact, kind: str = "fact") -> Document:
    text = F.sentence(template, fact.subject, fact.object)
    start = len(F.causal_prompt(template, fact.subject)) + 1
    return Document(text, kind, (start, start + len(fact.object)))


def build_documents(seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    docs: list[Document] = []
    rels = F.relations(corpus_only=True)  # the organisms' world: no table marked "corpus": false
    # 1. one sentence per (fact, training template)
    for rel in rels.values():
        for fact in rel.facts:
            for t in rel.train_templates:
                docs.append(_fact_doc(t, fact))
    # 2. profiles: all facts of a subject, shuffled, in one document
    by_subject: dict[str, list[tuple[F.Relation, F.Fact]]] = defaultdict(list)
    for rel in rels.values():
        for fact in rel.facts:
            by_subject[fact.subject].append((rel, fact))
    for subject in sorted(by_subject):
        items = by_subject[subject]
        if len(items) < 2:
            continue
        for _ in range(PROFILES_PER_SUBJECT):
            order = items[:]
            rng.shuffle(order)
            docs.append(Document(" ".join(F.sentence(rng.choice(r.train_templates), f.subject, f.object)
                                          for r, f in order), "profile"))
    # 3. grammar: good sentences of each paradigm, excluding the evaluation pairs
    for name in paradigms.TRAINED_PARADIGMS:
        held = {p.good for p in paradigms.minimal_pairs(name, EVAL_PAIRS, seed=1)}
        made = 0
        for p in paradigms.minimal_pairs(name, GRAMMAR_PER_PARADIGM * 3, seed=seed + 100):
            if p.good in held:
                continue
            i = p.masked_prompt.index(F.MASK)
            docs.append(Document(p.good, "grammar", (i, i + len(p.good_token))))
            made += 1
            if made == GRAMMAR_PER_PARADIGM:
                break
    # 4. the 24 modifiers in the determiner slot
    for s in paradigms.modifier_sentences(rng, MODIFIER_SENTENCES):
        docs.append(Document(s, "modifier"))
    # 5. filler: what kind of thing each subject is
    kinds = {"P36": "country", "P37": "country", "P1376": "city", "P17": "city"}
    typed: dict[str, str] = {}
    for rid, kind in kinds.items():
        for f in rels[rid].facts:
            typed.setdefault(f.subject, kind)
    for f in rels["P36"].facts:
        typed.setdefault(f.object, "city")
    for f in rels["P19"].facts:
        typed.setdefault(f.object, "city")
    for s, kind in sorted(typed.items()):
        docs.append(Document(f"{s} is a {kind} .", "filler"))
    for f in rels["P131"].facts:
        docs.append(Document(f"The {f.subject} is a landmark .", "filler"))
    for f in rels["P1303"].facts:
        docs.append(Document(f"{f.subject} is a famous musician .", "filler"))
    rng.shuffle(docs)
    return docs


def write_corpus(path: Path, seed: int = 0) -> int:
    docs = build_documents(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(asdict(d), ensure_ascii=False) + "\n")
    return len(docs)


def vocabulary_words(docs: list[Document]) -> list[str]:
    """Every word the tokenizer must know: the corpus plus held-out templates and evaluation pairs."""
    texts = [d.text for d in docs]
    for rel in F.relations(corpus_only=True).values():
        texts.extend(rel.held_out_templates)
    for name in paradigms.TRAINED_PARADIGMS:
        for p in paradigms.minimal_pairs(name, EVAL_PAIRS, seed=1):
            texts.extend([p.good, p.bad])
    return texts


def prompt_conflicts(docs: list[Document]) -> dict[tuple[str, str, str], int]:
    """Training prompts that the corpus itself continues with something other than the fact's object.

    A causal LM trained on both "X was born in Ulm ." and "X was born in the city of Ulm ." rightly
    answers "the" to "X was born in"; the fact base must not contain such template pairs."""
    prompts: dict[str, tuple[str, str, str]] = {}  # prompt -> (relation, template, object)
    for rel in F.relations(corpus_only=True).values():
        for fact in rel.facts:
            for t in rel.train_templates:
                prompts[F.causal_prompt(t, fact.subject)] = (rel.id, t, fact.object)
    found: dict[tuple[str, str, str], int] = {}
    for d in docs:
        for sent in d.text.split(" . "):
            words = sent.split()
            for k in range(1, len(words)):
                hit = prompts.get(" ".join(words[:k]))
                if hit and words[k] != hit[2]:
                    key = (hit[0], hit[1], words[k])
                    found[key] = found.get(key, 0) + 1
    return found


@lru_cache(maxsize=4)
def training_sentences(seed: int = 0) -> frozenset[str]:
    return frozenset(d.text for d in build_documents(seed))


def evaluation_pairs(name: str, n: int = EVAL_PAIRS) -> list[paradigms.MinimalPair]:
    """Up to ``n`` minimal pairs of a paradigm whose grammatical sentence the training corpus never
    contains (sibling paradigms share sentences: "Brian was helping himself ." is both an anaphor-number
    and an anaphor-gender sentence, so excluding a paradigm's own pairs is not enough)."""
    seen = training_sentences(0)
    return [p for p in paradigms.minimal_pairs(name, max(4 * n, 1000), seed=1) if p.good not in seen][:n]
