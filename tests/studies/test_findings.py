"""studies.findings: Wilson's interval, the normal interval of a mean, and the three outcomes."""

import math

import pytest

from knlab.studies import findings
from knlab.studies.findings import (AGREES, DEPARTS, OUTCOMES, UNDECIDED, Finding, mean_interval, outcome,
                                   share_bar, wilson)


def test_wilson_known_values_and_exact_ends():
    low, high = wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0  # exact, not 1e-17 off
    assert wilson(0, 10)[1] == pytest.approx(3.8415 / 13.8415, abs=1e-4)  # z^2 / (n + z^2)
    assert wilson(10, 10)[0] == pytest.approx(10 / 13.8415, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    for k in range(21):  # always inside [0, 1], around k / n, and narrower with more items
        lo, hi = wilson(k, 20)
        assert 0 <= lo <= k / 20 <= hi <= 1
        lo2, hi2 = wilson(5 * k, 100)
        assert hi2 - lo2 < hi - lo


def test_mean_interval():
    m, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(m - lo) and hi - m == pytest.approx(1.96 * 1 / math.sqrt(3), abs=1e-3)
    assert mean_interval([4.0])[1:] == (-math.inf, math.inf)
    assert math.isnan(mean_interval([])[0])


@pytest.mark.parametrize("low, high, side, boundary, want", [
    (0.1, 0.3, "below", 0.5, AGREES), (0.6, 0.9, "below", 0.5, DEPARTS), (0.4, 0.6, "below", 0.5, UNDECIDED),
    (0.6, 0.9, "above", 0.5, AGREES), (0.1, 0.3, "above", 0.5, DEPARTS), (0.4, 0.6, "above", 0.5, UNDECIDED),
    (-3.0, -1.0, "below", 0, AGREES), (-math.inf, math.inf, "above", 0, UNDECIDED),
    (0.0, 0.5, "below", 0.5, UNDECIDED),  # an end on the boundary is not wholly on either side
])
def test_outcome_rules(low, high, side, boundary, want):
    assert outcome(low, high, side, boundary) == want


def test_outcome_rejects_an_unknown_side():
    with pytest.raises(ValueError, match="side"):
        outcome(0, 1, "beside", 0.5)


def test_share_and_mean_findings_round_trip():
    f = findings.share("symmetry", 0, 38, "below", 0.5, "GPT-2 XL 25.17%")
    assert (f.value, f.low, f.k, f.n, f.outcome) == (0.0, 0.0, 0, 38, AGREES)
    assert f.rule == "the paper: below 50% (GPT-2 XL 25.17%)" and f.text() == "0% of 38 (0-9%)"
    assert findings.share("x", 1, 2, "above", 0.5, "p").outcome == UNDECIDED
    assert findings.share("x", 0, 0, "above", 0.5, "p").outcome == UNDECIDED and math.isnan(
        findings.share("x", 0, 0, "above", 0.5, "p").value)
    g = findings.mean("change", [-3.0, -2.0, -4.0], "below", 0, "BERT -124%", "%")
    assert g.outcome == AGREES and g.n == 3 and g.low < g.value < g.high < 0
    one = findings.mean("change", [5.0], "above", 0, "p", "%")
    assert one.outcome == UNDECIDED and one.to_json()["low"] is None
    for x in (f, g, one):
        assert Finding.from_json(x.to_json()).to_json() == x.to_json() and x.outcome in OUTCOMES


def test_share_bar_is_the_wilson_interval_in_the_figures_unit():
    lo, hi = wilson(3, 10)
    assert share_bar(3, 10) == [round(100 * lo, 6), round(100 * hi, 6)]
    assert share_bar(3, 10, 1) == [round(lo, 6), round(hi, 6)]
    assert share_bar(0, 10)[0] == 0.0 and share_bar(10, 10, 1)[1] == 1.0
