"""What crossing ZeroGPU's process boundary costs, and whether the lanes belong in the GPU process (the worker's
docstring cites it). On a CPU, through spaces' own ZeroGPU wrapper (tests/serve/zerogpu.py: its fork, pickling
and reuse of an idle GPU process; only the scheduler and the CUDA moves replaced):

    python benchmarks/experiments/zerogpu_process.py [--model world-gpt] [--repeats 10]

- a prediction in this process against the same request through the wrapper (its GPU process already started);
- two predictions sent at once through the wrapper (ZeroGPU gives each its own process and copy) against the two
  one after the other: were the lanes' locks held in the app's process around the GPU call, the two could only
  ever run one after the other.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "serve")]

from zerogpu import StandIn  # noqa: E402

from knlab.methods.predict import predict  # noqa: E402
from knlab.serve import dispatch  # noqa: E402
from knlab.serve.worker import INTERACTIVE, ModelWorker  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="world-gpt")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    worker = ModelWorker(device="cpu", second_copy=False, name="bench")
    worker.preload([args.model])
    request = dispatch.ModelRequest("bench", args.model, (), predict, ("The capital of France is", 5), {},
                                    INTERACTIVE, "predict")
    stand_in = StandIn()
    across = stand_in.GPU(dispatch.answer, duration=dispatch.gpu_seconds)
    across(request)  # starts the GPU process, as the first request on a Space does
    here_s, there_s = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        dispatch.answer(request)
        here_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        across(request)
        there_s.append(time.perf_counter() - t0)
    serial, together = [], []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            t0 = time.perf_counter()
            across(request), across(request)
            serial.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            list(pool.map(lambda _: across(request), range(2)))
            together.append(time.perf_counter() - t0)
    stand_in.close()
    med = statistics.median
    print(f"{args.model} prediction: in this process {med(here_s) * 1e3:.0f} ms, through ZeroGPU's wrapper "
          f"{med(there_s) * 1e3:.0f} ms (median of {args.repeats}; {med(there_s) / med(here_s):.2f}x)")
    print(f"two predictions: one after the other {med(serial) * 1e3:.0f} ms, sent at once {med(together) * 1e3:.0f} ms "
          f"({len(stand_in.processes)} GPU processes started)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
