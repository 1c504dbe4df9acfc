"""A relation's facts edited one by one on the shipped model: the issue's bar (ROME reliability >= 90% on the
first 30 P36 facts, unrelated facts unchanged), the counterfactual objects, and the published figures
shown beside the live ones."""

import pytest

from knlab.core.errors import InputError
from knlab.core.models import weights_checksum
from knlab.studies.published import KN_EDIT_NOTE, ROME_TABLE_1
from knlab.studies.relation_evaluation import counterfactual, evaluate_relation, published_figures
from knlab.world import facts as F


@pytest.mark.slow  # 30 edits (~30 s): ./run_tests.sh --fast leaves it out
def test_rome_reliability_on_the_first_30_p36_facts(gpt):
    base = weights_checksum(gpt.model)
    ev = evaluate_relation(gpt, "rome", "P36", limit=30)
    assert ev.n == 30 and not ev.skipped
    assert ev.rates["reliability"] >= 0.9
    assert ev.rates["locality"] >= 0.9  # unrelated facts keep their answers
    assert ev.counts["symmetry"][1] > 0 and ev.rates["synonymy"] is None
    assert weights_checksum(gpt.model) == base


def test_counterfactual_is_another_object_of_the_relation_fixed_by_the_fact():
    rel = F.relation("P36")
    objects = {f.object for f in rel.facts}
    for fact in rel.facts[:20]:
        new = counterfactual(rel, fact, {"Rome"})
        assert new in objects and new not in (fact.object, "Rome")
        assert new == counterfactual(rel, fact, {"Rome"})  # the same fact always gets the same new object


def test_seed_scoring_and_published_figures_beside_the_live_rates(gpt):
    base = weights_checksum(gpt.model)
    ev = evaluate_relation(gpt, "rome", "P36", limit=2, seed_scoring=True)
    assert ev.n + len(ev.skipped) == 2 and ev.seed_rates is not None
    assert all(0.0 <= v <= 1.0 for v in ev.seed_rates.values()) and "reliability" in ev.seed_rates
    out = ev.to_json()
    assert out["published"] == {m: rows["P36"] for m, rows in ROME_TABLE_1.items()}
    assert published_figures("kn", "P36") == {"note": KN_EDIT_NOTE}
    assert weights_checksum(gpt.model) == base


def test_bad_method_or_model(bert):
    with pytest.raises(InputError, match="unknown edit method"):
        evaluate_relation(bert, "memit", "P36")
    with pytest.raises(InputError, match="masked"):
        evaluate_relation(bert, "rome", "P36")
