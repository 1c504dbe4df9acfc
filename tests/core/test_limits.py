import pytest

from knlab.core.errors import InputError
from knlab.core.limits import HOSTED, Limits, check_count, describe, limits


def test_defaults_env_and_hosted(monkeypatch):
    for k in ("KNLAB_HOSTED", "KNLAB_MAX_IG_STEPS"):
        monkeypatch.delenv(k, raising=False)
    assert limits() == Limits()
    monkeypatch.setenv("KNLAB_HOSTED", "1")
    assert limits() == HOSTED
    monkeypatch.setenv("KNLAB_MAX_IG_STEPS", "7")
    assert limits().ig_steps == 7 and "IG steps up to 7" in describe()
    monkeypatch.setenv("KNLAB_MAX_IG_STEPS", "many")
    with pytest.raises(InputError, match="KNLAB_MAX_IG_STEPS"):
        limits()


@pytest.mark.parametrize("bad", [0, -1, 201, 2.5, float("nan"), float("inf"), None, "3", True])
def test_check_count_rejects(bad, monkeypatch):
    monkeypatch.delenv("KNLAB_HOSTED", raising=False)
    monkeypatch.delenv("KNLAB_MAX_IG_STEPS", raising=False)
    with pytest.raises(InputError, match="KNLAB_MAX_IG_STEPS"):
        check_count(bad, "ig_steps", "steps")


def test_limits_are_enforced_where_the_work_is(gpt, monkeypatch):
    from knlab.methods.attribute import attribute
    from knlab.methods.predict import predict
    from knlab.methods.trace import trace
    monkeypatch.setenv("KNLAB_MAX_PROMPT_TOKENS", "4")
    with pytest.raises(InputError, match="tokens long; the limit is 4"):
        predict(gpt, "The capital of Canada is")
    monkeypatch.delenv("KNLAB_MAX_PROMPT_TOKENS")
    monkeypatch.setenv("KNLAB_MAX_IG_STEPS", "5")
    with pytest.raises(InputError, match="steps"):
        attribute(gpt, "The capital of Canada is", steps=6)
    assert attribute(gpt, "The capital of Canada is", steps=5).steps == 5
    monkeypatch.setenv("KNLAB_MAX_TRACE_SAMPLES", "2")
    with pytest.raises(InputError, match="samples"):
        trace(gpt, "The capital of Canada is", "Canada", samples=3)
