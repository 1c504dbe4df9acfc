"""Cold start and memory: ``python app.py`` started as a user starts it, timed to its first answer on the
real model (its conversion already cached), then the resident memory with all three shipped models loaded.

    python benchmarks/bench_start.py [--runs 3] [--markdown docs/benchmarks.md]

The baseline printed beside it is the straightforward way to the same first answer: transformers reading
the GGUF file itself (de-quantising every tensor) on each start. ``--markdown`` also rewrites this run's
section of the record (benchmarks/sections.py).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sections  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_to_first_answer() -> tuple[float, float, float, float]:
    """(seconds until the page answers, seconds until smollm2-135m's first prediction, RSS with the real
    model, RSS with all three models) for one fresh ``python app.py``."""
    from gradio_client import Client
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        page = time.perf_counter() - t0
        c = Client(url, verbose=False)
        top = c.predict("smollm2-135m", "The capital of France is", 3, api_name="/predict")[1]["top"][0]["token"]
        first = time.perf_counter() - t0
        assert top == " Paris", top
        rss_real = rss_mib(proc.pid)
        c.predict("world-gpt", "The capital of Canada is", 3, api_name="/predict")
        c.predict("world-bert", "The capital of Canada is [MASK] .", 3, api_name="/predict")
        return page, first, rss_real, rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)


def gguf_first_answer() -> float:
    """The straightforward start: read the GGUF with transformers (no cache), then predict."""
    code = ("import time; t0 = time.perf_counter(); import torch; "
            "from transformers import AutoModelForCausalLM, AutoTokenizer; "
            "from knlab.core.packaged import PACKAGED, gguf_file; p, _ = gguf_file(PACKAGED['smollm2-135m']); "
            "m = AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32); "
            "t = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name); "
            "ids = t('The capital of France is', return_tensors='pt').input_ids; "
            "tok = t.decode(m(ids).logits[0, -1].argmax()); print(time.perf_counter() - t0, tok)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "TQDM_DISABLE": "1"}, check=True).stdout.split()
    assert out[-1] == "Paris", out
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    sections.add_argument(ap)
    args = ap.parse_args()
    rows = []
    from knlab.core.packaged import PACKAGED, converted
    converted(PACKAGED["smollm2-135m"])  # the one-off conversion, outside the timed starts
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    firsts = []
    for i in range(args.runs):
        page, first, rss_real, rss_all = start_to_first_answer()
        firsts.append(first)
        rows.append([f"run {i + 1}", f"{page:.1f} s", f"{first:.1f} s", f"{rss_real:,.0f} MiB", f"{rss_all:,.0f} MiB"])
        print(f"run {i + 1}: page answers after {page:.1f} s, first smollm2-135m prediction after {first:.1f} s; "
              f"resident memory {rss_real:.0f} MiB with the real model, {rss_all:.0f} MiB with all three")
    base = gguf_first_answer()
    med = sorted(firsts)[len(firsts) // 2]
    print(f"cold start to the first prediction (median of {args.runs}): {med:.1f} s; straightforward (GGUF read "
          f"by transformers at every start, process start included): {base:.1f} s; {base / med:.1f}x")
    if args.markdown:
        sections.write_section(
            args.markdown, sections.section_name(__file__),
            "`python app.py` started fresh, timed to its first smollm2-135m prediction (conversion cached):\n\n"
            + sections.table(["start", "page answers", "first prediction", "resident memory, real model",
                            "with all three models"], rows)
            + f"\n\nMedian of {args.runs}: {med:.1f} s to the first prediction; straightforward (transformers "
            f"reading the GGUF at every start, process start included): {base:.1f} s; {base / med:.1f}x.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
