"""The world's facts as a model meets them: which fact a prompt states, and which facts a model knows.

An edit or a trace of a fact needs both: the probes of an edit follow from the fact its prompt states
(its paraphrases, its reverse, its synonym), and a fact the model does not know cannot be edited away or
traced back. The prompts are the world's templates, with the subject filled and, on a masked model, the
answer's slot a [MASK]."""

from __future__ import annotations

from itertools import islice
from typing import Iterator

import torch

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.tokens import first_token
from knlab.methods.corruption import replacement_ids
from knlab.methods.predict import answer_logits
from knlab.methods.trace import locate_subject
from knlab.world import facts as F


def fact_prompt(lm: LM, template: str, subject: str) -> str:
    return F.prompt(template, subject, lm.masked)


def find_fact(lm: LM, prompt: str, subject: str) -> tuple[F.Relation, F.Fact, str] | None:
    """The world fact a prompt states (relation, fact, template), when it is one of the world's phrasings."""
    for rel in F.relations().values():
        for t in rel.templates:
            if fact_prompt(lm, t, subject) == prompt:
                try:
                    return rel, rel.fact(subject), t
                except KeyError:
                    return None
    return None


def iter_known_subjects(lm: LM, relation: str, template: str | None = None, scan: int | None = None,
                        first_chunk: int = 8, chunk: int = 64) -> Iterator[str]:
    """The subjects of ``relation`` whose fact the model states (its top answer at the first training
    template, or ``template``, is the object's first token), in the relation's order. The facts are asked
    in batches that double from ``first_chunk`` up to ``chunk``: a caller that wants one known fact (an
    edit's claim at size 1) pays for 8 prompts, not 64 (~2 s on the real model), and one that scans the
    whole relation still runs full batches. ``scan``: the relation's first ``scan`` facts only."""
    rel = F.relation(relation)
    template = template or rel.train_templates[0]
    facts = rel.facts[:scan]
    c, size = 0, first_chunk
    while c < len(facts):
        part = [f for f in facts[c : c + size] if first_token(lm, f.object) is not None]
        c, size = c + size, min(2 * size, chunk)
        if not part:
            continue
        with torch.no_grad():
            top = answer_logits(lm, [fact_prompt(lm, template, f.subject) for f in part]).argmax(-1).tolist()
        yield from (f.subject for f, t in zip(part, top) if t == first_token(lm, f.object))


def known_subjects(lm: LM, relation: str, n: int, template: str | None = None,
                   scan: int | None = None) -> list[str]:
    """The first ``n`` subjects of ``relation`` whose fact the model states (``iter_known_subjects``): what
    an edit or a trace of a fact needs, since a fact the model does not know cannot be edited away or
    traced back."""
    return list(islice(iter_known_subjects(lm, relation, template, scan), n))



def pick_replacement(lm: LM, prompt: str, subject: str, scan: int = 64) -> str:
    """Symmetric token replacement's other subject (Zhang & Nanda 2024): one the model knows for the same
    relation, with another answer and the same number of tokens in the prompt: the first such subject of
    the relation the prompt states. A prompt that is not one of the world's facts needs one typed."""
    found = find_fact(lm, prompt.strip(), subject.strip())
    if found is None:
        raise InputError("this prompt is not one of the world's facts: type a replacement subject of the same "
                         "token length")
    rel, fact, template = found
    rng = locate_subject(lm, prompt, subject)
    for other in iter_known_subjects(lm, rel.id, template, scan=scan):
        if other == fact.subject or first_token(lm, rel.fact(other).object) == first_token(lm, fact.object):
            continue
        try:
            replacement_ids(lm, prompt, subject, rng, other)
        except InputError:
            continue
        return other
    raise InputError(f"no subject of {rel.id} that {lm.spec} knows has {subject.strip()!r}'s token length "
                     f"among the first {scan}: type a replacement")
