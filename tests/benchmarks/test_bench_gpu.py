"""benchmarks/bench_gpu.py's CPU path, so that it cannot rot: the float32 run agrees with the stored float32 CPU
reference, and each kind of disagreement makes it exit non-zero, naming what disagreed."""

import copy
import json

import pytest
from helpers import benchmark

bench_gpu = benchmark("bench_gpu")


@pytest.fixture(scope="module")
def answers(gpt):
    got, seconds = bench_gpu.run_instruments(gpt, lambda: None)
    assert set(seconds) == {"predict", "ig", "trace", "rome"}
    return got


@pytest.fixture(scope="module")
def reference():
    return json.loads(bench_gpu.reference_path("world-gpt").read_text())


def test_the_cpu_float32_run_agrees_with_the_reference(answers, reference):
    figures, bad = bench_gpu.compare(answers, reference)
    assert bad == [], bad
    assert figures["ig_top10_overlap"] == 10 and figures["ig_corr"] > 0.9999
    assert min(figures["trace_corr"].values()) > 0.9999 and answers["device"] == "cpu"


@pytest.mark.parametrize("tamper,needle", [
    (lambda a: a.update(top="Berlin"), "top token"),
    (lambda a: a["ig_scores"].reverse(), "IG"),
    (lambda a: a["trace"]["mlp"].reverse(), "trace mlp"),
    (lambda a: a["rome_criteria"].update(reliability=0.0), "ROME criteria"),
    (lambda a: a.update(rome_p_new=a["rome_p_new"] - 0.2), "p(new)"),
    (lambda a: a["top_probs"].__setitem__(0, float("nan")), "finite"),
])
def test_each_disagreement_fails_the_run(answers, reference, monkeypatch, capsys, tamper, needle):
    bad_answers = copy.deepcopy(answers)
    tamper(bad_answers)
    monkeypatch.setattr(bench_gpu, "load_model", lambda *a, **k: type("LM", (), {"weights_dtype": "float32"})())
    monkeypatch.setattr(bench_gpu, "run_instruments", lambda lm, sync: (bad_answers, dict.fromkeys("ab", 0.0)))
    assert bench_gpu.main(["--device", "cpu", "--model", "world-gpt", "--dtypes", "float32"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert any(needle in d for d in out["runs"]["float32"]["disagreements"])
    monkeypatch.setattr(bench_gpu, "run_instruments", lambda lm, sync: (answers, dict.fromkeys("ab", 0.0)))
    assert bench_gpu.main(["--device", "cpu", "--model", "world-gpt", "--dtypes", "float32"]) == 0
