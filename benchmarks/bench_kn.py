"""Knowledge-neuron attribution: knlab's all-layers-at-once IG vs the straightforward implementation
(tests/reference/ig.py: one layer at a time, one batch of scaled copies per layer, as the reference code
does), same run.

    python benchmarks/bench_kn.py [--steps 20] [--repeats 15] [--models world-gpt,world-bert]

The two implementations alternate ``--repeats`` times; the speed-up is the median of the per-repeat
ratios, so that a passing load on the machine (this one's speed drifts by a third) hits both alike.
The matrix-product FLOPs of each are counted too: for a masked model they bound what any exact
implementation can gain. ``--markdown docs/benchmarks.md`` also rewrites this run's section of the record
(benchmarks/sections.py).
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
from knlab.methods.attribute import attribute  # noqa: E402
from knlab.core.models import load_model  # noqa: E402
from knlab.core.tokens import single_token  # noqa: E402
from reference.ig import ig_straightforward  # noqa: E402


def straightforward(lm, prompt, target, steps):
    return ig_straightforward(lm, prompt, single_token(lm, target), steps)


PROMPTS = {
    # the real model's third prompt differs: "Ulm" is two of its tokens, and the reference scores one
    "smollm2-135m": [("The capital of France is", "Paris"), ("The Space Needle is in downtown", "Seattle"),
                     ("The Eiffel Tower is located in", "Paris")],
    "world-gpt": [("The capital of Canada is", "Ottawa"), ("The Space Needle is in downtown", "Seattle"),
                  ("Albert Einstein was born in", "Ulm")],
    "world-bert": [("The capital of Canada is [MASK] .", "Ottawa"), ("The Space Needle is in downtown [MASK] .", "Seattle"),
                   ("Albert Einstein was born in [MASK] .", "Ulm")],
}


def random_model(spec: str):
    """A randomly initialised 12 x 512 model of the family, with the shipped world tokenizer."""
    import transformers as T
    from knlab.core.models import from_model
    torch.manual_seed(0)
    if spec.startswith("random gpt2"):
        tok = load_model("world-gpt", device="cpu").tokenizer
        model = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=len(tok), n_embd=512, n_layer=12, n_head=8, n_positions=128))
    else:
        tok = load_model("world-bert", device="cpu").tokenizer
        model = T.BertForMaskedLM(T.BertConfig(vocab_size=len(tok), hidden_size=512, num_hidden_layers=12,
                                               num_attention_heads=8, intermediate_size=2048,
                                               max_position_embeddings=128))
    return from_model(model.eval(), tok, spec=spec)


def flops(fn) -> float:
    """Floating-point operations of the matrix products one call runs (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--models", default="world-gpt,world-bert", help="comma-separated; e.g. smollm2-135m")
    ap.add_argument("--model", default=None, help="one model instead of --models (e.g. smollm2-135m)")
    ap.add_argument("--big", action="store_true",
                    help="also random GPT-2 and BERT of 12 layers x 512 (world vocabulary), where arithmetic dominates")
    sections.add_argument(ap)
    args = ap.parse_args()
    rows: list[list] = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, "
          f"{args.repeats} alternating repeats; speed-up = median over repeats of straightforward / knlab")
    summary = {}
    models = [(spec, spec) for spec in (args.model or args.models).split(",")]
    if args.big:
        models += [("random gpt2 (12 x 512)", "world-gpt"), ("random bert (12 x 512)", "world-bert")]
    for spec, prompts in models:
        lm = load_model(spec, device="cpu") if spec == prompts else random_model(spec)
        for prompt, target in PROMPTS[prompts]:
            fast_fn = lambda: attribute(lm, prompt, target, args.steps).scores  # noqa: E731
            ref_fn = lambda: straightforward(lm, prompt, target, args.steps)  # noqa: E731
            fast_fn(), ref_fn()  # warm-up
            fast_t, ref_t = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fast = fast_fn()
                fast_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ref = ref_fn()
                ref_t.append(time.perf_counter() - t0)
            ratio = float(np.median(np.array(ref_t) / np.array(fast_t)))
            summary.setdefault(spec, []).append(ratio)
            rel = np.abs(fast - ref).max() / max(np.abs(ref).max(), 1e-12)
            gf, gr = flops(fast_fn) / 1e9, flops(ref_fn) / 1e9
            print(f"{spec:22s} {prompt[:40]!r:42s} knlab {np.median(fast_t) * 1e3:6.1f} ms | straightforward "
                  f"{np.median(ref_t) * 1e3:6.1f} ms | speed-up {ratio:4.1f}x | GFLOP {gf:5.2f} vs {gr:5.2f} "
                  f"({gr / gf:3.1f}x fewer) | max relative difference {rel:.1e}")
            rows.append([spec, f"{prompt} -> {target}", f"{np.median(fast_t) * 1e3:.0f} ms",
                         f"{np.median(ref_t) * 1e3:.0f} ms", f"{ratio:.1f}x", f"{gf:.2f} / {gr:.2f}", f"{rel:.1e}"])
    means = [f"{spec} {float(np.exp(np.mean(np.log(ratios)))):.1f}x" for spec, ratios in summary.items()]
    print("speed-up over the prompts, geometric mean: " + ", ".join(means))
    if args.markdown:
        sections.write_section(
            args.markdown, sections.section_name(__file__, args.model or (None if args.models == ap.get_default("models")
                                                                        else args.models)),
            f"{args.steps} steps, {args.repeats} alternating repeats, speed-up = median of the per-repeat ratios; "
            "GFLOP: matrix products counted by `torch.utils.flop_counter`:\n\n"
            + sections.table(["model", "prompt", "knlab", "straightforward", "speed-up",
                            "GFLOP knlab / straightforward", "max relative difference"], rows)
            + "\n\nGeometric means over the prompts: " + ", ".join(means) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
