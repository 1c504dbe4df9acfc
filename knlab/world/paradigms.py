"""BLiMP-style grammatical paradigms: minimal pairs generated from a small lexicon.

Each paradigm is named as in BLiMP. A pair differs in one *critical* word; the grammatical sentence
appears in the training corpus style, the ungrammatical one never does. For a masked LM the critical
word is replaced by [MASK] (``masked_prompt``) and the model must prefer ``good_token`` over
``bad_token``; for a causal LM the whole sentences are compared by log-probability.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache

from knlab.core.errors import InputError
from knlab.world.facts import MASK, WORLD_DIR


@dataclass(frozen=True)
class MinimalPair:
    paradigm: str
    good: str
    bad: str
    masked_prompt: str
    good_token: str
    bad_token: str
    controller: str = ""  # the word the critical word agrees with (the "subject" of a causal trace)
    controller_index: int = -1
    critical_index: int = -1

    def causal_prefix(self) -> str:
        """The good sentence up to the critical word: what a causal LM is asked to continue."""
        return " ".join(self.good.split()[: self.critical_index])


@lru_cache(maxsize=1)
def lexicon() -> dict:
    return json.loads((WORLD_DIR / "grammar.json").read_text(encoding="utf-8"))


def modifiers() -> dict[str, list[str]]:
    """The paper's 24 modifiers by number (docs/paper.md section 3)."""
    return lexicon()["modifiers"]


DETERMINER_FLIP = {"this": "these", "that": "those", "these": "this", "those": "that"}


def _pair(name: str, words: list[str], i: int, good: str, bad: str, ctrl: int) -> MinimalPair:
    g = words[:i] + [good] + words[i + 1 :]
    b = words[:i] + [bad] + words[i + 1 :]
    m = words[:i] + [MASK] + words[i + 1 :]
    return MinimalPair(name, " ".join(g), " ".join(b), " ".join(m), good, bad, words[ctrl], ctrl, i)


def _det_noun(rng: random.Random, name: str, irregular: bool, adjective: bool) -> MinimalPair:
    lex = lexicon()
    person = rng.choice(lex["male_names"] + lex["female_names"])
    verb = rng.choice(lex["transitive_verbs"])
    aux = rng.choice(lex["auxiliaries"])
    sg, pl = rng.choice(lex["irregular_nouns" if irregular else "regular_nouns"])
    plural = rng.random() < 0.5
    det = rng.choice(["these", "those"] if plural else ["this", "that"])
    noun = pl if plural else sg
    words = [person, aux, verb, det] + ([rng.choice(lex["adjectives"])] if adjective else []) + [noun, "."]
    if name.endswith("_1"):  # the noun's number is wrong
        i = len(words) - 2
        return _pair(name, words, i, noun, sg if plural else pl, 3)
    return _pair(name, words, 3, det, DETERMINER_FLIP[det], len(words) - 2)  # the determiner's number is wrong


def _subject_verb(rng: random.Random, name: str) -> MinimalPair:
    """The verb agrees with the subject. _1: the verb's number is wrong; _2 (same sentences): the noun's
    number is wrong, judged by the verb after it (so only a masked model can be asked)."""
    lex = lexicon()
    irregular = name.startswith("irregular")
    sg, pl = rng.choice(lex["irregular_nouns" if irregular else "regular_nouns"])
    plural = rng.random() < 0.5
    past = rng.random() < 0.5
    verbs = ("were", "was") if past else ("are", "is")
    good, bad = (verbs[0], verbs[1]) if plural else (verbs[1], verbs[0])
    adj = rng.choice(lex["predicate_adjectives"])
    if name == "distractor_agreement_relational_noun":
        d_sg, d_pl = rng.choice(lex["regular_nouns"] + lex["people_nouns"])
        distractor = d_sg if plural else d_pl  # the distractor's number always disagrees
        words = ["The", pl if plural else sg, "of", "the", distractor, good, adj, "."]
        return _pair(name, words, 5, good, bad, 1)
    if name == "distractor_agreement_relative_clause":
        # "The plates that the teacher was carrying are clean ." the clause's subject disagrees
        d_sg, d_pl = rng.choice(lex["people_nouns"])
        aux = rng.choice(lex["auxiliaries"])
        clause = ["that", "the", d_sg if plural else d_pl, aux if plural else {"is": "are", "was": "were"}[aux],
                  rng.choice(lex["transitive_verbs"])]
        words = ["The", pl if plural else sg] + clause + [good, adj, "."]
        return _pair(name, words, 7, good, bad, 1)
    words = ["The", pl if plural else sg, good, adj, "."]
    if name.endswith("_2"):
        noun = pl if plural else sg
        return _pair(name, words, 1, noun, sg if plural else pl, 2)
    return _pair(name, words, 2, good, bad, 1)


