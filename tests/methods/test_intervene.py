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


@pytest.mark.parametrize("tiny_lm", ["gpt2", "llama", "bert"], indirect=True)
def test_the_ekn_rule_is_eleuthers_arithmetic_column_for_column(tiny_lm):
    """``rule="ekn"`` changes exactly what EleutherAI's ``modify_weights(mode="edit")`` changes: for each
    neuron, the output projection's row (GPT-2's Conv1D) or column (nn.Linear) by -2 x e(old) + 2 x e(new),
    the word embeddings read from the model's own table; every other weight stays as it was."""
    import torch
    from knlab.methods.intervene import KN_RULES, KnowledgeNeuronEdit
    lm = tiny_lm
    neurons = ((0, 3), (1, 7), (1, 2))
    old, new = "Ottawa", "Rome"
    emb = lm.model.get_input_embeddings().weight.detach().clone()
    e_old, e_new = emb[lm.tokenizer.convert_tokens_to_ids(old)], emb[lm.tokenizer.convert_tokens_to_ids(new)]
    names = {l: lm.arch.module("mlp_out", l) + ".weight" for l, _ in neurons}
    params = dict(lm.model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    # EKN, transcribed: a GPT-2 Conv1D's weight is [in, out] (the neuron's row), nn.Linear's [out, in] (its column)
    expected = {n: w.clone() for n, w in before.items()}
    for l, i in neurons:
        w = expected[names[l]]
        if lm.model.config.model_type == "gpt2":
            w[i, :] -= e_old * 2
            w[i, :] += e_new * 2
        else:
            w[:, i] -= e_old * 2
            w[:, i] += e_new * 2
    assert KN_RULES["ekn"] == (2.0, 2.0) and KN_RULES["dai"] == (1.0, 8.0)
    with KnowledgeNeuronEdit(neurons, old, new, "ekn").apply(lm):
        for n, p in lm.model.named_parameters():
            assert torch.allclose(p.detach(), expected[n], atol=1e-6, rtol=0), n
        changed = {n for n, p in lm.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == set(names.values())
    with pytest.raises(InputError, match="unknown KN edit rule"):
        with KnowledgeNeuronEdit(neurons, old, new, "easyedit").apply(lm):
            pass


def test_summed_activation_is_the_neurons_activations_at_the_prediction_position(gpt):
    """What a KN edit's added direction is multiplied by: the neurons' activations (the output projection's
    input) at the prompt's last position, summed."""
    from knlab.core.nethook import Trace
    from knlab.methods.intervene import summed_activation
    from knlab.methods.predict import encode
    prompt, kns = "The capital of Canada is", ((1, 5), (3, 9), (3, 100))
    enc = encode(gpt, prompt)
    seen = {}
    for l in (1, 3):
        with Trace(gpt.model, gpt.arch.module("mlp_out", l), retain_input=True, retain_output=False) as t:
            gpt.model(input_ids=enc.input_ids)
        seen[l] = t.input[0, -1]
    assert summed_activation(gpt, prompt, kns) == pytest.approx(float(sum(seen[l][i] for l, i in kns)), abs=1e-6)
