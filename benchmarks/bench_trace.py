"""Causal tracing: knlab's batched trace vs the straightforward implementation, in the same process.

The straightforward implementation (tests/reference/trace.py) is the reference code's loop: one forward
pass (the noise samples as one batch) per (token, layer) cell and kind. knlab runs every cell and sample
of a prompt in a few large batches with identical noise. Prints seconds, the speed ratio and the largest
grid difference.

    python benchmarks/bench_trace.py [--samples 10] [--window 10] [--repeats 1]
    python benchmarks/bench_trace.py --model smollm2-135m    # the real model: "The capital of France is"

``--markdown docs/benchmarks.md`` also rewrites this run's section of the record (benchmarks/sections.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the straightforward implementations: tests/reference/

import sections  # noqa: E402
from knlab.core.models import from_model, load_model  # noqa: E402
from knlab.methods.corruption import parse_noise  # noqa: E402
from knlab.methods.trace import KINDS, trace  # noqa: E402
from reference.trace import trace_straightforward  # noqa: E402


HEADER = ["model", "prompt", "knlab", "straightforward", "speed-up", "max grid difference"]


def bench(lm, prompt, subject, samples, window, repeats, rows=None):
    res = trace(lm, prompt, subject, None, samples, window, None, 0)  # warm-up, and the answer/noise used
    noise = parse_noise(lm, None)
    t0 = time.perf_counter()
    for _ in range(repeats):
        res = trace(lm, prompt, subject, res.answer, samples, window, noise, 0)
    fast = (time.perf_counter() - t0) / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        ref = trace_straightforward(lm, prompt, subject, res.answer_id, samples, window, noise, 0)
    slow = (time.perf_counter() - t0) / repeats
    diff = max(float(np.abs(res.grids[k] - ref[k]).max()) for k in KINDS)
    T, L = len(res.tokens), lm.n_layers
    print(f"{lm.spec:28s} {prompt[:32]!r:34s} tokens {T:2d} layers {L:2d} | knlab {fast:7.2f} s | straightforward {slow:7.2f} s | "
          f"speed-up {slow / fast:5.1f}x | max |grid difference| {diff:.2e}")
    if rows is not None:
        rows.append([f"{lm.spec} ({L} layers)", prompt, f"{fast:.2f} s", f"{slow:.2f} s", f"{slow / fast:.1f}x",
                     f"{diff:.1e}"])
    return slow / fast, diff, fast, slow


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--model", default=None,
                    help="instead of the default set: this model on 'The capital of France is' (window: its default)")
    sections.add_argument(ap)
    args = ap.parse_args()
    rows: list[list] = []
    notes: list[str] = []
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, samples {args.samples}, window {args.window}")
    if args.model:
        from knlab.methods.trace import default_window
        lm = load_model(args.model, device="cpu")
        window = args.window if "--window" in sys.argv else default_window(lm.n_layers)
        print(f"{args.model}: window {window}")
        bench(lm, "The capital of France is", "France", args.samples, window, args.repeats, rows)
        if args.markdown:
            sections.write_section(args.markdown, sections.section_name(__file__, args.model),
                                 f"{args.samples} samples, window {window}, mean of {args.repeats} run(s):\n\n"
                                 + sections.table(HEADER, rows))
        return 0
    gpt = load_model("world-gpt", device="cpu")
    import transformers as T
    big = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=len(gpt.tokenizer), n_embd=512, n_layer=12, n_head=8,
                                         n_positions=128)).eval()
    big = from_model(big, gpt.tokenizer, spec="random gpt2 (12 x 512)")
    # the subject late, in the middle and first: the speed-up depends on where it sits
    prompts = [("The capital of Canada is", "Canada"), ("The Space Needle is in downtown", "Space Needle"),
               ("Albert Einstein was born in", "Albert Einstein")]
    for lm in (gpt, big):
        fast = slow = 0.0
        for prompt, subject in prompts:
            ratio, _diff, f, s = bench(lm, prompt, subject, args.samples, args.window, args.repeats, rows)
            fast, slow = fast + f, slow + s
        notes.append(f"{lm.spec} all {len(prompts)} prompts: knlab {fast:.2f} s, straightforward {slow:.2f} s, "
                     f"speed-up {slow / fast:.1f}x")
        print(notes[-1])
    if args.markdown:
        sections.write_section(args.markdown, sections.section_name(__file__),
                             f"{args.samples} samples, window {args.window}, mean of {args.repeats} run(s):\n\n"
                             + sections.table(HEADER, rows) + "\n\n" + "; ".join(notes) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
