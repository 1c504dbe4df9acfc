"""What one /edit request spends besides the edit: the probes before and after, the generations before and
after, and the worker's checksum of every weight once it is done.

Each request runs as the app runs it (``ModelWorker.run`` on the long lane, ``edit_report.edit`` with ROME),
its parts timed where they are called. Beside it, in the same run, the straightforward way to each of the
two parts knlab makes fast:

- the probes (an edit's ~15 prompts of ~5 lengths): one forward pass per length, every position through
  the output head, against knlab's one right-padded pass reading each row's answer position only
  (``predict.answer_logits``);
- the checksum: every parameter and buffer hashed in turn on one thread, the tied head twice, against
  knlab's one hash per piece of memory on a thread per core (``models.weights_checksum``, same value).

    python benchmarks/bench_request.py [--model smollm2-135m] [--facts 2] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sections  # noqa: E402

PARTS = ("probe_probs", "generate", "make_spec")


def probe_logits_by_length(lm, prompts: list[str]) -> torch.Tensor:
    """The straightforward batching: rows of equal length together, every position through the head."""
    from knlab.core.batching import equal_length_batches
    enc = [lm.tokenizer(p)["input_ids"] for p in prompts]
    out = torch.empty(len(prompts), lm.model.config.vocab_size)
    with torch.no_grad():
        for part in equal_length_batches([len(ids) for ids in enc]):
            logits = lm.model(input_ids=torch.tensor([enc[i] for i in part], device=lm.device)).logits
            out[part] = logits[:, -1].float().cpu()
    return out


def checksum_each_name(model: torch.nn.Module) -> str:
    """The straightforward checksum: every name's tensor hashed in turn, on one thread."""
    from knlab.core.models import tensor_checksum
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor_checksum(t).encode())
    return h.hexdigest()


def best_of(n: int, fn, *args) -> tuple[float, object]:
    times, out = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--facts", type=int, default=2, help="edit requests timed (known P36 facts, in order)")
    ap.add_argument("--repeats", type=int, default=5, help="timings of each part compared (best of)")
    sections.add_argument(ap)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from knlab.core.models import load_model, weights_checksum
    from knlab.core.tokens import first_token
    from knlab.methods.predict import answer_logits, encode, next_token_probs
    from knlab.serve.worker import LONG, ModelWorker
    from knlab.studies import edit_report as E
    from knlab.studies.probes import build_probes
    from knlab.world import facts as F

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    lm = load_model(args.model, device="cpu")
    worker = ModelWorker(device="cpu")
    worker.add_model(lm)
    rel = F.relation("P36")
    known = [f for f in rel.facts
             if int(next_token_probs(lm, encode(lm, F.causal_prompt(rel.train_templates[0], f.subject))).argmax())
             == first_token(lm, f.object)]
    facts = known[: args.facts + 1]

    spent: dict[str, list[float]] = defaultdict(list)
    real = {name: getattr(E, name) for name in PARTS}

    def timed(name):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                return real[name](*a, **k)
            finally:
                spent[name].append(time.perf_counter() - t0)
        return run

    def request(i: int) -> float:
        f = facts[i]
        prompt = F.causal_prompt(rel.train_templates[0], f.subject)
        t0 = time.perf_counter()
        worker.run(args.model, [], E.edit, "rome", prompt, f.subject, facts[i + 1].object)
        return time.perf_counter() - t0

    request(0)  # warm-up: the layer, templates and covariance, loaded once per model
    for name in PARTS:
        setattr(E, name, timed(name))
    spent.clear()
    walls = []
    try:
        for i in range(args.facts):
            walls.append(request(i))
    finally:
        for name, fn in real.items():
            setattr(E, name, fn)
    n = args.facts
    wall = statistics.mean(walls)
    rome_s = sum(spent["make_spec"]) / n
    probes_s = sum(spent["probe_probs"]) / n
    gen_s = sum(spent["generate"]) / n
    t_sum, s = best_of(args.repeats, weights_checksum, lm.model)
    rest = wall - rome_s - probes_s - gen_s - t_sum
    print(f"{args.model}: one /edit request (ROME, mean of {n}): {wall:.2f} s = the edit {rome_s:.2f} s + probes "
          f"before and after {probes_s:.2f} s + generations before and after {gen_s:.2f} s + checksum "
          f"{t_sum:.2f} s + the rest {rest:.2f} s")

    # the two parts knlab makes fast, against the straightforward way, alternated in this run
    f = facts[0]
    prompt = F.causal_prompt(rel.train_templates[0], f.subject)
    probes, _ = build_probes(lm, prompt, f.subject, f.object, facts[1].object)
    prompts = [p.prompt for p in probes]
    lengths = len({len(lm.tokenizer(p)["input_ids"]) for p in prompts})
    t_fast, fast = best_of(args.repeats, answer_logits, lm, prompts)
    t_slow, slow = best_of(args.repeats, probe_logits_by_length, lm, prompts)
    same_answers = bool((fast.argmax(-1) == slow.argmax(-1)).all())
    diff = float((torch.softmax(fast, -1) - torch.softmax(slow, -1)).abs().max())
    t_plain, plain = best_of(args.repeats, checksum_each_name, lm.model)
    print(f"probes ({len(prompts)} prompts of {lengths} lengths): one padded pass {t_fast:.3f} s, by length "
          f"{t_slow:.3f} s: {t_slow / t_fast:.1f}x; same answers {same_answers}, largest probability difference "
          f"{diff:.1e}")
    print(f"checksum: threaded, shared memory once {t_sum:.3f} s, every name in turn {t_plain:.3f} s: "
          f"{t_plain / t_sum:.1f}x; same value {s == plain}")
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.markdown:
        rows = [["one /edit request (ROME), mean of " + str(n), f"{wall:.2f} s", "", ""],
                ["  the ROME edit itself", f"{rome_s:.2f} s", "", ""],
                ["  probes before and after", f"{probes_s:.2f} s", "", ""],
                ["  generations before and after (8 tokens each)", f"{gen_s:.2f} s", "", ""],
                ["  checksum of every weight after it", f"{t_sum:.2f} s", "", ""],
                ["  the rest (probe building, scoring, restore)", f"{rest:.2f} s", "", ""],
                [f"probes: {len(prompts)} prompts of {lengths} lengths, best of {args.repeats}", f"{t_fast:.3f} s",
                 f"{t_slow:.3f} s (a pass per length, every position through the head)", f"{t_slow / t_fast:.1f}x"],
                [f"checksum, best of {args.repeats}", f"{t_sum:.3f} s",
                 f"{t_plain:.3f} s (every name in turn, one thread)", f"{t_plain / t_sum:.1f}x"]]
        sections.write_section(
            args.markdown, sections.section_name(__file__, None if args.model == "smollm2-135m" else args.model),
            f"{lm.spec}, through the worker's long lane as the app runs it:\n\n"
            + sections.table(["what", "knlab", "straightforward", "speed-up"], rows)
            + f"\n\nThe probes give the same answers both ways (largest probability difference {diff:.1e}); the "
            f"checksums are the same value: {s == plain}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
