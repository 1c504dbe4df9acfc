"""The Lesson's step 7 as a fresh machine's first click: ``step(7).run(lm)`` on the loaded model (what the
app's button runs) with knlab's cache empty but for the converted model, then a second click (the context
templates cached, as after step 4). Prints each click's CPU and wall seconds and the step's own split.

Run it with one thread (``--threads 1``, the default): one thread's CPU seconds bound the step's wall time on
two free cores from above and are the figure least inflated by other processes on a shared machine.

    python benchmarks/bench_lesson_step7.py [--model smollm2-135m] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sections  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=1)
    sections.add_argument(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from knlab.core.packaged import cache_root
    models = cache_root() / "models"  # the converted model is kept: a fresh machine converts it at install
    fresh = Path(tempfile.mkdtemp(prefix="knlab-fresh-"))
    if models.exists():
        (fresh / "models").symlink_to(models)
    os.environ["KNLAB_CACHE"] = str(fresh)
    from knlab.core.models import load_model
    from knlab.studies.lesson import step
    lm = load_model(args.model)
    print(f"{args.model}, {args.threads} thread(s), torch {torch.__version__}, cache {fresh}")
    lines = []
    for click in ("first click (empty cache)", "second click"):
        wall, cpu = time.perf_counter(), time.process_time()
        res = step(7).run(lm)
        lines.append(f"{click}: {time.process_time() - cpu:.1f} s CPU, {time.perf_counter() - wall:.1f} s wall, load "
                     f"{os.getloadavg()[0]:.1f}; " + ", ".join(f"{k} {v:.1f} s" for k, v in res.result.seconds.items()))
        print(lines[-1])
    print(res.summary)
    if args.markdown:
        sections.write_section(args.markdown, sections.section_name(__file__), "\n\n".join(
            [f"{args.model}, {args.threads} thread(s):"] + [f"- {line}" for line in lines]), command=sections.command_line())


if __name__ == "__main__":
    main()
