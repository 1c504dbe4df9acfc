import json
import time

import pytest
import torch

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
