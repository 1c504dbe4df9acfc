"""What an edit did and did not change: the probes of the paper's five criteria, scored before and after.

Every criterion is a list of probe prompts read at the prediction position (the last token, or the
[MASK]); a probe *holds* when, after the edit:
- reliability / generality / symmetry / synonymy: p(expected) > p(old), the paper's "p(new) against
  p(old)" (for symmetry the expected word is the edited subject, for synonymy the new field's occupation);
  a word is scored by the token it starts with (``tokens.first_token``: the word itself on the organisms;
  " Kab" of " Kabul" on a BPE model), and a probe whose two words start alike is left out;
- locality: the neighbour's top prediction is the one it had before the edit;
- symmetry_old: the old object no longer points back to the subject (the subject is not its top prediction).
A probe that the model cannot answer before the edit measures nothing, so it is left out, with the reason:
each probe other than reliability carries ``known``, the word a model that knows the probe's own fact says
before the edit (symmetry: the new object's own reverse fact, "Rome is the capital of" -> Italy;
symmetry_old: the subject; synonymy: the old field's occupation; locality: the neighbour's object), and is
kept only when the model's top answer before the edit starts like it. Generality is the exception: its
paraphrases are held out of the organisms' training by design, so asking whether the edit reaches a
phrasing the model never learned is the point of it.
A criterion's score is the share of its probes that hold; ``None`` where it does not apply to the fact.
The seed's own scoring, teacher-forced accuracy of the expected string, is here too
(``teacher_forced_accuracy``), for the batch evaluation to report beside the paper's.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.tokens import first_token, spoken_ids
from knlab.methods.predict import answer_logits
from knlab.studies.known_facts import fact_prompt, find_fact
from knlab.world import facts as F

CRITERIA = ("reliability", "generality", "locality", "symmetry", "synonymy")
# How a probe is scored. "first-token": the paper's p(expected) against p(old), each word by its first
# token (a probe holds or not). "token-accuracy": the seed's ``evaluate_edit.py`` and, as far as it can be
# read, Yao et al.'s (whose KN figures Fig. 6c quotes): teacher-forced accuracy over the whole expected
# string, a share of its tokens; a criterion's figure is the mean over its probes.
SCORINGS = ("first-token", "token-accuracy")


def check_scoring(scoring: str) -> str:
    if scoring not in SCORINGS:
        raise InputError(f"unknown scoring {scoring!r} ({', '.join(SCORINGS)})")
    return scoring
NEIGHBOURS = 10  # locality probes per edit: half from the edited relation, half from the others


@dataclass
class Probe:
    criterion: str
    prompt: str
    expected: str  # the word that should win after the edit (locality: the neighbour's own answer)
    old: str | None = None  # the word it should beat (None for locality)
    known: str | None = None  # what the model must say before the edit for the probe to measure anything
    expected_id: int = -1
    old_id: int = -1


@dataclass
class ProbeResult:
    criterion: str
    prompt: str
    expected: str
    old: str | None
    p_before: float  # p(expected)
    p_after: float
    p_old_before: float | None
    p_old_after: float | None
    top_before: str
    top_after: str
    holds: bool
    accuracy: float | None = None  # the token-accuracy scoring's figure (``SCORINGS``), when asked for

    def to_json(self) -> dict:
        return asdict(self)


def neighbour_prompts(lm: LM, subject: str, relation: str | None, n: int = NEIGHBOURS) -> list[tuple[str, str]]:
    """Other facts the edit should leave alone: n/2 of the same relation, the rest from the others, chosen
    by a seed derived from the edited subject so the same edit is always probed with the same facts."""
    rng = random.Random(f"{relation}:{subject}")
    rels = F.relations(corpus_only=True)  # the organisms' world: tables outside the corpus change no probe
    same = [f for f in rels[relation].facts if f.subject != subject] if relation in rels else []
    other = [f for r in rels.values() if r.id != relation for f in r.facts if f.subject != subject]
    k_same = min(len(same), n // 2) if same else 0
    picked = rng.sample(same, k_same) + rng.sample(other, n - k_same)
    return [(fact_prompt(lm, rels[f.relation].train_templates[0], f.subject), f.object) for f in picked]


def build_probes(lm: LM, prompt: str, subject: str, old: str, new: str,
                 neighbours: int = NEIGHBOURS) -> tuple[list[Probe], dict]:
    """The probes of every criterion that applies, and which fact (if any) of the world the prompt states."""
    found = find_fact(lm, prompt, subject)
    probes = [Probe("reliability", prompt, new, old)]
    info = {"relation": None, "fact_object": None}
    relation = None
    if found:
        rel, fact, template = found
        relation = rel.id
        info = {"relation": rel.id, "fact_object": fact.object}
        for t in rel.templates:
            if t != template and t in rel.held_out_templates:
                probes.append(Probe("generality", fact_prompt(lm, t, subject), new, old))
        if rel.id in F.REVERSE_RELATIONS:
            rev = F.relation(F.REVERSE_RELATIONS[rel.id])
            # the new object now points back to the subject; the old object no longer does
            own = next((f.object for f in rev.facts if f.subject == new), "")  # "": no fact of its own to ask
            probes.append(Probe("symmetry", fact_prompt(lm, rev.train_templates[0], new), subject, None, known=own))
            probes.append(Probe("symmetry_old", fact_prompt(lm, rev.train_templates[0], fact.object), subject, None,
                                known=subject))
        if rel.id in F.SYNONYM_RELATIONS:
            occ = F.occupations()
            if new in occ and fact.object in occ:
                syn = F.relation(F.SYNONYM_RELATIONS[rel.id])
                probes.append(Probe("synonymy", fact_prompt(lm, syn.train_templates[0], subject), occ[new],
                                    occ[fact.object], known=occ[fact.object]))
    probes += [Probe("locality", p, "", None, known=obj) for p, obj in neighbour_prompts(lm, subject, relation,
                                                                                         neighbours)]
    return probes, info


def resolve(lm: LM, probes: list[Probe], before: torch.Tensor) -> tuple[list[int], list[dict]]:
    """Fill token ids; the symmetry probe's 'old' is what the model answered before (if that is not the
    subject itself). Returns the indices of the probes kept, and the others, each with why it was left
    out: the model does not answer it before the edit (``known``), or its words cannot be told apart."""
    out, left_out = [], []
    for k, (p, row) in enumerate(zip(probes, before)):
        top = int(row.argmax())
        if p.known is not None and (not p.known or top != first_token(lm, p.known)):
            said = lm.tokenizer.decode([top]).strip()
            left_out.append({"criterion": p.criterion, "prompt": p.prompt,
                             "reason": f"the model says {said!r} before the edit, not {p.known!r}" if p.known
                             else "the new object has no fact of its own to ask"})
            continue
        if p.criterion == "locality":
            p.expected_id, p.expected = top, lm.tokenizer.decode([top]).strip()
            out.append(k)
            continue
        eid = first_token(lm, p.expected)
        if eid is None:
            left_out.append({"criterion": p.criterion, "prompt": p.prompt, "reason": f"{p.expected!r} is no token"})
            continue
        p.expected_id = eid
        if p.criterion == "symmetry":
            second = int(row.topk(2).indices[1]) if top == eid else top
            p.old_id, p.old = second, lm.tokenizer.decode([second]).strip()
        elif p.old is not None:
            oid = first_token(lm, p.old)
            if oid is None or oid == eid:
                left_out.append({"criterion": p.criterion, "prompt": p.prompt,
                                 "reason": f"{p.expected!r} and {p.old!r} start with the same token"})
                continue
            p.old_id = oid
        out.append(k)
    return out, left_out


def score(lm: LM, probes: list[Probe], before: torch.Tensor, after: torch.Tensor) -> list[ProbeResult]:
    results = []
    dec = lambda i: lm.tokenizer.decode([int(i)]).strip()  # noqa: E731
    for p, b, a in zip(probes, before, after):
        if p.criterion == "locality":
            holds = int(a.argmax()) == p.expected_id
        elif p.criterion == "symmetry_old":
            holds = int(a.argmax()) != p.expected_id
        else:
            holds = bool(a[p.expected_id] > a[p.old_id])
        results.append(ProbeResult(p.criterion, p.prompt, p.expected, p.old, float(b[p.expected_id]),
                                   float(a[p.expected_id]), float(b[p.old_id]) if p.old_id >= 0 else None,
                                   float(a[p.old_id]) if p.old_id >= 0 else None, dec(b.argmax()), dec(a.argmax()),
                                   holds))
    return results


def criteria(results: Sequence[ProbeResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for c in CRITERIA + ("symmetry_old",):
        rs = [r.holds for r in results if r.criterion == c]
        out[c] = sum(rs) / len(rs) if rs else None
    return out


def accuracy_criteria(lm: LM, results: list[ProbeResult]) -> dict[str, float | None]:
    """Each criterion's figure under the token-accuracy scoring, on the model as it is now (the edit
    applied): every probe's ``accuracy`` filled in (teacher-forced accuracy of its expected string), the
    mean per criterion. symmetry_old asks for a word *not* to be said, which token accuracy cannot score:
    None."""
    out: dict[str, float | None] = {}
    for r in results:
        if r.criterion != "symmetry_old":
            r.accuracy = round(teacher_forced_accuracy(lm, r.prompt, r.expected), 6)
    for c in CRITERIA + ("symmetry_old",):
        accs = [r.accuracy for r in results if r.criterion == c and r.accuracy is not None]
        out[c] = sum(accs) / len(accs) if accs else None
    return out


def probe_probs(lm: LM, prompts: list[str]) -> torch.Tensor:
    return torch.softmax(answer_logits(lm, prompts), -1)


@torch.no_grad()
def teacher_forced_accuracy(lm: LM, prompt: str, target: str) -> float:
    """The seed's ``evaluate_edit.py`` scoring: the prompt followed by the whole target string, and the
    share of the target's tokens that are the model's argmax at the position before each (teacher
    forcing); 1.0 when the model would say the whole target greedily. A masked model fills one [MASK]:
    1.0 when its answer there is the target's (first) token, else 0.0."""
    tids = spoken_ids(lm, target, "target")
    if lm.masked:
        return float(int(answer_logits(lm, [prompt])[0].argmax()) == tids[0])
    ids = lm.tokenizer(prompt)["input_ids"]
    x = torch.tensor([ids + tids], device=lm.device)
    logits = lm.model(input_ids=x).logits[0]
    guesses = logits[len(ids) - 1 : len(ids) - 1 + len(tids)].argmax(-1).tolist()
    return sum(g == t for g, t in zip(guesses, tids)) / len(tids)
