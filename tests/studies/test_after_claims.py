"""The follow-up claims' statistics: Hase et al.'s regression and its bootstrap, the early-site rule, and a
knockout claim's items resumed without measuring again."""

import numpy as np
import pytest

from knlab.studies.claims import after
from knlab.studies.claims.common import Items


def _items(rewrite_of, n=12, layers=(0, 2, 4), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        trace = rng.random(6)
        out.append({"layers": list(layers), "trace_mlp": list(trace),
                    "rewrite": [rewrite_of(l, trace[l], rng) for l in layers]})
    return out


def test_regression_credits_the_layer_when_the_layer_decides():
    res = _items(lambda l, t, rng: {0: 0.9, 2: 0.5, 4: 0.1}[l] + 0.01 * rng.standard_normal())
    reg = after.regression(res)
    assert reg["layer"] > 0.99 and reg["added"] < 0.01 and reg["trace"] < 0.3
    low, high = after.bootstrap_added(res, n=200)
    assert 0 <= low <= reg["added"] + 1e-9 and high < 0.05


def test_regression_credits_the_trace_when_the_trace_decides():
    res = _items(lambda l, t, rng: t + 0.01 * rng.standard_normal())
    reg = after.regression(res)
    assert reg["trace"] > 0.99 and reg["added"] > 0.5 and reg["both"] >= reg["layer"]


def test_regression_fits_a_slope_per_layer_as_hase_et_al():
    """Their "both" model is factor(layer) * effect: the trace may predict success at one layer only."""
    res = _items(lambda l, t, rng: (t if l == 0 else 0.5) + 0.01 * rng.standard_normal())
    reg = after.regression(res)
    common = after.r_squared(np.array([r for x in res for r in x["rewrite"]]),
                             np.array([[1.0 * (l == m) for m in (0, 2, 4)] + [x["trace_mlp"][l]]
                                       for x in res for l in (0, 2, 4)]))
    assert reg["both"] > 0.99 > common and reg["added"] > 0.5


def test_early_site_and_restored_share():
    assert after.early_site([0.0, 0.3, 0.1, 0.0, 0.0, 0.0], 6)
    assert not after.early_site([0.0, 0.01, 0.0, 0.0, 0.0, 0.0], 6)  # below two points: noise
    assert not after.early_site([0.0, 0.1, 0.0, 0.4, 0.0, 0.0], 6)  # the peak is late
    item = {"noise": {"effect": [0.4, 0.1], "clean": 0.9, "corrupted": 0.1}}
    assert after.restored_share(item, "noise") == pytest.approx(0.5)


def test_knockout_claim_resumes_from_its_items(gpt, monkeypatch):
    first = after.knockout_claim(gpt, 3)
    assert first.items and first.findings and len(first.figure["series"]) == 3
    monkeypatch.setattr(after, "knockout", lambda *a, **k: (_ for _ in ()).throw(AssertionError("measured again")))
    again = after.knockout_claim(gpt, 3, None, Items(done=first.items))
    assert [f.to_json() for f in again.findings] == [f.to_json() for f in first.findings]


def test_trace_corruption_measures_n_facts_past_the_ones_it_cannot_swap(gpt, monkeypatch):
    """A known fact with no subject of its token length to swap in is left out, and the next known fact taken:
    the finding's N is the size asked for (the real model's record lost one of 30 facts this way)."""
    L = gpt.n_layers
    measured = []

    def item(lm, prompt, subject):
        if not measured:  # the first fact: no replacement of its length
            measured.append(None)
            raise after.InputError(f"no subject with {subject}'s token length")
        measured.append(subject)
        effect = np.linspace(1, 0, L).tolist()
        return {k: {"effect": effect, "clean": 1.0, "corrupted": 0.0} for k in ("noise", "replace")}

    monkeypatch.setattr(after, "_corruption_item", item)
    items = Items()
    run = after.trace_corruption(gpt, 3, None, items)
    assert len(measured) == 4 and all(f.n == 3 for f in run.findings) and len(items.left_out) == 1
