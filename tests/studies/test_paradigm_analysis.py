import pytest

from knlab.core.errors import InputError
from knlab.core.models import weights_checksum
from knlab.studies.paradigm_analysis import analyse


def test_determiner_noun_analysis_on_the_masked_model(bert):
    before = weights_checksum(bert.model)
    res = analyse(bert, "determiner_noun_agreement_2", n=8, steps=5)
    assert res.n_prompts == 8 and len(res.tokens) == 24
    assert {t.group for t in res.tokens} == {"plural", "singular", "neutral"}
    for t in res.tokens:
        assert 0 <= t.pre <= 1 and 0 <= t.post <= 1 and 0 <= t.p_value <= 1
        assert t.rel_change == pytest.approx(100 * (t.post - t.pre) / min(t.pre, t.post), rel=1e-6)
    assert 0 <= res.overturned <= res.correct_before
    assert res.correct_before >= 0.9  # the organism knows the paradigm
    assert res.neurons  # the paradigm's prompts share knowledge neurons on the organism ...
    # ... and suppressing them changes the determiners' probabilities
    assert any(abs(t.rel_change) > 0 for t in res.tokens if t.token in ("this", "these", "that", "those"))
    js = res.to_json()
    assert set(js) >= {"neurons", "tau", "r2_1", "tokens", "overturned"}
    assert weights_checksum(bert.model) == before


def test_causal_model_cannot_do_determiner_first_paradigms(gpt):
    with pytest.raises(InputError, match="masked model"):
        analyse(gpt, "determiner_noun_agreement_2", n=4, steps=2)
    res = analyse(gpt, "anaphor_gender_agreement", n=4, steps=2)
    assert res.n_prompts == 4


def test_unknown_paradigm(bert):
    with pytest.raises(InputError, match="unknown paradigm"):
        analyse(bert, "no_such_paradigm")
