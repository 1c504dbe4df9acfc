"""Every instrument on a GPU in float32 and in half precision, checked against the stored float32 CPU run.

    python benchmarks/bench_gpu.py                                  # CUDA: float32, float16, bfloat16
    python benchmarks/bench_gpu.py --device cpu --dtypes float32    # the same script on a CPU (the suite runs it)
    python benchmarks/bench_gpu.py --device cpu --dtypes float32 --write-reference   # store the reference

For each compute dtype (``knlab.core.dtype``: float32 weights, the methods' passes under autocast), on one
loaded model: the prediction of "The capital of France is", integrated gradients over every layer, the causal
trace (3 kinds, the default samples and window) and a ROME edit (France -> Rome), each timed after a warm-up,
and compared with the float32 CPU reference in benchmarks/records/gpu-reference-<model>.json:

- the top token the same, every probability and score finite;
- IG: at least 8 of the reference's top-10 neurons, map correlation >= 0.99;
- trace: each grid's correlation >= 0.99;
- ROME: the same criteria (reliability, generality, locality, ...), p(new) after the edit within 0.05.

These are the bounds that decided half precision on the CPU (bench_dtype.py, docs/benchmarks.md "Compute
dtype"). Exits 1 when a dtype disagrees (and names what), 2 without CUDA; prints one JSON object
(``--markdown docs/benchmarks.md`` also rewrites its section of the record, benchmarks/sections.py).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sections  # noqa: E402

from knlab.core.models import load_model  # noqa: E402
from knlab.methods.attribute import attribute  # noqa: E402
from knlab.methods.predict import predict  # noqa: E402
from knlab.methods.trace import KINDS, trace  # noqa: E402
from knlab.studies.edit_report import edit  # noqa: E402

PROMPT, SUBJECT, NEW = "The capital of France is", "France", "Rome"
RECORDS = Path(__file__).resolve().parent / "records"
IG_TOP, IG_OVERLAP_MIN, CORR_MIN, P_NEW_TOL = 10, 8, 0.99, 0.05


def reference_path(model: str) -> Path:
    return RECORDS / f"gpu-reference-{model}.json"


def pearson(a, b) -> float:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float(np.array_equal(a, b))


def run_instruments(lm, sync) -> tuple[dict, dict]:
    """(what each instrument answered, its seconds after a warm-up) on ``lm``."""
    def timed(fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - t0

    seconds: dict = {}
    pred, seconds["predict"] = timed(lambda: predict(lm, PROMPT, 3))
    attribute(lm, PROMPT, steps=2)  # warm-up
    ig, seconds["ig"] = timed(lambda: attribute(lm, PROMPT))
    trace(lm, PROMPT, SUBJECT, samples=2)  # warm-up
    tr, seconds["trace"] = timed(lambda: trace(lm, PROMPT, SUBJECT))
    edit(lm, "rome", PROMPT, SUBJECT, NEW, generate_tokens=0)  # warm-up: the covariance, the templates
    rome, seconds["rome"] = timed(lambda: edit(lm, "rome", PROMPT, SUBJECT, NEW, generate_tokens=0))
    answers = {"top": pred.top_tokens[0], "top_probs": [float(p) for p in pred.top_probs],
               "ig_scores": np.asarray(ig.scores, float).round(8).tolist(),
               "trace": {k: np.asarray(tr.grids[k], float).round(8).tolist() for k in KINDS if k in tr.grids},
               "trace_clean": tr.clean, "trace_corrupted": tr.corrupted,
               "rome_criteria": rep_criteria(rome), "rome_p_new": float(rome.after["p_new"]),
               "dtypes": {"ig": ig.dtype, "trace": tr.dtype, "rome": rome.dtype}, "device": str(lm.device)}
    return answers, seconds


def rep_criteria(rep) -> dict:
    return {k: (None if v is None else round(float(v), 4)) for k, v in rep.criteria.items()}


def top_k(scores, k: int = IG_TOP) -> set[tuple[int, int]]:
    s = np.asarray(scores, float)
    flat = np.argsort(s.ravel())[::-1][:k]
    return {tuple(int(x) for x in np.unravel_index(i, s.shape)) for i in flat}


def compare(got: dict, ref: dict) -> tuple[dict, list[str]]:
    """The figures of agreement and the list of disagreements (empty: it agrees)."""
    bad: list[str] = []
    finite = all(math.isfinite(x) for x in [*got["top_probs"], got["trace_clean"], got["trace_corrupted"],
                                             got["rome_p_new"]]) \
        and bool(np.isfinite(got["ig_scores"]).all()) and all(np.isfinite(g).all() for g in got["trace"].values())
    overlap = len(top_k(got["ig_scores"]) & top_k(ref["ig_scores"]))
    figures = {"top": got["top"], "finite": finite, "ig_top10_overlap": overlap,
               "ig_corr": pearson(got["ig_scores"], ref["ig_scores"]),
               "trace_corr": {k: pearson(got["trace"][k], ref["trace"][k]) for k in ref["trace"]},
               "rome_criteria": got["rome_criteria"], "rome_p_new": got["rome_p_new"]}
    if got["top"] != ref["top"]:
        bad.append(f"top token {got['top']!r}, the reference {ref['top']!r}")
    if not finite:
        bad.append("a probability or score is not finite")
    if overlap < IG_OVERLAP_MIN:
        bad.append(f"IG top-{IG_TOP} shares {overlap} neurons with the reference (< {IG_OVERLAP_MIN})")
    if not figures["ig_corr"] >= CORR_MIN:
        bad.append(f"IG map correlation {figures['ig_corr']:.4f} < {CORR_MIN}")
    for k, c in figures["trace_corr"].items():
        if not c >= CORR_MIN:
            bad.append(f"trace {k} grid correlation {c:.4f} < {CORR_MIN}")
    if got["rome_criteria"] != ref["rome_criteria"]:
        bad.append(f"ROME criteria {got['rome_criteria']}, the reference {ref['rome_criteria']}")
    if not abs(got["rome_p_new"] - ref["rome_p_new"]) <= P_NEW_TOL:
        bad.append(f"ROME p(new) {got['rome_p_new']:.4f}, the reference {ref['rome_p_new']:.4f}")
    return figures, bad


def cpu_flags() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return " ".join(sorted(f for f in flags if f.startswith(("avx", "amx"))))
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtypes", default="float32,float16,bfloat16")
    ap.add_argument("--reference", type=Path, default=None, help="default: benchmarks/records/gpu-reference-MODEL.json")
    ap.add_argument("--write-reference", action="store_true", help="store this float32 CPU run as the reference")
    sections.add_argument(ap)
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 2
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    ref_path = args.reference or reference_path(args.model)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    out: dict = {"device": args.device, "model": args.model, "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
                 "cpu_flags": cpu_flags(), "runs": {}}
    if args.write_reference:
        if args.device != "cpu" or dtypes != ["float32"]:
            print(json.dumps({"error": "the reference is the float32 CPU run: --device cpu --dtypes float32"}))
            return 2
        answers, seconds = run_instruments(load_model(args.model, device="cpu", compute="float32"), sync)
        ref_path.write_text(json.dumps({"model": args.model, "torch": torch.__version__, **answers}) + "\n")
        print(json.dumps({"wrote": str(ref_path), "seconds": seconds}))
        return 0
    ref = json.loads(ref_path.read_text())
    failed = False
    for dtype in dtypes:
        t0 = time.perf_counter()
        lm = load_model(args.model, device=args.device, compute=dtype)
        load_s = time.perf_counter() - t0
        answers, seconds = run_instruments(lm, sync)
        figures, bad = compare(answers, ref)
        out["runs"][dtype] = {"weights": lm.weights_dtype, "ran_in": answers["dtypes"], "load_s": load_s,
                              "seconds": seconds, **figures, "agrees": not bad, "disagreements": bad}
        failed |= bool(bad)
        del lm
    print(json.dumps(out, indent=1, default=str))
    if args.markdown:
        rows = [[d, r["ran_in"]["ig"], *(f"{r['seconds'][k]:.2f}" for k in ("predict", "ig", "trace", "rome")),
                 str(r["ig_top10_overlap"]), f"{r['ig_corr']:.4f}", f"{min(r['trace_corr'].values()):.4f}",
                 "yes" if r["agrees"] else "NO: " + "; ".join(r["disagreements"])] for d, r in out["runs"].items()]
        sections.write_section(
            args.markdown, sections.section_name(__file__, None if args.device.startswith("cuda") else args.device),
            f"{args.model} on {out['gpu'] or args.device} (CPU flags: {out['cpu_flags']}), each after a warm-up, "
            f"against the float32 CPU reference ({ref_path.name}):\n\n"
            + sections.table(["compute", "ran in", "predict s", "IG s", "trace s", "ROME s", "IG top-10 shared",
                              "IG corr", "trace corr (min)", "agrees"], rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
