"""Every family in the architecture table resolves on a tiny random model and runs a forward pass."""

import pytest
import torch

from knlab.core.arch import ARCHITECTURES, arch_for, ffn_width, n_layers, weight_as_out_in
from knlab.core.models import from_model
from knlab.core.nethook import Trace, get_module

from tiny_models import FF, TINY, H, L, V


def test_every_family_has_a_tiny_config():
    assert set(TINY) == set(ARCHITECTURES)


@pytest.mark.parametrize("family", sorted(TINY))
def test_paths_resolve_with_right_shapes(family):
    torch.manual_seed(0)
    model = TINY[family]().eval()
    lm = from_model(model, tokenizer=None, spec=f"tiny-{family}")
    arch = lm.arch
    assert arch is arch_for(model.config.model_type)
    assert n_layers(model, arch) == L
    assert ffn_width(model, arch) == FF
    assert get_module(model, arch.embed).weight.shape == (V, H)
    get_module(model, arch.lm_head)
    for i in range(L):
        for kind in ("mlp", "mlp_in", "mlp_out", "attn", "attn_out", "hidden"):
            get_module(model, arch.module(kind, i))
        assert weight_as_out_in(model, arch.module("mlp_out", i)).shape == (H, FF)
        assert weight_as_out_in(model, arch.module("attn_out", i)).shape[0] == H

    ids = torch.randint(5, V, (2, 7))
    layer = L - 1
    with Trace(model, arch.module("mlp_out", layer), retain_input=True) as act, \
         Trace(model, arch.module("hidden", layer)) as hid, \
         Trace(model, arch.module("attn", layer)) as att, \
         Trace(model, arch.module("mlp", layer)) as mlp:
        logits = model(input_ids=ids).logits
    assert logits.shape == (2, 7, V)
    assert act.input.shape == (2, 7, FF)  # the FFN activation: knowledge neurons / ROME keys
    assert hid.output.shape == (2, 7, H)
    assert att.output.shape == (2, 7, H)
    assert mlp.output.shape == (2, 7, H)


@pytest.mark.parametrize("family", sorted(TINY))
def test_zeroing_the_ffn_activation_changes_the_output(family):
    """The hook point is live: editing the activation at one position changes the logits."""
    torch.manual_seed(0)
    model = TINY[family]().eval()
    arch = arch_for(model.config.model_type)
    ids = torch.randint(5, V, (1, 6))
    base = model(input_ids=ids).logits

    def zero(x, _):
        x = x.clone()
        x[:, -1] = 0
        return x

    with Trace(model, arch.module("mlp_out", 0), retain_output=False, edit_input=zero):
        edited = model(input_ids=ids).logits
    assert not torch.allclose(base[0, -1], edited[0, -1])
    assert torch.equal(model(input_ids=ids).logits, base)  # the hook is gone


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="not supported.*gpt2"):
        arch_for("t5")


@pytest.mark.parametrize("family", ["qwen3_moe", "mixtral"])
def test_mixture_of_experts_is_refused_in_one_line_with_why_and_what_is_supported(family):
    from knlab.core.arch import UnsupportedModel
    with pytest.raises(UnsupportedModel) as e:
        arch_for(family)
    message = str(e.value)
    assert "\n" not in message and f"{family!r} is not supported (a mixture-of-experts" in message
    assert message.endswith("supported families: " + ", ".join(ARCHITECTURES))
