"""Selecting knowledge neurons across paraphrase prompts (Dai et al.; the paper's tau search and R^2_1).

Coarse neurons of one prompt: score > t x that prompt's maximum (t = 0.2). A neuron is kept when it is
coarse in more than tau x n prompts; tau starts at 0.7 and moves by 0.05 for up to 20 rounds, down while
fewer than 2 neurons are kept, up while more than 5. R^2_1 measures how much the prompts' maps agree:
flatten and L2-normalise each map, stack them as Y; R^2_1 = (sigma_1^2 - 1) / (n - 1), 1 when all maps
are parallel, 0 when they are orthogonal. When raising tau would leave fewer than 2 neurons (many
neurons shared by every prompt, as in a few-prompt fact), the search stops with the set it has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from knlab.core.errors import InputError

ADAPTIVE_THRESHOLD = 0.2
TAU_START = 0.7
TAU_STEP = 0.05
MAX_ROUNDS = 20
MIN_NEURONS, MAX_NEURONS = 2, 5


@dataclass
class Selection:
    neurons: list[tuple[int, int]]
    tau: float
    r2_1: float
    n_prompts: int

    def to_json(self) -> dict:
        return {"neurons": [[l, i] for l, i in self.neurons], "tau": round(self.tau, 4),
                "r2_1": self.r2_1, "n_prompts": self.n_prompts}


def coarse_neurons(scores: np.ndarray, t: float = ADAPTIVE_THRESHOLD) -> set[tuple[int, int]]:
    top = scores.max()
    if top <= 0:
        return set()
    return {(int(l), int(i)) for l, i in zip(*np.nonzero(scores > t * top))}


def shared_neurons(coarse: list[set[tuple[int, int]]], tau: float) -> list[tuple[int, int]]:
    counts: dict[tuple[int, int], int] = {}
    for c in coarse:
        for n in c:
            counts[n] = counts.get(n, 0) + 1
    need = tau * len(coarse)
    return sorted(n for n, k in counts.items() if k > need)


def r2_1(maps: list[np.ndarray]) -> float:
    n = len(maps)
    if n < 2:
        return 1.0
    Y = np.stack([m.ravel() / (np.linalg.norm(m) or 1.0) for m in maps])
    s1 = np.linalg.svd(Y, compute_uv=False)[0]
    return float((s1 ** 2 - 1) / (n - 1))


def select_coarse(coarse: list[set[tuple[int, int]]], tau: float = TAU_START) -> tuple[list[tuple[int, int]], float]:
    """The tau search over the prompts' coarse sets alone: (the kept neurons, the final tau). Which neurons
    are kept depends on the coarse sets only, so a claim that stored each prompt's coarse set selects
    again without its maps."""
    if not coarse:
        raise InputError("no coarse neuron sets to select neurons from")
    kept = shared_neurons(coarse, tau)
    for _ in range(MAX_ROUNDS):
        if len(kept) < MIN_NEURONS and tau > 0:
            tau = round(max(0.0, tau - TAU_STEP), 10)
        elif len(kept) > MAX_NEURONS and tau < 1:
            higher = round(min(1.0, tau + TAU_STEP), 10)
            fewer = shared_neurons(coarse, higher)
            if len(fewer) < MIN_NEURONS:  # no tau gives 2-5: keep the last set rather than none at all
                break
            tau, kept = higher, fewer
            continue
        else:
            break
        kept = shared_neurons(coarse, tau)
    return kept, tau


def select(maps: list[np.ndarray], t: float = ADAPTIVE_THRESHOLD, tau: float = TAU_START) -> Selection:
    if not maps:
        raise InputError("no attribution maps to select neurons from")
    kept, tau = select_coarse([coarse_neurons(m, t) for m in maps], tau)
    return Selection(kept, tau, r2_1(maps), len(maps))
