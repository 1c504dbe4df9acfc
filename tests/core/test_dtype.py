"""The compute dtype: chosen from the flag / KNLAB_DTYPE, float32 exactly as before, bfloat16 agreeing."""

import contextlib
import dataclasses

import numpy as np
import pytest
import torch

from knlab.core import dtype as D
from knlab.core.errors import InputError

PROMPT, SUBJECT = "The capital of Canada is", "Canada"


def test_choice_from_argument_env_and_default(monkeypatch):
    monkeypatch.delenv(D.ENV, raising=False)
    assert D.check_choice(None) == "auto"
    monkeypatch.setenv(D.ENV, "bf16")
    assert D.check_choice(None) == "bfloat16"
    assert D.check_choice("float32") == "float32"  # the argument wins over the environment
    monkeypatch.setenv(D.ENV, "fp16")
    assert D.check_choice(None) == "float16"
    monkeypatch.setenv(D.ENV, "float8")
    with pytest.raises(InputError, match="KNLAB_DTYPE"):
        D.check_choice(None)


def test_method_dtype_resolution(monkeypatch):
    for m in D.METHODS:
        assert D.method_dtype("float32", m, bf16_units=True) == "float32"
        assert D.method_dtype("bfloat16", m, bf16_units=False) == "bfloat16"  # forced: as asked
        assert D.method_dtype("auto", m, bf16_units=False) == "float32"  # no bfloat16 units: float32
        assert D.method_dtype("auto", m, "cuda", bf16_units=True) == "float32"
        for half in ("float16", "bfloat16"):  # asked for: honoured on a GPU as on a CPU
            assert D.method_dtype(half, m, "cuda") == D.method_dtype(half, m, "cpu") == half
    monkeypatch.setattr(D, "AUTO_BF16", frozenset({"ig"}))
    assert D.method_dtype("auto", "ig", bf16_units=True) == "bfloat16"
    assert D.method_dtype("auto", "rome", bf16_units=True) == "float32"  # not measured to agree
    with pytest.raises(ValueError):
        D.method_dtype("auto", "nope")


def test_float32_runs_no_autocast_context():
    assert isinstance(D.autocast("float32"), contextlib.nullcontext)
    assert isinstance(D.autocast("bfloat16"), torch.autocast)
    with D.autocast("float16"):
        assert torch.get_autocast_dtype("cpu") == torch.float16


def test_weights_stay_float32_wherever_they_fit(monkeypatch):
    """A GPU no longer forces half-precision weights: float32 where the model fits its free memory 1.5 times
    over, half precision only where it does not."""
    from knlab.core.models import weights_dtype_for
    assert weights_dtype_for("cpu", 10 ** 12) == torch.float32
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 << 30, 80 << 30))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert weights_dtype_for("cuda", 2 << 30) == torch.float32
    assert weights_dtype_for("cuda", 3 << 30) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert weights_dtype_for("cuda", 3 << 30) == torch.float16


def test_half_weights_run_in_their_own_dtype(gpt):
    """A model whose weights had to be stored in half precision reports that dtype, whatever the choice."""
    import copy
    lm = copy.deepcopy(gpt)
    lm.model.to(torch.bfloat16)
    assert lm.weights_dtype == "bfloat16"
    assert {lm.compute_dtype(m) for m in D.METHODS} == {"bfloat16"}


def test_load_model_takes_the_environment(monkeypatch):
    from knlab.core.models import load_model
    monkeypatch.setenv(D.ENV, "bfloat16")
    lm = load_model("world-gpt", device="cpu")
    assert lm.dtype_choice == "bfloat16" and lm.compute_dtype("trace") == "bfloat16"
    assert load_model("world-gpt", device="cpu", compute="float32").compute_dtype("ig") == "float32"


