"""Training the organisms is reproducible."""

import json

import pytest

from knlab.core.models import SHIPPED


@pytest.mark.slow  # trains: ./run_tests.sh --fast leaves it out
@pytest.mark.parametrize("kind", ["gpt", "bert"])
def test_training_is_deterministic_from_the_seed(kind, tmp_path):
    from safetensors.torch import load_file

    from knlab.organisms.train import train
    a = train(kind, tmp_path / "a", steps=3, log=lambda s: None)
    b = train(kind, tmp_path / "b", steps=3, log=lambda s: None)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    fresh = json.loads((a / "tokenizer.json").read_text())
    shipped = json.loads((SHIPPED[f"world-{kind}"] / "tokenizer.json").read_text())
    assert fresh["model"] == shipped["model"] and fresh["post_processor"] == shipped["post_processor"]
