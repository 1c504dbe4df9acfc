import json
import time

import pytest
import torch

from knlab.core.errors import KnlabError
from knlab.core.models import ModelLoadError, load_model, shipped_weights_bytes, weights_checksum


def test_shipped_models_load_with_the_auto_classes(gpt, bert):
    assert gpt.arch.family == "gpt_neo" and not gpt.masked
    assert bert.arch.family == "bert" and bert.masked
    assert gpt.device.type == "cpu"
    assert gpt.n_layers >= 6 and gpt.ffn_width > 0


def test_shipped_weights_fit_the_budget():
    assert 0 < shipped_weights_bytes() <= 40 * 1024 * 1024


def test_unknown_model_is_a_quick_clear_error(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.time()
    with pytest.raises(ModelLoadError, match="world-gpt"):
        load_model("no-such-org/no-such-model-knlab")
    assert time.time() - t0 < 30


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="not a loadable model"):
        load_model(str(tmp_path))


def test_unsupported_family_names_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8, "num_layers": 1,
                                                       "num_heads": 1, "d_kv": 8, "d_ff": 8, "vocab_size": 10}))
    with pytest.raises(ModelLoadError, match="not supported.*gpt2"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("spec", ["", "   "])
def test_empty_spec(spec):
    with pytest.raises(ModelLoadError):
        load_model(spec)


def test_checksum_sees_a_single_bit(gpt):
    before = weights_checksum(gpt.model)
    w = gpt.model.transformer.h[0].mlp.c_proj.weight
    with torch.no_grad():
        old = w[0, 0].clone()
        w[0, 0] = torch.nextafter(old, old + 1)
        changed = weights_checksum(gpt.model)
        w[0, 0] = old
    assert changed != before
    assert weights_checksum(gpt.model) == before


def test_checksum_hashes_shared_memory_once_and_equals_hashing_every_name(smol, monkeypatch):
    """The real model ties its output head to its input embeddings: hashed once, on threads, the checksum
    is still what hashing every name in turn gives (the value records were resumed by stays the same)."""
    import hashlib

    from knlab.core import models

    named = sorted(smol.model.state_dict().items())
    plain = hashlib.blake2b(digest_size=16)
    for name, t in named:
        plain.update(name.encode())
        plain.update(models.tensor_checksum(t).encode())
    hashed = []
    monkeypatch.setattr(models, "tensor_checksum", lambda t: hashed.append(t.data_ptr()) or
                        hashlib.blake2b(t.contiguous().view(torch.uint8).numpy(), digest_size=16).hexdigest())
    assert sum(t.nbytes for _, t in named) > models.PARALLEL_CHECKSUM_BYTES  # the threaded path
    assert weights_checksum(smol.model) == plain.hexdigest()
    assert len(hashed) == len(set(hashed)) == len(named) - 1  # the tied pair once
    monkeypatch.setattr(models, "PARALLEL_CHECKSUM_BYTES", 1 << 62)  # one thread: the same value
    assert weights_checksum(smol.model) == plain.hexdigest()


SPREAD = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu",
          **{f"transformer.h.{i}": "cpu" if i < 3 else "disk" for i in range(6)}, "transformer.ln_f": "cpu",
          "lm_head": "cpu"}
PROMPT = "The capital of Canada is"


def _random_rome_edit(lm, layer, seed=0):
    from knlab.methods.rome.rome_main import RomeEdit
    g = torch.Generator().manual_seed(seed)
    return RomeEdit(layer, tuple(torch.randn(lm.ffn_width, generator=g).tolist()),
                    tuple((0.05 * torch.randn(lm.model.config.hidden_size, generator=g)).tolist()))


def test_a_spread_model_computes_edits_and_restores_as_one_on_a_device(gpt, tmp_path):
    """Half of world-gpt's blocks on disk through accelerate's device_map: the same predictions, IG and trace;
    the checksum reads the offloaded weights through accelerate's hooks; an edit of a block in memory changes
    the model as on the unspread one and is undone bit for bit; an edit of a block on disk is refused."""
    from knlab.core.specs import applied
    from knlab.methods.attribute import attribute
    from knlab.methods.predict import predict
    from knlab.methods.trace import trace
    lm = load_model("world-gpt", device_map=SPREAD, offload_folder=str(tmp_path))
    assert lm.model.transformer.h[4].mlp.c_proj.weight.device.type == "meta"  # really offloaded
    base = weights_checksum(gpt.model)
    assert weights_checksum(lm.model) == base
    assert torch.allclose(torch.tensor(predict(lm, PROMPT, 5).top_probs), torch.tensor(predict(gpt, PROMPT, 5).top_probs))
    assert abs(attribute(lm, PROMPT, steps=4).scores - attribute(gpt, PROMPT, steps=4).scores).max() < 1e-5
    t, t0 = trace(lm, PROMPT, "Canada", samples=3), trace(gpt, PROMPT, "Canada", samples=3)
    assert all(abs(t.grids[k] - t0.grids[k]).max() < 1e-5 for k in t0.grids)
    spec = _random_rome_edit(gpt, 1)
    with applied(gpt, [spec]):
        edited = predict(gpt, PROMPT, 5).top_probs
    with applied(lm, [spec]):
        assert abs(predict(lm, PROMPT, 5).top_probs - edited).max() < 1e-5
    assert weights_checksum(lm.model) == base and weights_checksum(gpt.model) == base
    with pytest.raises(KnlabError, match="offloaded to disk"):
        with applied(lm, [_random_rome_edit(gpt, 4)]):
            pass
    assert weights_checksum(lm.model) == base


def test_an_offloaded_block_in_memory_is_edited_through_its_hook(gpt):
    """accelerate's CPU offload (weights kept in memory, shown as meta): the edit goes into the kept copy."""
    import copy

    import accelerate

    from knlab.core.specs import applied
    from knlab.methods.predict import predict
    lm = copy.deepcopy(gpt)
    accelerate.cpu_offload(lm.model, execution_device=torch.device("cpu"))
    assert lm.model.transformer.h[4].mlp.c_proj.weight.device.type == "meta"
    spec, base = _random_rome_edit(gpt, 4, seed=1), weights_checksum(gpt.model)
    with applied(gpt, [spec]):
        edited = predict(gpt, PROMPT, 5).top_probs
    with applied(lm, [spec]):
        assert abs(predict(lm, PROMPT, 5).top_probs - edited).max() < 1e-5
    assert weights_checksum(lm.model) == base
