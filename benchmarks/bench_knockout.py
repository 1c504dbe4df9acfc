"""Attention knockout: knlab's batched knockout against the straightforward loop, in the same run.

knlab (``knlab.methods.knockout.knockout``) runs every (layer window, edge set) configuration as a row of
one batch, each row with its own attention mask; the reference (``tests/reference/knockout.py``) makes
one forward pass per layer and edge set with an explicit mask, as Geva et al.'s code does. Both give the
same probabilities (tests/methods/test_knockout.py); this prints both times, their ratio, and the largest
difference between them.

    python benchmarks/bench_knockout.py [--model smollm2-135m] [--repeats 3] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import sections  # noqa: E402
from knlab.core.models import load_model  # noqa: E402
from knlab.methods.knockout import EDGE_SETS, knockout  # noqa: E402
from reference.knockout import knockout_straightforward  # noqa: E402

PROMPT, SUBJECT = "The capital of France is", "France"


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def bench(lm, repeats):
    prompt = PROMPT + (" [MASK] ." if lm.masked else "")
    first = knockout(lm, prompt, SUBJECT)  # warm-up, and the answer
    res, fast = timed(lambda: knockout(lm, prompt, SUBJECT, first.answer), repeats)
    (clean, ref), slow = timed(lambda: knockout_straightforward(lm, prompt, SUBJECT, first.answer_id, res.window),
                               repeats)
    diff = max(float(np.abs(res.probs[e] - ref[e]).max()) for e in EDGE_SETS)
    print(f"{lm.spec}: {prompt!r}, answer {res.answer!r}, {lm.n_layers} layers x {len(EDGE_SETS)} edge sets, "
          f"window {res.window}")
    print(f"  reference loop {slow:.3f} s | knlab {fast:.3f} s | {slow / fast:.1f}x (median of {repeats}); "
          f"max |difference| {diff:.1e}")
    return slow, fast, diff, res.window


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="world-gpt", help="a second model to benchmark besides world-gpt")
    ap.add_argument("--repeats", type=int, default=3)
    sections.add_argument(ap)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for spec in dict.fromkeys(["world-gpt", args.model]):
        slow, fast, diff, window = bench(load_model(spec, device="cpu"), args.repeats)
        rows.append([spec, str(window), f"{slow:.3f} s", f"{fast:.3f} s", f"{slow / fast:.1f}x", f"{diff:.1e}"])
    if args.markdown:
        sections.write_section(
            args.markdown, sections.section_name(__file__, None if args.model == "world-gpt" else args.model),
            f"{PROMPT!r}, every layer x 3 edge sets, median of {args.repeats}:\n\n"
            + sections.table(["model", "window", "reference loop", "knlab (batched)", "ratio", "max |difference|"],
                             rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
