"""What the app opens with: the real model when it is installed, every shipped model labelled."""

from dataclasses import replace

from knlab.core.packaged import PACKAGED


def test_the_real_model_is_the_default_and_labelled(monkeypatch):
    from knlab.serve.hosting import allowed_models
    from knlab.app.ui import model_choices, start_model
    monkeypatch.delenv("KNLAB_DEFAULT_MODEL", raising=False)
    monkeypatch.delenv("KNLAB_MODELS", raising=False)
    assert start_model() == "smollm2-135m"
    assert allowed_models() == ("smollm2-135m", "world-gpt", "world-bert")
    labels = dict((v, k) for k, v in model_choices(allowed_models()))
    assert "real pretrained LM" in labels["smollm2-135m"] and "organism" in labels["world-gpt"]
    assert "[MASK]" in labels["world-bert"]
    monkeypatch.setenv("KNLAB_DEFAULT_MODEL", "world-bert")
    assert start_model() == "world-bert"


def test_without_the_package_the_organisms_serve(monkeypatch):
    from knlab.serve.hosting import allowed_models
    from knlab.app.ui import start_model
    monkeypatch.delenv("KNLAB_DEFAULT_MODEL", raising=False)
    monkeypatch.delenv("KNLAB_MODELS", raising=False)
    monkeypatch.setenv("KNLAB_CACHE", "/nonexistent-knlab-cache")
    monkeypatch.setitem(PACKAGED, "smollm2-135m", replace(PACKAGED["smollm2-135m"], module="knlab_absent"))
    assert start_model() == "world-gpt" and allowed_models() == ("world-gpt", "world-bert")
