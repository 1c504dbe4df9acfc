"""The edit-layer sweep against the same edits made one by one with nothing shared, in the same run.

``knlab.studies.sweep.sweep`` makes the clean run and the trace once for all layers and brings every
layer's key covariance into the cache in one pass; the baseline does what a user would do without it:
``knlab edit rome --layer L`` for each layer (``edit_report.edit``: its own clean run, probes and
generations each time) and one trace. Both give the same rewrite scores (tests/studies/test_sweep.py);
this prints both times and their ratio. ``--fresh-covariance``: each side starts from an empty covariance
cache, so the sweep's one pass is timed against one pass per layer; otherwise both read the cache (run once
before to fill it).

    python benchmarks/bench_sweep.py [--model world-gpt] [--layers 0,2,4] [--fresh-covariance]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sections  # noqa: E402
from knlab.core.models import load_model  # noqa: E402
from knlab.methods.rome import layer_stats  # noqa: E402
from knlab.methods.trace import trace  # noqa: E402
from knlab.studies.edit_report import edit  # noqa: E402
from knlab.studies.sweep import check_layers, rewrite_score, sweep  # noqa: E402

FACTS = {"smollm2-135m": ("The capital of France is", "France", "Rome"),
         "world-gpt": ("The capital of Canada is", "Canada", "Rome")}


def fresh_cache(on: bool) -> None:
    """An empty covariance cache for what follows (``--fresh-covariance``)."""
    if on:
        os.environ["KNLAB_CACHE"] = tempfile.mkdtemp(prefix="knlab-bench-sweep-")
        layer_stats._MEMORY.clear()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="world-gpt")
    ap.add_argument("--layers", default=None, help="the grid (default: every layer)")
    ap.add_argument("--fresh-covariance", action="store_true")
    sections.add_argument(ap)
    args = ap.parse_args()
    lm = load_model(args.model, device="cpu")
    prompt, subject, target = FACTS.get(args.model, FACTS["world-gpt"])
    layers = check_layers(lm, args.layers)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {lm.spec}: {prompt!r} -> {target}, "
          f"layers {layers}")
    fresh_cache(args.fresh_covariance)
    t0 = time.perf_counter()
    one_by_one = []
    trace(lm, prompt, subject)  # the trace the user would look at beside the edits
    for layer in layers:
        rep = edit(lm, "rome", prompt, subject, target, layer=layer)
        one_by_one.append(rewrite_score(rep.before["p_new"], rep.after["p_new"]))
    slow = time.perf_counter() - t0
    fresh_cache(args.fresh_covariance)
    t0 = time.perf_counter()
    res = sweep(lm, prompt, subject, target, layers)
    fast = time.perf_counter() - t0
    diff = float(np.abs(np.array(one_by_one) - res.rewrite).max())
    print(f"  one by one {slow:.1f} s | sweep {fast:.1f} s | {slow / fast:.2f}x; max |rewrite difference| "
          f"{diff:.1e}; sweep's parts: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items()))
    if args.markdown:
        sections.write_section(
            args.markdown, sections.section_name(__file__, None if args.model == "world-gpt" else args.model),
            f"{prompt!r} -> {target}, layers {layers}"
            + (", each side from an empty covariance cache" if args.fresh_covariance else ", covariances cached")
            + ":\n\n" + sections.table(["model", "one by one (edit + trace)", "sweep", "ratio", "max |difference|"],
                                       [[lm.spec, f"{slow:.1f} s", f"{fast:.1f} s", f"{slow / fast:.2f}x",
                                         f"{diff:.1e}"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
