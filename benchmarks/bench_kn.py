"""Knowledge-neuron attribution: knlab's all-layers-at-once IG vs the straightforward implementation
(one layer at a time, one batch of scaled copies per layer, as the reference code does), same run.

    python benchmarks/bench_kn.py [--steps 20] [--repeats 7]

Each timing is the median of ``--repeats`` runs, the two implementations alternating, so that a
passing load on the machine hits both alike.
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
from knlab.nethook import Trace  # noqa: E402
from knlab.predict import encode  # noqa: E402


def ig_straightforward(lm, prompt, target_id, steps):
    """The reference loop: for each layer, one forward/backward of ``steps`` scaled copies of that
    layer's activation at the prediction position, the whole network recomputed every time."""
    enc = encode(lm, prompt)
    ids, pos, T = enc.input_ids, enc.position, enc.input_ids.shape[1]
    scores = []
    for l in range(lm.n_layers):
        name = lm.arch.module("mlp_out", l)
        with torch.no_grad(), Trace(lm.model, name, retain_input=True, retain_output=False) as t:
            lm.model(input_ids=ids)
        act = t.input[0, pos].float()
        scaled = (torch.linspace(0, 1, steps)[:, None] * act[None]).requires_grad_(True)

        def put(x, _):
            x = x.clone()
            x[:, pos] = scaled.to(x.dtype)
            return x

        with torch.enable_grad(), Trace(lm.model, name, retain_output=False, edit_input=put):
            probs = torch.softmax(lm.model(input_ids=ids.expand(steps, T)).logits[:, pos].float(), -1)[:, target_id]
            (grad,) = torch.autograd.grad(probs.sum(), [scaled])
        scores.append((act * grad.sum(0) / steps).numpy())
    return np.stack(scores)


def straightforward(lm, prompt, target, steps):
    return ig_straightforward(lm, prompt, lm.tokenizer.convert_tokens_to_ids(target), steps)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps")
    for spec, prompt, target in (("world-gpt", "The capital of Canada is", "Ottawa"),
                                 ("world-bert", "The capital of Canada is [MASK] .", "Ottawa")):
        lm = load_model(spec, device="cpu")
        attribute(lm, prompt, target, args.steps)  # warm-up
        straightforward(lm, prompt, target, args.steps)
        fast_t, ref_t = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fast = attribute(lm, prompt, target, args.steps).scores
            fast_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ref = straightforward(lm, prompt, target, args.steps)
            ref_t.append(time.perf_counter() - t0)
        tf, ts = float(np.median(fast_t)), float(np.median(ref_t))
        rel = np.abs(fast - ref).max() / max(np.abs(ref).max(), 1e-12)
        print(f"{spec:10s} knlab {tf:6.3f} s | straightforward {ts:6.3f} s | speed-up {ts / tf:5.1f}x | "
              f"max relative difference {rel:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
