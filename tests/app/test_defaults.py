"""Every tab's main button, pressed with the defaults a model brings, answers on every shipped model."""

import pytest
from gradio_client import Client

from knlab.app.defaults import DEFAULTS, defaults_for
from knlab.app.tabs.attribute import attribute_defaults
from knlab.app.tabs.edit import edit_defaults
from knlab.app.tabs.evaluate import evaluate_defaults
from knlab.core.models import SHIPPED_MODELS
from knlab.world import paradigms as P


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_every_shipped_model_has_defaults_that_fit_it():
    assert set(DEFAULTS) == set(SHIPPED_MODELS)
    for name, d in DEFAULTS.items():
        masked = name == "world-bert"
        assert ("[MASK]" in d.prompt) == masked and d.subject in d.prompt
        assert ("rome" in d.edit_methods) == (not masked) and (bool(d.note) == masked)
        pair = P.minimal_pairs(d.paradigm, 1)[0]
        assert masked or pair.critical_index > pair.controller_index  # a causal model can be asked it
    assert defaults_for("gpt2") == DEFAULTS["world-gpt"]  # a hub model keeps the causal organism's


def test_changing_the_model_puts_its_defaults_in_every_tab():
    for name, d in DEFAULTS.items():
        assert attribute_defaults(name)[0] == d.prompt and attribute_defaults(name)[2] == d.paradigm
        method, prompt, subject, target = edit_defaults(name)
        assert method["choices"] == list(d.edit_methods) and method["value"] == d.edit_method
        assert (prompt, subject, target) == (d.prompt, d.subject, d.new_target)
        assert evaluate_defaults(name)[0]["value"] == d.edit_method
    assert "ROME edits causal" in edit_defaults("world-bert")[0]["info"]


@pytest.mark.slow  # every tab on every shipped model, at the defaults (the real model's take ~2 minutes)
@pytest.mark.parametrize("model", list(DEFAULTS))
def test_every_tab_answers_its_defaults(client, model):
    d = defaults_for(model)
    assert client.predict(model, d.prompt, 10, api_name="/predict")[1]["model"] == model
    _status, _plot, _cats, tr = client.predict(model, d.prompt, d.subject, "", 10, 0, "3sd", 0, False,
                                               api_name="/trace")
    assert tr["model"] == model
    out = client.predict(model, d.prompt, "", 20, "ig", api_name="/attribute")[-1]
    assert out["model"] == model
    _plot, par = client.predict(model, d.paradigm, d.paradigm_prompts, 20, api_name="/paradigm")
    assert par["paradigm"] == d.paradigm and par["n_prompts"] >= 2
    *_, ed = client.predict(model, d.edit_method, d.prompt, d.subject, d.new_target, None, api_name="/edit")
    assert ed["new"] == d.new_target
    client.predict(api_name="/reset")
    *_, ev = client.predict(model, d.edit_method, "P36", d.evaluate_facts, api_name="/evaluate")
    assert ev["method"] == d.edit_method and ev["n"] >= 1
