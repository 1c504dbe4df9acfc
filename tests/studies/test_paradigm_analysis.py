import numpy as np
import pytest

from knlab.core.errors import InputError
from knlab.core.models import weights_checksum
from knlab.studies.paradigm_analysis import analyse


def test_determiner_noun_analysis_on_the_masked_model(bert):
    before = weights_checksum(bert.model)
    res = analyse(bert, "determiner_noun_agreement_2", n=8, steps=5)
    # as the paper's seed groups them: the singular prompts and the plural ones, each with its own KNs
    assert [g.target for g in res.groups] == ["pl", "sg"] and all(g.n_prompts == 8 for g in res.groups)
    assert res.n_prompts == 16
    for g in res.groups:
        assert len(g.tokens) == 24 and {t.group for t in g.tokens} == {"plural", "singular", "neutral"}
        for t in g.tokens:
            assert 0 <= t.pre <= 1 and 0 <= t.post <= 1 and 0 <= t.p_value <= 1
            assert t.rel_change == pytest.approx(100 * (t.post - t.pre) / min(t.pre, t.post), rel=1e-6)
        assert 0 <= g.overturned <= g.correct_before
        assert g.correct_before >= 0.9  # the organism knows the paradigm
        assert g.neurons  # each type's prompts share knowledge neurons on the organism ...
    # ... and suppressing the plural prompts' KNs changes the plural determiners' probabilities in them
    plural = next(g for g in res.groups if g.target == "pl")
    assert any(abs(t.rel_change) > 0 for t in plural.tokens if t.token in ("these", "those"))
    # the paradigm's figures are the means over its types (the paper's per-paradigm figure, Table 8)
    assert res.r2_1 == pytest.approx(np.mean([g.r2_1 for g in res.groups]))
    assert res.kn_count == pytest.approx(np.mean([len(g.neurons) for g in res.groups]))
    assert res.overturned == pytest.approx(np.mean([g.overturned for g in res.groups]))  # equal group sizes
    js = res.to_json()
    assert set(js) >= {"groups", "kn", "tau", "r2_1", "overturned", "site", "grouping"}
    assert set(js["groups"][0]) >= {"target", "neurons", "tau", "r2_1", "tokens", "overturned"}
    assert weights_checksum(bert.model) == before


def test_each_type_is_measured_as_the_seed_measures_one_search_target(bert):
    """A group's tau, R^2_1 and KNs are select() over that type's own maps alone: the straightforward way."""
    from knlab.methods.attribute import attribute
    from knlab.methods.neurons import select
    from knlab.studies.paradigm_analysis import usable_groups
    res = analyse(bert, "determiner_noun_agreement_2", n=4, steps=3)
    for g in res.groups:
        pairs, prompts = usable_groups(bert, "determiner_noun_agreement_2", 4)[g.target]
        sel = select([attribute(bert, q, p.good_token, 3).scores for q, p in zip(prompts, pairs)])
        assert g.neurons == sel.neurons and g.r2_1 == pytest.approx(sel.r2_1) and g.tau == pytest.approx(sel.tau)


def test_causal_model_cannot_do_determiner_first_paradigms(gpt):
    with pytest.raises(InputError, match="masked model"):
        analyse(gpt, "determiner_noun_agreement_2", n=4, steps=2)
    res = analyse(gpt, "anaphor_gender_agreement", n=4, steps=2)
    assert [g.target for g in res.groups] == ["f", "m"] and res.n_prompts == 8


def test_unknown_paradigm(bert):
    with pytest.raises(InputError, match="unknown paradigm"):
        analyse(bert, "no_such_paradigm")