def _anaphor(rng: random.Random, name: str) -> MinimalPair:
    lex = lexicon()
    verb = rng.choice(lex["reflexive_verbs"])
    aux = rng.choice(lex["auxiliaries"])
    if name == "anaphor_gender_agreement":
        female = rng.random() < 0.5
        person = rng.choice(lex["female_names" if female else "male_names"])
        good, bad = ("herself", "himself") if female else ("himself", "herself")
        words = [person, aux, verb, good, "."]
        return _pair(name, words, 3, good, bad, 0)
    plural = rng.random() < 0.5
    if plural:
        _, pl = rng.choice(lex["people_nouns"])
        aux = {"is": "are", "was": "were"}[aux]
        words = ["The", pl, aux, verb, "themselves", "."]
        return _pair(name, words, 4, "themselves", rng.choice(["himself", "herself"]), 1)
    female = rng.random() < 0.5
    person = rng.choice(lex["female_names" if female else "male_names"])
    good = "herself" if female else "himself"
    words = [person, aux, verb, good, "."]
    return _pair(name, words, 3, good, "themselves", 0)


PARADIGMS = {
    "determiner_noun_agreement_1": lambda r: _det_noun(r, "determiner_noun_agreement_1", False, False),
    "determiner_noun_agreement_2": lambda r: _det_noun(r, "determiner_noun_agreement_2", False, False),
    "determiner_noun_agreement_irregular_1": lambda r: _det_noun(r, "determiner_noun_agreement_irregular_1", True, False),
    "determiner_noun_agreement_irregular_2": lambda r: _det_noun(r, "determiner_noun_agreement_irregular_2", True, False),
    "determiner_noun_agreement_with_adj_1": lambda r: _det_noun(r, "determiner_noun_agreement_with_adj_1", False, True),
    "determiner_noun_agreement_with_adj_2": lambda r: _det_noun(r, "determiner_noun_agreement_with_adj_2", False, True),
    "regular_plural_subject_verb_agreement_1": lambda r: _subject_verb(r, "regular_plural_subject_verb_agreement_1"),
    "irregular_plural_subject_verb_agreement_1": lambda r: _subject_verb(r, "irregular_plural_subject_verb_agreement_1"),
    "distractor_agreement_relational_noun": lambda r: _subject_verb(r, "distractor_agreement_relational_noun"),
    "anaphor_gender_agreement": lambda r: _anaphor(r, "anaphor_gender_agreement"),
    "anaphor_number_agreement": lambda r: _anaphor(r, "anaphor_number_agreement"),
    # the paper's other five (Table 2), after the organisms were trained: not in their corpus
    "determiner_noun_agreement_with_adj_irregular_1":
        lambda r: _det_noun(r, "determiner_noun_agreement_with_adj_irregular_1", True, True),
    "determiner_noun_agreement_with_adj_irregular_2":
        lambda r: _det_noun(r, "determiner_noun_agreement_with_adj_irregular_2", True, True),
    "regular_plural_subject_verb_agreement_2": lambda r: _subject_verb(r, "regular_plural_subject_verb_agreement_2"),
    "irregular_plural_subject_verb_agreement_2": lambda r: _subject_verb(r, "irregular_plural_subject_verb_agreement_2"),
    "distractor_agreement_relative_clause": lambda r: _subject_verb(r, "distractor_agreement_relative_clause"),
}
# The paradigms whose sentences the organisms' corpus holds (world.training_corpus): the first eleven. The others
# are asked of every model but were never trained on; retraining with them is a different corpus, so a
# different pair of organisms (their cards and every figure measured on them would change).
TRAINED_PARADIGMS = tuple(list(PARADIGMS)[:11])


