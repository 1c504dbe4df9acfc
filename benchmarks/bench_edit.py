"""ROME: knlab's fast v* optimisation vs the straightforward implementation, in the same process.

The straightforward implementation (tests/reference/rome.py) is laid out as ROME's reference ``compute_v``
is: every optimisation step re-tokenizes every context-template prompt (and the KL prompt "{subject} is
a") and runs each one through the whole model on its own, with a hook on the edited layer's MLP output
projection adding the delta at the subject's last token; the losses are summed and there is one backward
per step. Same templates, same k* / u, same loss (NLL of the target over every template + kl_factor x KL +
weight decay), same early stop, norm clamp, Adam settings and right vector as ``knlab.methods.rome``;
knlab instead runs all rows as one aligned batch, keeps the prefix before the subject as a KV cache,
replays the blocks below the edited layer and differentiates w.r.t. the delta only.

Prints per-fact and mean seconds, the speed ratio, the largest relative differences between the right
vectors and between the u's, and whether each edit takes (p(new) > p(old) once applied).

    python benchmarks/bench_edit.py [--facts 5] [--markdown docs/benchmarks.md]

``--markdown`` also rewrites this run's section of the record (benchmarks/sections.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the straightforward implementations: tests/reference/

import sections  # noqa: E402
from reference.rome import rome_straightforward  # noqa: E402


def rel_diff(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--facts", type=int, default=5)
    ap.add_argument("--short-steps", type=int, default=3, help="steps of the second, short comparison")
    ap.add_argument("--model", default="world-gpt", help="e.g. smollm2-135m (edits the facts it knows)")
    sections.add_argument(ap)
    args = ap.parse_args()
    rows: list[list] = []
    torch.set_num_threads(2)
    from knlab.core.models import load_model
    from knlab.core.tokens import first_token
    from knlab.methods.predict import encode, next_token_probs
    from knlab.methods.rome import params_for, rome
    from knlab.studies.edit_report import rome_layer
    from knlab.world.covariance_texts import covariance_corpus
    from knlab.methods.rome.context_templates import context_templates
    import knlab.methods.rome.layer_stats as LS
    from knlab.core.specs import applied
    from knlab.world import facts as F

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    lm = load_model(args.model, device="cpu")
    params = params_for(lm)  # the model's family / own settings (world-gpt: the published GPT-2 XL ones)
    print(f"{lm.spec}: {params}")
    # one-off work, reported apart: the default layer (a causal trace), templates, covariance
    t0 = time.perf_counter()
    layer = rome_layer(lm)
    t_layer = time.perf_counter() - t0
    t0 = time.perf_counter()
    contexts = context_templates(lm, params.template_seed)
    t_templates = time.perf_counter() - t0
    measured = []
    measure = LS.measure_mom2
    LS.measure_mom2 = lambda *a, **k: measured.append(1) or measure(*a, **k)
    try:
        t0 = time.perf_counter()
        corpus = covariance_corpus(params.mom2_corpus)
        mom2 = LS.layer_stats(lm, layer, corpus, tokens=params.mom2_tokens)
        t_mom2 = time.perf_counter() - t0
    finally:
        LS.measure_mom2 = measure
    how = "measured over the world corpus" if measured else "loaded from the disk cache"
    print(f"one-off: default layer {layer} in {t_layer:.2f} s, {len(contexts)} context templates in "
          f"{t_templates:.2f} s, covariance (layer {layer}) {how} in {t_mom2:.2f} s")

    rel = F.relation("P36")
    # facts the model answers (its first token), so that "takes" means p(new) overtook the real answer
    known = [f for f in rel.facts
             if int(next_token_probs(lm, encode(lm, F.causal_prompt(rel.train_templates[0], f.subject))).argmax())
             == first_token(lm, f.object)]
    facts = list(known[:args.facts + 1])
    rome(lm, F.causal_prompt(rel.train_templates[0], facts[0].subject), facts[0].subject, facts[1].object,
         layer, params, corpus=corpus)  # warm-up
    fast_edit, fast_wall, slow, dv, du, dvs, dshort = [], [], [], [], [], [], []
    first_ref = None
    for i, f in enumerate(facts[:args.facts]):
        prompt = F.causal_prompt(rel.train_templates[0], f.subject)
        new = facts[i + 1].object
        t0 = time.perf_counter()
        res = rome(lm, prompt, f.subject, new, layer, params, corpus=corpus)
        fast_wall.append(time.perf_counter() - t0)
        fast_edit.append(res.seconds["edit"])
        t0 = time.perf_counter()
        ref = rome_straightforward(lm, prompt, f.subject, new, layer, params, contexts, mom2)
        slow.append(time.perf_counter() - t0)
        first_ref = first_ref if i else ref
        dv.append(rel_diff(res.edit.v, ref.v))
        du.append(rel_diff(res.edit.u, ref.u))
        dvs.append(rel_diff(res.v_star, ref.v_star))
        # the same comparison after a short run, before Adam has amplified float rounding (see below)
        short = dataclasses.replace(params, v_steps=args.short_steps)
        dshort.append(rel_diff(rome(lm, prompt, f.subject, new, layer, short, corpus=corpus).v_star,
                               rome_straightforward(lm, prompt, f.subject, new, layer, short, contexts,
                                                    mom2).v_star))
        enc = encode(lm, prompt)
        new_id, old_id = first_token(lm, new), first_token(lm, f.object)
        p0 = next_token_probs(lm, enc)
        with applied(lm, [res.edit]):
            p = next_token_probs(lm, enc)
        takes = bool(p[new_id] > p[old_id])
        print(f"{prompt!r:38s} -> {new:10s} | knlab edit {fast_edit[-1]:6.3f} s (wall {fast_wall[-1]:6.3f} s, "
              f"{res.steps} steps) | straightforward {slow[-1]:6.2f} s ({ref.steps} steps) | "
              f"{slow[-1] / fast_edit[-1]:5.1f}x | max rel diff right vector {dv[-1]:.1e}, u {du[-1]:.1e}, "
              f"v* {dvs[-1]:.1e} (after {args.short_steps} steps {dshort[-1]:.1e}) | p({new}) {p0[new_id]:.3f} -> "
              f"{p[new_id]:.3f}, p({f.object}) {p0[old_id]:.3f} -> {p[old_id]:.3f}: "
              f"{'takes' if takes else 'DOES NOT TAKE'}")
        rows.append([f"{prompt} -> {new}", f"{fast_edit[-1]:.2f} s ({res.steps} steps)",
                     f"{slow[-1]:.1f} s ({ref.steps} steps)", f"{slow[-1] / fast_edit[-1]:.1f}x", f"{dvs[-1]:.1e}",
                     f"{dshort[-1]:.1e}", "yes" if takes else "NO"])
    # the noise floor: the straightforward loop against itself with its template losses summed in
    # another order (same maths, different float rounding), full run, first fact
    f = facts[0]
    prompt = F.causal_prompt(rel.train_templates[0], f.subject)
    a = first_ref
    b = rome_straightforward(lm, prompt, f.subject, facts[1].object, layer, params,
                             contexts[:1] + contexts[1:][::-1], mom2)
    floor = rel_diff(a.v_star, b.v_star)
    print(f"noise floor ({prompt!r}): straightforward vs itself with the templates in reverse order: "
          f"max rel diff right vector {rel_diff(a.v, b.v):.1e}, v* {floor:.1e} "
          f"(Adam divides each gradient component by its running size, so float rounding grows step by step)")
    n = len(slow)
    fe, fw, s = sum(fast_edit) / n, sum(fast_wall) / n, sum(slow) / n
    print(f"mean over {n} facts: knlab edit {fe:.3f} s (wall {fw:.3f} s), straightforward {s:.2f} s, "
          f"speed-up {s / fe:.1f}x (wall {s / fw:.1f}x); max rel diff right vector {max(dv):.1e}, "
          f"u {max(du):.1e}, v* {max(dvs):.1e} ({args.short_steps}-step runs: v* {max(dshort):.1e})")
    summary = (f"ROME edit on {lm.spec}: {fe:.2f} s (knlab) vs {s:.1f} s (straightforward), {s / fe:.1f}x; "
               f"covariance once: {t_mom2:.1f} s" + ("" if measured else " (from the disk cache; run with KNLAB_CACHE "
                                                     "pointing at an empty folder to time its measurement)"))
    print(f"summary: {summary}")
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.markdown:
        rows.append([f"mean of {n} facts", f"{fe:.2f} s", f"{s:.1f} s", f"{s / fe:.1f}x", f"{max(dvs):.1e}",
                     f"{max(dshort):.1e}", f"{sum(r[-1] == 'yes' for r in rows)} of {n}"])
        sections.write_section(
            args.markdown, sections.section_name(__file__, None if args.model == "world-gpt" else args.model),
            f"{lm.spec}, ROME at layer {layer}, first {n} known P36 facts (covariance and templates cached):\n\n"
            + sections.table(["fact -> new object", "knlab (edit)", "straightforward", "speed-up", "max rel. diff. v*",
                            f"after {args.short_steps} steps", "takes"], rows)
            + f"\n\nOne-off per model and layer: causal-trace layer choice {t_layer:.1f} s, {len(contexts)} context "
            f"templates {t_templates:.1f} s, key covariance {t_mom2:.1f} s ({how}). Noise floor: the straightforward "
            f"implementation against itself with its templates in another order differs in v* by {floor:.1e}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
