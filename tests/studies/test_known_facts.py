"""Which world fact a prompt states, and which facts the shipped model knows."""

from knlab.methods.predict import encode, next_token_probs, top_token
from knlab.studies.known_facts import find_fact, iter_known_subjects, known_subjects
from knlab.world import facts as F


def test_find_fact(gpt, bert):
    rel, fact, template = find_fact(gpt, "Canada is governed from", "Canada")
    assert (rel.id, fact.object, template) == ("P36", "Ottawa", "{X} is governed from")
    assert find_fact(gpt, "Canada is lovely", "Canada") is None
    assert find_fact(bert, "Canada is governed from [MASK] .", "Canada")[1].object == "Ottawa"


def test_known_subjects_are_the_facts_the_model_answers(gpt):
    rel = F.relation("P36")
    known = known_subjects(gpt, "P36", 5, scan=40)
    assert len(known) == 5 and known == list(iter_known_subjects(gpt, "P36", scan=40))[:5]
    for s in known:
        prompt = F.prompt(rel.train_templates[0], s, False)
        assert top_token(gpt, next_token_probs(gpt, encode(gpt, prompt)))[1] == rel.fact(s).object
    order = [f.subject for f in rel.facts]
    assert [order.index(s) for s in known] == sorted(order.index(s) for s in known)  # in the relation's order