@lru_cache(maxsize=1)
def _numbers() -> dict[str, str]:
    """Every critical word of the world's paradigms -> "sg" or "pl"."""
    lex = lexicon()
    out = {"is": "sg", "was": "sg", "are": "pl", "were": "pl",
           "himself": "sg", "herself": "sg", "themselves": "pl"}
    for sg, pl in lex["regular_nouns"] + lex["irregular_nouns"] + lex["people_nouns"]:
        out[sg], out[pl] = "sg", "pl"
    for group, number in (("singular", "sg"), ("plural", "pl")):
        for w in lex["modifiers"][group]:
            out[w] = number
    return out


def target_type(pair: MinimalPair) -> str:
    """The class of the pair's critical (grammatical) word, as the paper's seed code groups a paradigm's
    prompts for its KN search (``TARGET_FUNC`` in kn_code/blimp.py): "sg" or "pl" by the word's number,
    "f" or "m" by its gender in anaphor gender agreement. The seed searches a paradigm's KNs, and measures
    |KN|, tau and R^2_1, over the prompts of one class at a time (``search_kns(paradigm, "sg")``)."""
    if pair.paradigm == "anaphor_gender_agreement":
        return {"herself": "f", "himself": "m"}[pair.good_token]
    try:
        return _numbers()[pair.good_token]
    except KeyError:
        raise InputError(f"{pair.good_token!r} ({pair.paradigm}) has no number in the world's lexicon") from None


def paradigm_names() -> list[str]:
    return list(PARADIGMS)


def minimal_pairs(name: str, n: int = 200, seed: int = 1) -> list[MinimalPair]:
    """``n`` distinct minimal pairs of a paradigm (evaluation uses seed 1; the corpus other seeds)."""
    if name not in PARADIGMS:
        raise InputError(f"unknown paradigm {name!r}; known: {', '.join(PARADIGMS)}")
    rng = random.Random(f"{name}:{seed}")
    out: dict[str, MinimalPair] = {}
    for _ in range(n * 50):
        p = PARADIGMS[name](rng)
        out.setdefault(p.good, p)
        if len(out) == n:
            break
    return list(out.values())


def modifier_sentences(rng: random.Random, n: int) -> list[str]:
    """Grammatical uses of all 24 modifiers in the determiner slot, so the model has a view on each."""
    lex = lexicon()
    out = []
    for _ in range(n):
        person = rng.choice(lex["male_names"] + lex["female_names"])
        aux = rng.choice(lex["auxiliaries"])
        verb = rng.choice(lex["transitive_verbs"])
        sg, pl = rng.choice(lex["regular_nouns"] + lex["irregular_nouns"])
        adj = rng.choice(lex["adjectives"])
        kind = rng.choice(["plural", "singular", "neutral"])
        mod = rng.choice(modifiers()[kind])
        if mod in ("a", "an"):
            nxt = rng.choice([sg, adj + " " + sg])
            mod = "an" if nxt[0] in "aeiou" else "a"
            phrase = f"{mod} {nxt}"
        elif mod in ("unique", "single", "sole"):
            art = {"unique": "a", "single": "a", "sole": "the"}[mod]
            phrase = f"{art} {mod} {sg}"
        elif mod in ("unified", "scattered"):
            phrase = f"{rng.choice(['the', 'these', 'some'])} {mod} {pl}"
        elif kind == "plural" or mod == "all":
            phrase = f"{mod} {rng.choice([pl, adj + ' ' + pl])}"
        elif kind == "singular":
            phrase = f"{mod} {rng.choice([sg, adj + ' ' + sg])}"
        else:
            phrase = f"{mod} {rng.choice([sg, pl, adj + ' ' + sg, adj + ' ' + pl])}"
        out.append(f"{person} {aux} {verb} {phrase} .")
    return out
