"""Isolation under load: 8 concurrent HTTP clients for 40 s against the real app, each editing its own fact
and checking that its predictions show its own edits and nobody else's; and nobody waiting behind somebody
else's edit (benchmarks/bench_load.py)."""

import pytest

from helpers import benchmark

pytestmark = pytest.mark.slow  # a system test: ./run_tests.sh --fast leaves it out


def test_concurrent_sessions_see_only_their_own_edits(app_url):
    bench_load = benchmark("bench_load")
    res = bench_load.run_load(app_url, clients=8, seconds=40)  # 25 s: on a clean clone no client got past its first edit
    print("\n" + bench_load.report(res))
    assert res["errors"] == [], res["errors"][:5]
    assert res["violations"] == [], res["violations"][:5]
    assert not res["stuck"], res["stuck"]
    req = res["requests"]
    assert req.get("/predict", 0) > 0 and req.get("/edit", 0) > 0, req
    assert req.get("/undo", 0) + req.get("/reset", 0) > 0, req
    assert all(n >= 1 for n in res["edits"].values()), res["edits"]
    models = res["status"]["models"]
    assert "world-gpt" in models and res["unchanged"], models
    assert all(m["unchanged"] and m["checksum"] == m["base"] for m in models.values()), models


def test_a_short_request_during_a_long_edit_finishes_first(app_url):
    """Nobody waits behind somebody else's edit: predicts made while another session's ROME edit of the real
    model runs all finish before it, on another model and on the same one (its interactive lane). An
    ordering, not seconds: the machine may be busy."""
    bench_load = benchmark("bench_load")
    # each a ROME edit no other request of the suite makes: the app's result cache must not answer it
    for short, target in (("world-gpt", "Helsinki"), ("smollm2-135m", "Warsaw")):
        w = bench_load.wait_behind(app_url, long_model="smollm2-135m", short_model=short, repeats=2, warm=False,
                                   target=target)
        print("\n" + bench_load.wait_report(w))
        assert w["n_during"] == 2 and w["first"], w
