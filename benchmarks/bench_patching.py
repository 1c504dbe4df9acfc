"""Attribution patching vs the exact causal trace, in the same process, on the same corrupted runs.

Times ``patch_estimate`` (one clean forward, one corrupted forward, one backward) against ``trace``
(every cell restored and run) for "The capital of France is" (subject France; masked models get
" [MASK] ." appended), and prints seconds, the speed ratio and the estimate's agreement with the exact
grids: Pearson's r per kind over all cells (``knlab.methods.patching.agreement``), r over the live cells only
(those that can change p: no-op cells are exactly p_corrupted in both and inflate r), and the largest
|estimate - exact|.

    python benchmarks/bench_patching.py [--model world-gpt] [--samples 10] [--window 10] [--repeats 3]

``--markdown docs/benchmarks.md`` also rewrites this run's section of the record (benchmarks/sections.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sections  # noqa: E402
from knlab.core.models import load_model  # noqa: E402
from knlab.methods.patching import _pearson, agreement, patch_estimate  # noqa: E402
from knlab.methods.corruption import parse_noise  # noqa: E402
from knlab.methods.trace import KINDS, cannot_change, grid_cells, trace  # noqa: E402

PROMPT, SUBJECT = "The capital of France is", "France"


def live_cells(res, n_layers, masked, window):
    """[tokens, layers] per kind: True where some restored cell can change p(answer)."""
    s0, _ = res.subject_range
    out = {}
    for k in KINDS:
        m = np.zeros(res.grids[k].shape, dtype=bool)
        for t in range(m.shape[0]):
            for l in range(n_layers):
                m[t, l] = not all(cannot_change(c, s0, res.position, n_layers, masked)
                                  for c in grid_cells(k, t, l, window, n_layers))
        out[k] = m
    return out


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def bench(lm, samples, window, repeats):
    prompt = PROMPT + (" [MASK] ." if lm.masked else "")
    noise = parse_noise(lm, None)  # measured once here, outside the timings
    first = trace(lm, prompt, SUBJECT, None, samples, window, noise, 0)  # warm-up, and the answer
    patch_estimate(lm, prompt, SUBJECT, first.answer, samples, window, noise, 0)
    exact, slow = timed(lambda: trace(lm, prompt, SUBJECT, first.answer, samples, window, noise, 0), repeats)
    est, fast = timed(lambda: patch_estimate(lm, prompt, SUBJECT, first.answer, samples, window, noise, 0), repeats)
    r = agreement(est, exact)
    live = live_cells(exact, lm.n_layers, lm.masked, window)
    r_live = {k: _pearson(est.grids[k][live[k]], exact.grids[k][live[k]]) for k in KINDS}
    err = {k: float(np.abs(est.grids[k] - exact.grids[k]).max()) for k in KINDS}
    fmt = lambda v: "  n/a" if v is None else f"{v:5.3f}"  # noqa: E731
    T, L = len(exact.tokens), lm.n_layers
    print(f"{lm.spec}: {prompt!r}, answer {exact.answer!r}, tokens {T}, layers {L}; "
          f"clean {exact.clean:.4f}, corrupted {exact.corrupted:.4f} (estimate's: {est.clean:.4f}, {est.corrupted:.4f})")
    print(f"  trace {slow:.3f} s | attribution patching {fast:.3f} s | speed-up {slow / fast:.1f}x "
          f"(median of {repeats})")
    print("  Pearson r, all cells:  " + "  ".join(f"{k} {fmt(r[k])}" for k in KINDS) + f"  overall {fmt(r['overall'])}")
    print("  Pearson r, live cells: " + "  ".join(f"{k} {fmt(r_live[k])}" for k in KINDS))
    print("  max |estimate - exact|: " + "  ".join(f"{k} {err[k]:.3f}" for k in KINDS))
    return dict(trace_s=slow, patch_s=fast, speedup=slow / fast, r=r, r_live=r_live, max_err=err)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="world-gpt", help="a second model to benchmark besides world-gpt")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    sections.add_argument(ap)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, samples {args.samples}, "
          f"window {args.window}")
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    for spec in dict.fromkeys(["world-gpt", args.model]):
        r = bench(load_model(spec, device=args.device), args.samples, args.window, args.repeats)
        rows.append([spec, f"{r['trace_s']:.2f} s", f"{r['patch_s']:.2f} s", f"{r['speedup']:.1f}x",
                     f"{fmt(r['r']['overall'])} (" + ", ".join(f"{k} {fmt(r['r'][k])}" for k in KINDS) + ")",
                     ", ".join(f"{k} {fmt(r['r_live'][k])}" for k in KINDS)])
    if args.markdown:
        sections.write_section(
            args.markdown, sections.section_name(__file__, None if args.model == "world-gpt" else args.model),
            f"{PROMPT!r}, {args.samples} samples, window {args.window}, median of {args.repeats}:\n\n"
            + sections.table(["model", "exact trace", "attribution patching", "speed-up",
                            "Pearson r with the exact grid", "r over live cells"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
