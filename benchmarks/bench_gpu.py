"""The real model's instruments on a GPU in float16: one prepared script for a session that has one.

    python benchmarks/bench_gpu.py                 # CUDA, float16 (the app's GPU setting)
    python benchmarks/bench_gpu.py --device cpu    # the same on the CPU in float32, to check the script

Times the causal trace of "The capital of France is" (3 kinds, 10 samples, default window), integrated
gradients over all layers, and a ROME edit (covariance once, then the edit), each after a warm-up, and
checks the answers against the float32 CPU run's: p(Paris), the trace's two sites, the edit taking.
Prints one JSON object (``--markdown docs/benchmarks.md`` also rewrites this run's section of the record,
benchmarks/sections.py). Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sections  # noqa: E402

from knlab.methods.attribute import attribute  # noqa: E402
from knlab.studies.edit_report import edit  # noqa: E402
from knlab.core.models import load_model  # noqa: E402
from knlab.methods.patching import patch_estimate  # noqa: E402
from knlab.methods.predict import predict  # noqa: E402
from knlab.methods.trace import trace  # noqa: E402

PROMPT, SUBJECT = "The capital of France is", "France"


def timed(fn, sync) -> tuple[object, float]:
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="smollm2-135m")
    sections.add_argument(ap)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 2
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    out: dict = {"device": args.device, "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None}
    lm, out["load_s"] = timed(lambda: load_model(args.model, device=args.device), sync)
    out["dtype"] = str(next(lm.model.parameters()).dtype)
    pred = predict(lm, PROMPT, 3)
    out["top"] = [(t, round(float(p), 4)) for t, p in zip(pred.top_tokens, pred.top_probs)]
    trace(lm, PROMPT, SUBJECT, samples=2)  # warm-up
    res, out["trace_s"] = timed(lambda: trace(lm, PROMPT, SUBJECT), sync)
    h, s1, L = res.grids["hidden"], res.subject_range[1] - 1, lm.n_layers
    out["trace"] = {"clean": res.clean, "corrupted": res.corrupted, "window": res.window,
                    "early_site": float(h[s1, : L // 3].mean()), "late_site": float(h[res.position, 2 * L // 3:].mean())}
    _, out["preview_s"] = timed(lambda: patch_estimate(lm, PROMPT, SUBJECT), sync)
    attribute(lm, PROMPT, steps=2)  # warm-up
    ig, out["ig_s"] = timed(lambda: attribute(lm, PROMPT), sync)
    out["ig_top"] = [(l, i, round(v, 5)) for l, i, v in ig.top(5)]
    first, out["rome_first_s"] = timed(lambda: edit(lm, "rome", PROMPT, SUBJECT, "Rome", generate_tokens=0), sync)
    rep, out["rome_s"] = timed(lambda: edit(lm, "rome", PROMPT, SUBJECT, "Rome", generate_tokens=0), sync)
    out["rome"] = {"criteria": rep.criteria, "timing": rep.timing, "first_timing": first.timing}
    print(json.dumps(out, indent=1, default=str))
    if args.markdown:
        sections.write_section(
            args.markdown, sections.section_name(__file__, None if args.device == "cuda" else args.device),
            f"{args.model} on {out['gpu'] or args.device} ({out['dtype']}), each after a warm-up:\n\n"
            + sections.table(["what", "seconds"], [[k.removesuffix("_s"), f"{v:.2f}"] for k, v in out.items()
                                                 if k.endswith("_s")])
            + f"\n\nTop prediction {out['top'][0]}; trace clean {out['trace']['clean']:.3f}, corrupted "
            f"{out['trace']['corrupted']:.3f}; ROME criteria {out['rome']['criteria']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
