"""float32 against bfloat16 autocast on the real model, in the same run: speed and agreement per method.

For each method the two dtypes run one after the other on the same inputs (alternating, so that the
machine's drift falls on both), and the issue's agreement criteria are checked:

- ROME (``studies.edit_report.edit`` of known P36 facts, each to another known capital): the same
  outcome (p(new) > p(old) after the edit) on every fact, the same top answer on every probe after
  the edit, and cosine(v*_float32, v*_bfloat16) >= 0.99;
- IG (``methods.attribute.attribute``): the same top-10 neurons, Pearson correlation of the maps >= 0.99;
- causal trace (``methods.trace.trace``): Pearson correlation of each grid >= 0.99.

Times are the methods' own (ROME: the spec's computation, its covariance measured once beforehand and
shared). Prints a verdict per method and the bfloat16 / float32 time ratio (< 1: bfloat16 faster).

    python benchmarks/bench_dtype.py [--facts 30] [--model smollm2-135m] [--only rome ig trace]
        [--kinds hidden mlp attn] [--json out.json] [--resume benchmarks/records/dtype-rome-smollm2-135m.json]

The 30-fact ROME comparison takes hours where bfloat16 is emulated (no AMX / AVX512-BF16): ``--resume``
keeps its rows after every fact and skips them when run again, so it can be finished over several sittings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sections  # noqa: E402

DTYPES = ("float32", "bfloat16")
COS_MIN, CORR_MIN, TOP_K = 0.99, 0.99, 10


def timed(lm, dtype, fn, *a, **k):
    lm.dtype_choice = dtype
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def pearson(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float(np.array_equal(a, b))


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def ratio(times: dict) -> float:
    return float(np.median(np.array(times["bfloat16"]) / np.array(times["float32"])))


def bench_rome(lm, facts, report: dict, resume: Path | None = None) -> None:
    """``resume``: a file of the facts already compared (this function's rows, kept after each fact), so
    that a run too long for one sitting (a bfloat16 edit of the real model takes minutes where bfloat16 is
    emulated) goes on where it stopped; the verdict and times cover every row, old and new."""
    from knlab.studies import edit_report as ER

    done = {(r["prompt"], r["new"]): r for r in json.loads(resume.read_text())["facts"]} \
        if resume is not None and resume.exists() else {}
    captured = {}
    real_rome = ER.rome

    def spy(*a, **k):  # keep v* of the ROME run inside edit()
        res = real_rome(*a, **k)
        captured["v"] = res.v_star
        return res
    ER.rome = spy
    times = {d: [] for d in DTYPES}
    rows, ok_all = [], True
    try:
        for n, (prompt, subject, new) in enumerate(facts):
            if (prompt, new) in done:
                row = done[(prompt, new)]
                rows.append(row)
                ok_all &= row["agree"]
                times["float32"].append(row["s_f32"])
                times["bfloat16"].append(row["s_bf16"])
                print(f"  ROME {prompt!r} -> {new}: from {resume} (v* cosine {row['v_cosine']:.5f})", flush=True)
                continue
            reps = {}
            order = DTYPES if n % 2 == 0 else DTYPES[::-1]
            for d in order:
                rep, _ = timed(lm, d, ER.edit, lm, "rome", prompt, subject, new)
                times[d].append(rep.seconds)
                reps[d] = (rep, captured.pop("v"))
            (a, va), (b, vb) = reps["float32"], reps["bfloat16"]
            took = [r.after["p_new"] > r.after["p_old"] for r in (a, b)]
            ans = [[p.top_after for p in r.probes] for r in (a, b)]
            cos = cosine(va, vb)
            ok = took[0] == took[1] and ans[0] == ans[1] and cos >= COS_MIN
            ok_all &= ok
            rows.append({"prompt": prompt, "new": new, "took_f32": took[0], "took_bf16": took[1],
                         "probes_same": ans[0] == ans[1], "v_cosine": cos, "s_f32": a.seconds, "s_bf16": b.seconds,
                         "agree": ok})
            print(f"  ROME {prompt!r} -> {new}: took {took[0]}/{took[1]}, probes same {ans[0] == ans[1]}, "
                  f"v* cosine {cos:.5f}, {a.seconds:.2f} s / {b.seconds:.2f} s", flush=True)
            if resume is not None:
                resume.write_text(json.dumps({"model": lm.spec, "facts": rows}, indent=1))
    finally:
        ER.rome = real_rome
    report["rome"] = {"facts": rows, "agree": ok_all, "time_ratio": ratio(times),
                      "mean_s": {d: float(np.mean(t)) for d, t in times.items()}}


def bench_ig(lm, prompts, report: dict) -> None:
    from knlab.methods.attribute import attribute
    times = {d: [] for d in DTYPES}
    rows, ok_all = [], True
    for n, (prompt, target) in enumerate(prompts):
        res = {}
        for d in (DTYPES if n % 2 == 0 else DTYPES[::-1]):
            res[d], s = timed(lm, d, attribute, lm, prompt, target)
            times[d].append(s)
        a, b = res["float32"], res["bfloat16"]
        same = [(l, i) for l, i, _ in a.top(TOP_K)] == [(l, i) for l, i, _ in b.top(TOP_K)]
        same_set = {(l, i) for l, i, _ in a.top(TOP_K)} == {(l, i) for l, i, _ in b.top(TOP_K)}
        corr = pearson(a.scores, b.scores)
        ok = same_set and corr >= CORR_MIN
        ok_all &= ok
        rows.append({"prompt": prompt, "target": target, "top10_same_order": same, "top10_same_set": same_set,
                     "corr": corr, "s_f32": times["float32"][-1], "s_bf16": times["bfloat16"][-1], "agree": ok})
        print(f"  IG {prompt!r} -> {target}: top-10 same set {same_set} (order {same}), corr {corr:.5f}, "
              f"{times['float32'][-1]:.2f} s / {times['bfloat16'][-1]:.2f} s", flush=True)
    report["ig"] = {"prompts": rows, "agree": ok_all, "time_ratio": ratio(times),
                    "mean_s": {d: float(np.mean(t)) for d, t in times.items()}}


def bench_trace(lm, prompts, kinds, report: dict) -> None:
    from knlab.methods.trace import trace
    times = {d: [] for d in DTYPES}
    rows, ok_all = [], True
    for n, (prompt, subject, answer) in enumerate(prompts):
        res = {}
        for d in (DTYPES if n % 2 == 0 else DTYPES[::-1]):
            res[d], s = timed(lm, d, trace, lm, prompt, subject, answer, kinds=kinds)
            times[d].append(s)
        corrs = {k: pearson(res["float32"].grids[k], res["bfloat16"].grids[k]) for k in kinds}
        ok = all(c >= CORR_MIN for c in corrs.values())
        ok_all &= ok
        rows.append({"prompt": prompt, "corr": corrs, "s_f32": times["float32"][-1],
                     "s_bf16": times["bfloat16"][-1], "agree": ok})
        print(f"  trace {prompt!r}: corr {', '.join(f'{k} {c:.5f}' for k, c in corrs.items())}, "
              f"{times['float32'][-1]:.2f} s / {times['bfloat16'][-1]:.2f} s", flush=True)
    report["trace"] = {"prompts": rows, "agree": ok_all, "time_ratio": ratio(times),
                       "mean_s": {d: float(np.mean(t)) for d, t in times.items()}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--facts", type=int, default=30, help="known P36 facts edited by ROME")
    ap.add_argument("--prompts", type=int, default=None, help="facts for IG and the trace (default: --facts)")
    ap.add_argument("--only", nargs="*", default=["rome", "ig", "trace"], choices=["rome", "ig", "trace"])
    ap.add_argument("--kinds", nargs="*", default=["hidden", "mlp", "attn"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the report here")
    ap.add_argument("--resume", default=None, help="ROME's rows so far: read, skipped, and extended fact by fact")
    sections.add_argument(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from knlab.core.dtype import cpu_has_bf16_units
    from knlab.core.models import load_model
    from knlab.studies.edit_report import rome_layer
    from knlab.studies.known_facts import known_subjects
    from knlab.world import facts as F

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bfloat16 matrix units: {cpu_has_bf16_units()}", flush=True)
    lm = load_model(args.model, device="cpu", compute="float32")
    rel = F.relation("P36")
    template = rel.train_templates[0]
    subjects = known_subjects(lm, "P36", args.facts, template)
    capital = {f.subject: f.object for f in rel.facts}
    facts = []
    for i, s in enumerate(subjects):  # each to the next known subject's capital: a real, other answer
        other = capital[subjects[(i + 1) % len(subjects)]]
        facts.append((F.causal_prompt(template, s), s, other))
    n_p = args.prompts or args.facts
    report = {"model": args.model, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "bf16_units": cpu_has_bf16_units(), "facts": len(facts)}
    if "rome" in args.only:
        from knlab.methods.rome import params_for
        from knlab.methods.rome.layer_stats import layer_stats
        from knlab.world.covariance_texts import covariance_corpus
        params = params_for(lm)
        t0 = time.perf_counter()  # the covariance once (float32 always), not timed with the edits
        layer_stats(lm, rome_layer(lm), covariance_corpus(params.mom2_corpus), tokens=params.mom2_tokens)
        print(f"ROME ({len(facts)} facts; covariance measured once beforehand, {time.perf_counter() - t0:.1f} s)",
              flush=True)
        bench_rome(lm, facts, report, Path(args.resume) if args.resume else None)
    if "ig" in args.only:
        print(f"IG ({n_p} prompts)", flush=True)
        bench_ig(lm, [(F.causal_prompt(template, s), capital[s]) for s in subjects[:n_p]], report)
    if "trace" in args.only:
        print(f"trace ({n_p} prompts, kinds {' '.join(args.kinds)})", flush=True)
        bench_trace(lm, [(F.causal_prompt(template, s), s, capital[s]) for s in subjects[:n_p]], args.kinds, report)
    print("\nmethod  agree  bfloat16 / float32 time")
    for m in ("rome", "ig", "trace"):
        if m in report:
            r = report[m]
            print(f"{m:7s} {str(r['agree']):6s} {r['time_ratio']:.2f}x  (mean {r['mean_s']['float32']:.2f} s / "
                  f"{r['mean_s']['bfloat16']:.2f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.markdown:
        sections.write_section(
            args.markdown, sections.section_name(__file__, None if args.model == "smollm2-135m" else args.model),
            f"{report['facts']} facts, {report['threads']} threads, bfloat16 matrix units: {report['bf16_units']}.\n\n"
            + sections.table(["method", "agrees", "bfloat16 / float32 time", "float32 s", "bfloat16 s"],
                             [[m, str(report[m]["agree"]), f"{report[m]['time_ratio']:.2f}x",
                               f"{report[m]['mean_s']['float32']:.2f}", f"{report[m]['mean_s']['bfloat16']:.2f}"]
                              for m in ("rome", "ig", "trace") if m in report]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
