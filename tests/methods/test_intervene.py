import pytest

from knlab.methods.attribute import attribute
from knlab.core.errors import InputError
from knlab.methods.intervene import NeuronIntervention, intervene, parse_neurons
from knlab.core.models import weights_checksum
from knlab.methods.predict import predict
from knlab.serve.worker import ModelWorker


@pytest.mark.parametrize("lm_name,prompt,target", [("gpt", "The capital of France is", "Paris"),
                                                   ("bert", "The capital of France is [MASK] .", "Paris")])
def test_suppressing_top_neurons_lowers_and_enhancing_raises(lm_name, prompt, target, request):
    lm = request.getfixturevalue(lm_name)
    top = [(l, i) for l, i, s in attribute(lm, prompt, target, steps=10).top(5) if s > 0]
    base_sum = weights_checksum(lm.model)
    down = intervene(lm, prompt, top, "suppress", target)
    up = intervene(lm, prompt, top, "enhance", target)
    assert down.after["target_prob"] < down.before["target_prob"]
    assert up.after["target_prob"] > up.before["target_prob"] or up.before["target_prob"] > 0.999
    assert weights_checksum(lm.model) == base_sum
    assert predict(lm, prompt, 1).top_probs[0] == pytest.approx(down.before["top"][0]["prob"], abs=0)


def test_intervention_is_a_per_request_edit_spec(gpt):
    worker = ModelWorker(device="cpu")
    worker.add_model(gpt)
    prompt = "The capital of France is"
    top = [(l, i) for l, i, _ in attribute(gpt, prompt, "Paris", steps=10).top(5)]
    p = lambda lm: predict(lm, prompt, 1).top_probs[0]  # noqa: E731
    base = worker.run("world-gpt", [], p)
    assert worker.run("world-gpt", [NeuronIntervention(tuple(top), "suppress")], p) < base
    assert worker.run("world-gpt", [], p) == base


def test_bad_neurons(gpt):
    with pytest.raises(InputError, match="out of range"):
        intervene(gpt, "The capital of France is", ((99, 0),))
    with pytest.raises(InputError, match="out of range"):
        intervene(gpt, "The capital of France is", ((0, 10**6),))
    with pytest.raises(InputError):
        intervene(gpt, "The capital of France is", ((0, 1),), mode="delete")
    with pytest.raises(InputError, match="LAYER:INDEX"):
        parse_neurons(["5-3"])
    assert parse_neurons(["5:1094", "0:2"]) == ((5, 1094), (0, 2))


def test_kn_edit_moves_the_fact_and_is_undone(gpt):
    from knlab.methods.intervene import KnowledgeNeuronEdit
    worker = ModelWorker(device="cpu")
    worker.add_model(gpt)
    prompt = "The capital of Canada is"
    kns = tuple((l, i) for l, i, _ in attribute(gpt, prompt, "Ottawa", steps=10).top(5))
    spec = KnowledgeNeuronEdit(kns, "Ottawa", "Rome")
    assert spec.touched_parameters(gpt) == sorted({f"transformer.h.{l}.mlp.c_proj.weight" for l, _ in kns})
    rome = gpt.tokenizer.convert_tokens_to_ids("Rome")
    from knlab.methods.predict import encode, next_token_probs
    p_rome = lambda lm: float(next_token_probs(lm, encode(lm, prompt))[rome])  # noqa: E731
    before_sum = weights_checksum(gpt.model)
    base = worker.run("world-gpt", [], p_rome)
    edited = worker.run("world-gpt", [spec], p_rome)
    assert edited > base
    assert weights_checksum(gpt.model) == before_sum
    assert worker.run("world-gpt", [], p_rome) == base
