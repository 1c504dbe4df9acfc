import pytest

from knlab.core.errors import InputError
from knlab.serve.hosting import Sessions, allowed_models, check_model


def test_hosted_mode_allows_only_the_listed_models(monkeypatch):
    monkeypatch.delenv("KNLAB_HOSTED", raising=False)
    assert check_model("some-org/some-model") == "some-org/some-model"  # a local lab may load anything
    monkeypatch.setenv("KNLAB_HOSTED", "1")
    assert allowed_models() == ("smollm2-135m", "world-gpt", "world-bert")  # the shipped models installed
    assert check_model(" world-bert ") == "world-bert"
    for spec in ("gpt2", "../../etc/passwd", "/tmp", "assets/models/world-gpt"):
        with pytest.raises(InputError, match="offers only"):
            check_model(spec)
    monkeypatch.setenv("KNLAB_MODELS", "world-gpt")
    with pytest.raises(InputError):
        check_model("world-bert")


def test_sessions_cap_and_idle_expiry_drop_edits():
    now = [0.0]
    s = Sessions(cap=2, ttl=10, clock=lambda: now[0])
    assert s.touch("a") is False and s.touch("a") is True
    s.set_edits("a", [{"model": "world-gpt", "spec": None, "label": "x"}])
    s.touch("b")
    with pytest.raises(InputError, match="full"):
        s.touch("c")
    now[0] = 5
    s.touch("a")  # a stays active
    now[0] = 12  # b idle for 12 s > 10: expired, which makes room for c
    s.touch("c")
    assert len(s) == 2 and s.edits("a")
    now[0] = 30  # a idle for 25 s: gone, with its edits
    assert s.touch("a") is False and s.edits("a") == []


def test_hosted_app_offers_a_fixed_model_list(monkeypatch):
    monkeypatch.setenv("KNLAB_HOSTED", "1")
    from knlab.app.ui import build_app
    from knlab.serve.worker import ModelWorker
    app = build_app(ModelWorker())
    dropdowns = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "model"]
    assert len(dropdowns) == 1
    assert dropdowns[0].allow_custom_value is False
    assert [c[1] for c in dropdowns[0].choices] == ["smollm2-135m", "world-gpt", "world-bert"]  # (label, name)
