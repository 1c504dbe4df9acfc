import numpy as np
import pytest

from knlab.methods.attribute import attribute
from knlab.core.errors import InputError
from knlab.core.nethook import Trace
from knlab.methods.predict import encode, next_token_probs


def _p_with_layer_zeroed(lm, prompt, target, layer):
    enc = encode(lm, prompt)
    tid = lm.tokenizer.convert_tokens_to_ids(target)

    def zero(x, _):
        x = x.clone()
        x[:, enc.position] = 0
        return x

    with Trace(lm.model, lm.arch.module("mlp_out", layer), retain_output=False, edit_input=zero):
        return float(next_token_probs(lm, enc)[tid])


@pytest.mark.parametrize("lm_name,prompt", [("gpt", "The capital of Canada is"),
                                            ("bert", "The capital of Canada is [MASK] .")])
def test_ig_approaches_completeness(lm_name, prompt, request):
    """Sum of a layer's scores -> p(full) - p(layer activation zeroed) as the steps grow."""
    lm = request.getfixturevalue(lm_name)
    layer = lm.n_layers - 1
    full = attribute(lm, prompt, "Ottawa", steps=1).target_prob
    gap = full - _p_with_layer_zeroed(lm, prompt, "Ottawa", layer)
    errs = [abs(attribute(lm, prompt, "Ottawa", steps=s, layers=[layer]).scores[layer].sum() - gap)
            for s in (5, 80)]
    assert errs[1] < errs[0] + 1e-9
    assert errs[1] < 0.05 * max(abs(gap), 1e-3) + 5e-3


def test_map_shape_and_json(gpt):
    res = attribute(gpt, "The capital of Canada is", steps=4)
    assert res.target == "Ottawa" and res.scores.shape == (gpt.n_layers, gpt.ffn_width)
    js = res.to_json()
    assert js["layers"] == gpt.n_layers and js["width"] == gpt.ffn_width and len(js["top_neurons"]) == 20
    scores = [n["score"] for n in js["top_neurons"]]
    assert scores == sorted(scores, reverse=True)


def test_batched_all_layers_equals_one_layer_at_a_time(gpt):
    both = attribute(gpt, "The capital of France is", "Paris", steps=6)
    for l in (0, gpt.n_layers - 1):
        one = attribute(gpt, "The capital of France is", "Paris", steps=6, layers=[l])
        assert np.allclose(both.scores[l], one.scores[l], rtol=1e-4, atol=1e-8)


def test_suppressing_top_neurons_lowers_the_target(gpt):
    prompt = "The capital of France is"
    res = attribute(gpt, prompt, "Paris", steps=10)
    top = res.top(10)
    enc = encode(gpt, prompt)
    tid = gpt.tokenizer.convert_tokens_to_ids("Paris")
    traces = []
    for l in sorted({l for l, _, _ in top}):
        idx = [i for ll, i, _ in top if ll == l]

        def zero(x, _, idx=idx):
            x = x.clone()
            x[:, enc.position, idx] = 0
            return x
        traces.append(Trace(gpt.model, gpt.arch.module("mlp_out", l), retain_output=False, edit_input=zero))
    try:
        after = float(next_token_probs(gpt, enc)[tid])
    finally:
        for t in traces:
            t.close()
    assert after < res.target_prob


def test_activation_method_and_bad_input(gpt):
    res = attribute(gpt, "The capital of Canada is", method="activation")
    assert res.scores.shape == (gpt.n_layers, gpt.ffn_width)
    for kw in (dict(method="nope"), dict(steps=0), dict(target="Zzyzxqv"), dict(layers=[99])):
        with pytest.raises(InputError):
            attribute(gpt, "The capital of Canada is", **kw)


