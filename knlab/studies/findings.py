"""A claim's findings: each one a rate (or a mean) over items, its 95% interval, and one of three outcomes
against the paper's own figure or statement.

Why three outcomes and not a verdict per claim: a claim such as Table 1 makes several statements
(reliable, not symmetric, not synonym-aware) that a model can meet one by one, and a rate on a handful of
items decides nothing. So every statement is a ``Finding`` with its own rule, written once, here: the paper
puts the quantity on one side of a boundary (``side`` "below" or "above" ``boundary``); the model *agrees*
when the whole 95% interval lies on that side, *departs* when the whole interval lies on the other, and is
*undecided at this size* when the interval straddles the boundary (more items would decide).

Intervals: a share of items is a binomial proportion, so Wilson's score interval (it stays inside [0, 1]
and behaves at 0 of n and n of n, where the normal approximation collapses to a point); a mean of a
per-item quantity (a relative change, |KN|) gets the normal interval of the mean, mean +- 1.96 s / sqrt(n)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

AGREES, DEPARTS, UNDECIDED = "agrees with the paper", "departs from the paper", "undecided at this size"
OUTCOMES = (AGREES, DEPARTS, UNDECIDED)
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of k successes in n trials; (0, 1) when n is 0 (nothing measured)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at k = 0 (k = n) the interval's lower (upper) end is exactly 0 (1); rounding must not move it off
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high): the normal interval of the mean; a single value has an unbounded interval."""
    n = len(values)
    if n == 0:
        return float("nan"), -math.inf, math.inf
    m = sum(values) / n
    if n == 1:
        return m, -math.inf, math.inf
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return m, m - half, m + half


def outcome(low: float, high: float, side: str, boundary: float) -> str:
    """The rule: the paper's side of ``boundary`` holds the whole interval -> agrees; the other side -> departs."""
    if side not in ("below", "above"):
        raise ValueError(f"side is 'below' or 'above', not {side!r}")
    if side == "below":
        return AGREES if high < boundary else DEPARTS if low > boundary else UNDECIDED
    return AGREES if low > boundary else DEPARTS if high < boundary else UNDECIDED


@dataclass
class Finding:
    """One statement of the paper measured on one model."""

    name: str  # "symmetry on P36"
    value: float  # the rate (0-1) or the mean
    low: float
    high: float
    n: int  # items measured
    outcome: str
    rule: str  # "the paper: below 50% (GPT-2 XL 25.17%)": the side, the boundary and the paper's figure
    unit: str = "share"  # "share" (a rate of items, shown in %) or what the mean is in
    k: int | None = None  # successes, for a share

    def text(self) -> str:
        """'0% of 38 (0-9%)': the figure, its N and its interval, as the app, the Lesson and the record print it."""
        if self.unit == "share":
            return (f"{100 * self.value:.0f}% of {self.n} ({100 * self.low:.0f}-{100 * self.high:.0f}%)"
                    if self.n else "no item measured")
        lo = "-inf" if math.isinf(self.low) else f"{self.low:.3g}"
        hi = "inf" if math.isinf(self.high) else f"{self.high:.3g}"
        return f"{self.value:.3g} {self.unit} over {self.n} ({lo} to {hi})" if self.n else "no item measured"

    def to_json(self) -> dict:
        out = asdict(self)
        for key in ("value", "low", "high"):  # JSON has no infinities
            v = out[key]
            out[key] = None if v is None or math.isinf(v) or math.isnan(v) else round(v, 6)
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Finding":
        d = dict(d)
        d["low"] = -math.inf if d["low"] is None else d["low"]
        d["high"] = math.inf if d["high"] is None else d["high"]
        d["value"] = math.nan if d["value"] is None else d["value"]
        return cls(**d)


def share_bar(k: int, n: int, scale: float = 100.0) -> list[float]:
    """A share's 95% interval as a figure's error bar, ``[low, high]`` in the figure's unit (percent by
    default; 1 for a figure in plain shares): every claim's figure draws its bars with this."""
    low, high = wilson(k, n)
    return [round(scale * low, 6), round(scale * high, 6)]


def share(name: str, k: int, n: int, side: str, boundary: float, paper: str) -> Finding:
    """A finding on a share of items: ``k`` of ``n``; the paper puts the share ``side`` ``boundary`` (0-1)."""
    low, high = wilson(k, n)
    rule = f"the paper: {side} {100 * boundary:.0f}% ({paper})"
    return Finding(name, k / n if n else math.nan, low, high, n,
                   outcome(low, high, side, boundary) if n else UNDECIDED, rule, "share", k)


def mean(name: str, values: Sequence[float], side: str, boundary: float, paper: str, unit: str) -> Finding:
    """A finding on the mean of a per-item quantity; the paper puts the mean ``side`` ``boundary``."""
    m, low, high = mean_interval(list(values))
    rule = f"the paper: {side} {boundary:g} {unit} ({paper})"
    return Finding(name, m, low, high, len(values), outcome(low, high, side, boundary) if values else UNDECIDED,
                   rule, unit)
