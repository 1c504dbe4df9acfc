"""What every claim's rerun returns on one model, the items it measures one by one, and the small helpers
the claims share.

A claim measures items (a fact edited, a prompt attributed, a sentence traced) and sums them up in
findings (``studies.findings``). Each item goes through ``Items.measure``: the record
(``studies.record``) hands a claim the items it already measured, so a run that was stopped goes on where
it stopped, and sees every new item's result the moment it exists, to checkpoint it; the suite reruns a
few recorded items and compares them one by one. An item's result is small, plain JSON (booleans,
rounded probabilities, neuron lists); what is heavy and only needed to get there (an IG map) goes through
``Items.array``, kept on disk beside the checkpoint when there is one and never in the record."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from knlab.core.models import LM
from knlab.studies.findings import AGREES, DEPARTS, Finding

Progress = Callable[[float, str], None] | None


class Items:
    """The items of one claim on one model: those measured before (``done``), and every new one passed to
    ``on_item(key, result)`` as soon as it is measured."""

    def __init__(self, done: dict[str, dict] | None = None, on_item: Callable[[str, dict], None] | None = None,
                 arrays: Path | None = None) -> None:
        self.done = dict(done or {})
        self.on_item = on_item
        self.arrays = arrays
        self.results: dict[str, dict] = {}  # this run's items, in the order it asked for them
        self.left_out: dict[str, str] = {}  # item -> why it was not measured
        self._memo: dict[str, np.ndarray] = {}

    def measure(self, key: str, fn: Callable[[], dict]) -> dict:
        if key in self.done:
            value = self.done[key]
        else:
            value = fn()
            self.done[key] = value
            if self.on_item:
                self.on_item(key, value)
        self.results[key] = value
        return value

    def array(self, key: str, fn: Callable[[], np.ndarray]) -> np.ndarray:
        """A heavy intermediate of an item, computed once (on disk under ``arrays`` when given)."""
        if key in self._memo:
            return self._memo[key]
        path = self.arrays / (_file_name(key) + ".npy") if self.arrays else None
        if path is not None and path.exists():
            value = np.load(path)
        else:
            value = np.asarray(fn())
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, value)
        self._memo[key] = value
        return value

    def leave_out(self, item: str, reason: str) -> None:
        self.left_out[item] = reason


def _file_name(key: str) -> str:
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:100]
    return f"{readable}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


@dataclass
class ModelRun:
    """One claim run on one model."""

    model: str
    rows: list[dict]  # one per figure: {"item", "live", "published"}
    findings: list[Finding]  # each statement of the paper, measured: rate, N, interval, outcome
    figure: dict  # plain data for the redrawn figure: {"type": "bar" | "line", "title", "x", "series", ...}
    size: int = 0  # facts / prompts per item this run used
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)  # JSON-able extras: neurons, generations, probes
    items: dict[str, dict] = field(default_factory=dict)  # item -> its result
    left_out: dict[str, str] = field(default_factory=dict)  # item -> why it was not measured

    def summary(self) -> str:
        """One line per finding: its name, figure with N and interval, and outcome."""
        return "; ".join(f"{f.name}: {f.text()}, {f.outcome}" for f in self.findings)

    def to_json(self) -> dict:
        return {"model": self.model, "findings": [f.to_json() for f in self.findings], "size": self.size,
                "seconds": round(self.seconds, 2), "rows": self.rows, "figure": self.figure, "detail": self.detail,
                "items": self.items, "left_out": self.left_out}


def timed(run: Callable[..., ModelRun]) -> Callable[..., ModelRun]:
    """Fill in the run's wall time, size, items and left-out items; give it an ``Items`` when the caller
    has none (a live rerun measures everything anew)."""
    @functools.wraps(run)  # its module and qualified name: it pickles by reference, as a request to a
    def wrapped(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:  # GPU process must
        items = items if items is not None else Items()
        t0 = time.perf_counter()
        out = run(lm, n, progress, items)
        out.seconds, out.size = time.perf_counter() - t0, n
        out.items, out.left_out = dict(items.results), dict(items.left_out)
        return out
    return wrapped


def tick(progress: Progress, done: float, what: str) -> None:
    if progress:
        progress(min(1.0, max(0.0, done)), what)


def verdict_counts(findings: list[Finding]) -> str:
    """'2 agree, 1 departs, 0 undecided'."""
    a = sum(f.outcome == AGREES for f in findings)
    d = sum(f.outcome == DEPARTS for f in findings)
    return f"{a} agree, {d} depart, {len(findings) - a - d} undecided"


def pct(x: float | None) -> float | None:
    return None if x is None else round(100 * float(x), 1)


def shares_text(values: list[float]) -> str:
    return " / ".join(f"{100 * v:.0f}%" for v in values)


def kn_layers(neurons: list[tuple[int, int]], n_layers: int) -> np.ndarray:
    """How many of ``neurons`` sit in each layer."""
    counts = np.zeros(n_layers)
    for layer, _ in neurons:
        counts[layer] += 1
    return counts
