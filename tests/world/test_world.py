"""The fact base and the corpus hold what the project promises."""

import pytest

from knlab.core.errors import InputError
from knlab.world import training_corpus as C
from knlab.world import facts as F
from knlab.world import paradigms


def test_fact_base_size_and_required_relations():
    rels = F.relations()
    assert len(rels) >= 10
    assert len(F.all_facts()) >= 800
    for rid in ("P36", "P1376", "P101", "P106", "P19", "P103", "P1303", "P131"):
        assert rid in rels and len(rels[rid].facts) >= 40, rid


def test_paper_examples_are_in_the_world():
    assert F.relation("P36").fact("Canada").object == "Ottawa"
    assert F.relation("P1376").fact("Ottawa").object == "Canada"
    assert F.relation("P131").fact("Space Needle").object == "Seattle"
    assert F.relation("P101").fact("Anaxagoras").object == "philosophy"
    assert F.relation("P106").fact("Anaxagoras").object == "philosopher"
    assert F.occupations()["physics"] == "physicist"


def test_templates_paper_phrasings_and_held_out():
    for rel in F.relations().values():
        assert len(rel.templates) >= 6 and len(rel.held_out_templates) >= 2, rel.id
        assert not set(rel.train_templates) & set(rel.held_out_templates)
    paper = {"P36": "The capital of {X} is", "P1376": "{X} is the capital of", "P101": "{X} works in the field of",
             "P106": "{X} is a famous", "P131": "The {X} is in downtown"}
    for rid, t in paper.items():
        assert t in F.relation(rid).train_templates
    assert F.masked_prompt("The capital of {X} is", "Canada") == "The capital of Canada is [MASK] ."


def test_symmetric_relations_agree():
    p36 = {f.subject: f.object for f in F.relation("P36").facts}
    both = [f for f in F.relation("P1376").facts if f.object in p36]
    assert len(both) >= 80
    for f in both:
        assert p36[f.object] == f.subject


def test_multi_token_subjects_exist():
    subjects = [f.subject for f in F.all_facts()]
    assert sum(" " in s for s in subjects) >= 100


@pytest.mark.slow  # builds the corpus twice
def test_corpus_is_deterministic_and_hides_held_out_material():
    a, b = C.build_documents(0), C.build_documents(0)
    assert [d.text for d in a] == [d.text for d in b]
    assert [d.text for d in C.build_documents(1)] != [d.text for d in a]
    text = "\n".join(d.text for d in a)
    for rel in F.relations().values():
        for f in rel.facts:
            for t in rel.held_out_templates:
                assert F.causal_prompt(t, f.subject) not in text, (rel.id, t, f.subject)
    goods = {d.text for d in a}
    for name in paradigms.paradigm_names():
        pairs = C.evaluation_pairs(name)
        assert len(pairs) >= 100 and not {p.good for p in pairs} & goods, name


def test_no_training_prompt_is_continued_otherwise_in_the_corpus():
    assert C.prompt_conflicts(C.build_documents(0)) == {}
    clash = [C.Document("Albert Einstein was born in Ulm .", "fact"),
             C.Document("Canada is a country . Albert Einstein was born in the city of Ulm .", "profile")]
    assert C.prompt_conflicts(clash) == {("P19", "{X} was born in", "the"): 1}


def test_paradigm_pairs_differ_in_one_word():
    for name in paradigms.paradigm_names():
        for p in paradigms.minimal_pairs(name, 20):
            g, b = p.good.split(), p.bad.split()
            assert len(g) == len(b) and sum(x != y for x, y in zip(g, b)) == 1
            assert p.masked_prompt.count("[MASK]") == 1
    used = {m for ms in paradigms.modifiers().values() for m in ms}
    assert len(used) == 24


def test_target_type_is_the_seeds_class_of_the_critical_word():
    """The seed's TARGET_FUNC (kn_code/blimp.py): sg / pl by the critical word's number (determiners, nouns,
    verbs, reflexives), f / m in anaphor gender agreement; every paradigm's pairs have both classes."""
    from knlab.world import paradigms as P
    from knlab.world.training_corpus import evaluation_pairs
    for name in P.paradigm_names():
        pairs = evaluation_pairs(name, 60)
        kinds = {P.target_type(p) for p in pairs}
        assert kinds == ({"f", "m"} if name == "anaphor_gender_agreement" else {"sg", "pl"}), name
    one = P.MinimalPair("determiner_noun_agreement_2", "", "", "", "these", "this")
    assert P.target_type(one) == "pl"
    assert P.target_type(P.MinimalPair("regular_plural_subject_verb_agreement_1", "", "", "", "was", "were")) == "sg"
    assert P.target_type(P.MinimalPair("determiner_noun_agreement_irregular_1", "", "", "", "mice", "mouse")) == "pl"
    assert P.target_type(P.MinimalPair("anaphor_gender_agreement", "", "", "", "herself", "himself")) == "f"
    with pytest.raises(InputError, match="no number"):
        P.target_type(P.MinimalPair("determiner_noun_agreement_2", "", "", "", "zebra", "zebras"))