def test_fast_ig_equals_the_reference_loop_on_every_family(tiny_lm):
    """Replayed blocks and the reused prefix change no score: the batched IG equals the reference
    (one layer at a time, whole network recomputed) on a random model of each family."""
    from reference.ig import ig_straightforward
    prompt = "The capital of Canada is [MASK] ." if tiny_lm.masked else "The capital of Canada is"
    fast = attribute(tiny_lm, prompt, "Ottawa", steps=5).scores
    ref = ig_straightforward(tiny_lm, prompt, tiny_lm.tokenizer.convert_tokens_to_ids("Ottawa"), 5)
    assert np.abs(fast - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-12


@pytest.mark.parametrize("lm_name,prompt", [("gpt", "The Space Needle is in downtown"),
                                            ("bert", "The Space Needle is in downtown [MASK] .")])
def test_staged_batch_in_chunks_with_one_step_or_some_layers_equals_the_reference(lm_name, prompt, request):
    """The staged batch's bookkeeping (row offsets, the shared gamma = 1 step, per-layer cache rows,
    the cut last block) holds however the layers are split into batches and whatever the steps."""
    from knlab.methods.attribute import _ig_one_token
    from reference.ig import ig_straightforward
    lm = request.getfixturevalue(lm_name)
    enc, tid = encode(lm, prompt), lm.tokenizer.convert_tokens_to_ids("Seattle")
    ref = ig_straightforward
    full = ref(lm, prompt, tid, 4)
    scale = np.abs(full).max()
    one_per_batch, probs = _ig_one_token(lm, enc, tid, 4, 0.0, list(range(lm.n_layers)), max_floats=1)
    assert np.abs(one_per_batch - full).max() <= 1e-4 * scale
    assert abs(float(probs[tid]) - float(next_token_probs(lm, enc)[tid])) < 1e-5
    some, _ = _ig_one_token(lm, enc, tid, 4, 0.0, [1, lm.n_layers - 2])
    assert np.abs(some[[1, lm.n_layers - 2]] - full[[1, lm.n_layers - 2]]).max() <= 1e-4 * scale
    assert not some[[0, lm.n_layers - 1]].any()
    single = ref(lm, prompt, tid, 1)  # gamma = 0 only: nothing to share with the clean row
    mine, _ = _ig_one_token(lm, enc, tid, 1, 0.0, list(range(lm.n_layers)))
    assert np.abs(mine - single).max() <= 1e-4 * max(np.abs(single).max(), 1e-12)


@pytest.mark.parametrize("tiny_lm", ["gpt2", "llama"], indirect=True)
def test_the_seeds_site_before_the_activation_equals_its_reference(tiny_lm):
    """``site="pre-activation"`` runs through the same staged batch: equal to the straightforward loop
    hooked on the seed's own module (GPT-2's ``c_fc``, LLaMA's ``gate_proj`` output, named in
    ``tests/reference/``). (On a random model the two sites give nearly equal maps: its activations are
    small, where GELU and SiLU are close to linear; the trained model's test below tells them apart.)"""
    from reference.ig import ig_straightforward
    lm = tiny_lm
    prompt = "The capital of Canada is"
    tid = lm.tokenizer.convert_tokens_to_ids("Ottawa")
    fast = attribute(lm, prompt, "Ottawa", steps=5, site="pre-activation").scores
    ref = ig_straightforward(lm, prompt, tid, 5, site="pre-activation")
    assert np.abs(fast - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-12
    assert lm.arch.seed_site == "pre-activation"


def test_every_family_reads_the_pre_activation_site(tiny_lm):
    """Every family's pre-activation site (the first projection's output) runs through the staged batch as
    the straightforward loop at the same module does; an unknown site is one clear message."""
    from reference.ig import ig_straightforward
    prompt = "The capital of Canada is [MASK] ." if tiny_lm.masked else "The capital of Canada is"
    tid = tiny_lm.tokenizer.convert_tokens_to_ids("Ottawa")
    fast = attribute(tiny_lm, prompt, "Ottawa", steps=5, site="pre-activation").scores
    ref = ig_straightforward(tiny_lm, prompt, tid, 5, site="pre-activation", module="mlp_in")
    assert np.abs(fast - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-12
    with pytest.raises(InputError, match="unknown KN site"):
        attribute(tiny_lm, prompt, "Ottawa", steps=2, site="c_fc")


def test_the_two_sites_agree_on_the_neurons_not_on_the_scores(gpt):
    """On a trained model the sites differ (GELU is far from linear there; on a random model's small
    activations GELU(x) ~ x/2 makes them nearly equal), yet find the same top neurons (docs/paper.md 1)."""
    own = attribute(gpt, "The capital of Canada is", "Ottawa")
    seed = attribute(gpt, "The capital of Canada is", "Ottawa", site="pre-activation")
    assert np.abs(own.scores - seed.scores).max() > 0.01 * np.abs(own.scores).max()
    assert np.corrcoef(own.scores.ravel(), seed.scores.ravel())[0, 1] > 0.9
    assert {(l, i) for l, i, _ in own.top(5)} & {(l, i) for l, i, _ in seed.top(5)}


@pytest.mark.parametrize("skip_first", [False, True])
def test_probability_gradient_is_autograds(skip_first):
    """IG's objective sum_r p_t(r) differentiated by hand equals autograd through the softmax."""
    import torch
    from knlab.methods.attribute import probability_gradient
    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    z = logits.clone().requires_grad_(True)
    p = torch.softmax(z, -1)[:, 7]
    (p[1:] if skip_first else p).sum().backward()
    by_hand = probability_gradient(torch.softmax(logits, -1), 7, skip_first)
    assert torch.allclose(by_hand, z.grad, atol=1e-15, rtol=1e-12)
    assert by_hand[0].abs().max() == 0 if skip_first else by_hand[0].abs().max() > 0
