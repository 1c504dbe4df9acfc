"""Knowledge-neuron attribution: knlab's all-layers-at-once IG vs the straightforward implementation
(one layer at a time, one batch of scaled copies per layer, as the reference code does), same run.

    python benchmarks/bench_kn.py [--steps 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knlab.attribute import attribute  # noqa: E402
from knlab.models import load_model  # noqa: E402


def straightforward(lm, prompt, target, steps):
    return np.stack([attribute(lm, prompt, target, steps, layers=[l]).scores[l] for l in range(lm.n_layers)])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps")
    for spec, prompt, target in (("world-gpt", "The capital of Canada is", "Ottawa"),
                                 ("world-bert", "The capital of Canada is [MASK] .", "Ottawa")):
        lm = load_model(spec, device="cpu")
        attribute(lm, prompt, target, args.steps)  # warm-up
        t0 = time.perf_counter()
        fast = attribute(lm, prompt, target, args.steps).scores
        tf = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = straightforward(lm, prompt, target, args.steps)
        ts = time.perf_counter() - t0
        rel = np.abs(fast - ref).max() / max(np.abs(ref).max(), 1e-12)
        print(f"{spec:10s} knlab {tf:6.3f} s | straightforward {ts:6.3f} s | speed-up {ts / tf:5.1f}x | "
              f"max relative difference {rel:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