def test_cli_flag_sets_the_choice(monkeypatch, capsys):
    import json
    import os

    from knlab.app import cli
    monkeypatch.delenv(D.ENV, raising=False)
    monkeypatch.setattr("knlab.serve.worker._DEFAULT", None)
    assert cli.main(["attribute", PROMPT, "--json", "--steps", "2", "--dtype", "float32"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "float32"
    assert os.environ[D.ENV] == "float32"
    with pytest.raises(SystemExit):
        cli.main(["attribute", PROMPT, "--dtype", "float8"])


def _as(lm, choice):
    return dataclasses.replace(lm, dtype_choice=choice)  # the same model, another compute dtype


def test_float32_is_bit_identical_to_no_context(gpt, monkeypatch):
    """Forced float32 (and auto where it means float32) runs exactly the code without any dtype context."""
    from knlab.core.models import LM
    from knlab.methods.attribute import attribute
    from knlab.methods.trace import trace
    lm = _as(gpt, "float32")
    a, t = attribute(lm, PROMPT, steps=5), trace(lm, PROMPT, SUBJECT, samples=3, kinds=("mlp",))
    assert a.dtype == t.dtype == "float32" and a.to_json()["dtype"] == t.to_json()["dtype"] == "float32"
    monkeypatch.setattr(LM, "autocast", lambda self, method: contextlib.nullcontext())
    a0, t0 = attribute(lm, PROMPT, steps=5), trace(lm, PROMPT, SUBJECT, samples=3, kinds=("mlp",))
    assert np.array_equal(a.scores, a0.scores) and a.target_prob == a0.target_prob
    assert np.array_equal(t.grids["mlp"], t0.grids["mlp"])


def test_bfloat16_ig_and_trace_agree(gpt):
    from knlab.methods.attribute import attribute
    from knlab.methods.trace import trace
    a32, a16 = (attribute(_as(gpt, d), PROMPT) for d in ("float32", "bfloat16"))
    assert a16.dtype == "bfloat16" and a16.to_json()["dtype"] == "bfloat16"
    assert {(l, i) for l, i, _ in a32.top(10)} == {(l, i) for l, i, _ in a16.top(10)}
    assert np.corrcoef(a32.scores.ravel(), a16.scores.ravel())[0, 1] >= 0.99
    t32, t16 = (trace(_as(gpt, d), PROMPT, SUBJECT) for d in ("float32", "bfloat16"))
    assert t16.to_json()["dtype"] == "bfloat16"
    for k in t32.grids:
        assert np.corrcoef(t32.grids[k].ravel(), t16.grids[k].ravel())[0, 1] >= 0.99


@pytest.mark.slow  # bfloat16 is emulated on a CPU without bfloat16 units: ~20 s idle, minutes under load
def test_bfloat16_rome_takes_the_same_way(gpt):
    from knlab.core.specs import applied
    from knlab.core.tokens import single_token
    from knlab.methods.predict import encode, next_token_probs
    from knlab.methods.rome import params_for, rome
    from knlab.studies.edit_report import rome_layer
    params = params_for(gpt, mom2=False)  # the covariance is float32 either way; v* is what autocast changes
    layer = rome_layer(gpt)
    res = {d: rome(_as(gpt, d), PROMPT, SUBJECT, "Paris", layer, params) for d in ("float32", "bfloat16")}
    assert res["bfloat16"].dtype == "bfloat16" and res["float32"].dtype == "float32"
    v32, v16 = res["float32"].v_star, res["bfloat16"].v_star
    # The v* criterion (cosine >= 0.99) does NOT hold: 0.87 measured here (layer 0, mom2 off), the
    # 20 Adam steps drifting apart from the first bfloat16-rounded gradient on. So ROME is not in
    # AUTO_BF16 (it stays float32 under auto); bfloat16 must still give an edit that takes, near float32's.
    assert "rome" not in D.AUTO_BF16
    assert float(v32 @ v16 / (np.linalg.norm(v32) * np.linalg.norm(v16))) >= 0.5
    new, old = single_token(gpt, "Paris"), single_token(gpt, "Ottawa")
    for r in res.values():
        with applied(gpt, [r.edit]):
            p = next_token_probs(gpt, encode(gpt, PROMPT))
        assert p[new] > p[old]
