"""What every claim's rerun returns on one model, and the small helpers the claims share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from knlab.core.models import LM

Progress = Callable[[float, str], None] | None


@dataclass
class ModelRun:
    """One claim rerun live on one model."""

    model: str
    rows: list[dict]  # one per figure: {"item", "live", "published"}
    finding: str  # one sentence: whether the paper's finding holds on this model, with the numbers
    holds: bool | None  # None: the rerun cannot say
    figure: dict  # plain data for the redrawn figure: {"type": "bar" | "line", "title", "x", "series", ...}
    size: int = 0  # facts / prompts per item this run used
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)  # JSON-able extras: neurons, generations, probes

    def to_json(self) -> dict:
        return {"model": self.model, "holds": self.holds, "finding": self.finding, "size": self.size,
                "seconds": round(self.seconds, 2), "rows": self.rows, "figure": self.figure, "detail": self.detail}


def timed(run: Callable[..., ModelRun]) -> Callable[..., ModelRun]:
    """Fill in the run's wall time and size."""
    def wrapped(lm: LM, n: int, progress: Progress = None) -> ModelRun:
        t0 = time.perf_counter()
        out = run(lm, n, progress)
        out.seconds, out.size = time.perf_counter() - t0, n
        return out
    wrapped.__name__ = run.__name__
    wrapped.__doc__ = run.__doc__
    return wrapped


def tick(progress: Progress, done: float, what: str) -> None:
    if progress:
        progress(min(1.0, max(0.0, done)), what)


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
