"""The lesson's six steps run live and each says whether this model's run agrees with the paper."""

import pytest

from knlab.core.errors import InputError
from knlab.core.models import weights_checksum
from knlab.studies.lesson import STEPS, lesson_model, step


def test_six_steps_each_with_its_text_and_tab():
    assert [s.number for s in STEPS] == [1, 2, 3, 4, 5, 6]
    assert all(len(s.notice) > 100 and s.tab in ("Predict", "Trace", "Attribute", "Edit", "Paper") for s in STEPS)
    assert lesson_model() in ("smollm2-135m", "world-gpt")
    with pytest.raises(InputError, match="steps 1-6"):
        step(7)


@pytest.mark.slow  # ROME edits and a causal trace
def test_every_step_runs_on_the_organism(gpt):
    base = weights_checksum(gpt.model)
    results = [s.run(gpt) for s in STEPS]
    assert [r.step for r in results] == [1, 2, 3, 4, 5, 6]
    assert results[0].agrees and "Ottawa" in results[0].summary  # world-gpt knows Canada's capital
    assert results[3].agrees and results[3].result.after["p_new"] > results[3].result.after["p_old"]  # ROME takes
    for r in results:
        assert r.summary and r.agrees in (True, False, None) and r.to_json()["model"] == "world-gpt"
    assert weights_checksum(gpt.model) == base  # every edit of the lesson is undone


@pytest.mark.slow
def test_the_first_steps_on_the_real_model(smol):
    first = step(1).run(smol)
    assert first.agrees and "Paris" in first.summary
    second = step(2).run(smol)
    assert second.detail["mlp_layer"] < smol.n_layers and second.kind == "trace"
