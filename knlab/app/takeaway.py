"""Results you can take away: every result the app shows, as files (its JSON, its grids and maps as CSV, and
a Python script) and as the Python call that reproduces it.

The call is not a description of the result but the request itself: the app runs ``fn(lm, *args,
**kwargs)`` through the worker with this session's edits of the model applied, so the script loads the same
model, recomputes the same edits in the same order (each on the ones before it, as the app made them) and
calls the same function with the same arguments. ``tests/app/test_takeaway.py`` runs the scripts and compares
their results with the app's.
"""

from __future__ import annotations

import csv
import inspect
import json
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from knlab.methods.attribute import Attribution
from knlab.methods.intervene import InterventionResult
from knlab.methods.predict import Prediction
from knlab.methods.trace import TraceResult
from knlab.studies.claims.common import ModelRun
from knlab.studies.edit_report import Comparison, EditReport
from knlab.studies.lesson import StepResult
from knlab.studies.paper import ClaimResult
from knlab.studies.paradigm_analysis import ParadigmAnalysis
from knlab.studies.relation_evaluation import Evaluation

Table = tuple[list[str], list[list[Any]]]  # a CSV: its header and its rows
KEEP_SECONDS = 3600  # a download folder older than this is removed when the next one is written (gradio has
# copied the files into its own cache by then: these are only the hand-over)


@dataclass(frozen=True)
class Call:
    """One call of a knlab function, as the app made it: ``fn(lm, *args, **kwargs)`` (``on_model=False``:
    ``fn(*args, **kwargs)``, a study that loads its own models)."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    on_model: bool = True

    def source(self) -> str:
        """``name(lm, first, key=value, ...)``: the first argument after the model positional, the rest by
        name, progress callbacks left out (they only draw the app's bar)."""
        sig = inspect.signature(self.fn)
        bound = sig.bind(*((None,) if self.on_model else ()), *self.args, **self.kwargs)
        named = [(k, v) for k, v in bound.arguments.items() if k != "progress"][1 if self.on_model else 0:]
        parts = ["lm"] if self.on_model else []
        for i, (k, v) in enumerate(named):
            parts.append(_literal(v) if i == 0 else f"{k}={_literal(v)}")
        return f"{self.fn.__name__}({', '.join(parts)})"


def _literal(value: Any) -> str:
    """A Python literal of a widget's value (numpy scalars as plain numbers, tuples of neurons as tuples)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def script(call: Call, model: str | None, edits: list[Call | None] = ()) -> str:
    """The Python that reproduces a result: load ``model``, remake the session's ``edits`` of it in order
    (each computed on the model with the earlier ones applied, as the app computed it), then make ``call``.
    An edit uploaded without the call that made it (None) is named in a comment, not remade."""
    imports = {f"from {c.fn.__module__} import {c.fn.__name__}" for c in [call, *edits] if c is not None}
    if edits:
        imports.add("from knlab.core.specs import applied")
    lines = ["import knlab", *sorted(imports), ""]
    if call.on_model:
        lines.append(f"lm = knlab.load_model({model!r})")
    if edits:
        lines.append("specs = []  # your edits of this model, in the order you made them")
        for k, e in enumerate(edits, 1):
            if e is None:  # uploaded in a file that does not say how it was made
                lines.append(f"# edit {k} came from an edits file without the call that made it: append its spec "
                             "from knlab.load_edits(FILE, knlab.weights_checksum(lm.model))")
                continue
            lines += ["with applied(lm, specs):", f"    specs.append({e.source()}.spec)"]
        lines += ["with applied(lm, specs):  # every request of yours runs with them applied",
                  f"    res = {call.source()}"]
    else:
        lines.append(f"res = {call.source()}")
    lines.append("print(res.to_json())")
    return "\n".join(lines) + "\n"


# --- the result's tables --------------------------------------------------------------------------------

def _grid(tokens: list[str], grid: np.ndarray, subject: tuple[int, int]) -> Table:
    header = ["position", "token", "subject"] + [f"layer {l}" for l in range(grid.shape[1])]
    rows = [[t, tok, int(subject[0] <= t < subject[1]), *map(float, grid[t])] for t, tok in enumerate(tokens)]
    return header, rows


def _probes(rep: EditReport) -> list[list[Any]]:
    return [[p.criterion, p.prompt, p.expected, p.old or "", p.p_before, p.p_after, int(p.holds)] for p in rep.probes]


PROBE_HEADER = ["criterion", "prompt", "expected", "old", "p before", "p after", "holds"]
LEFT_OUT_HEADER = ["criterion", "prompt", "reason"]
FINDINGS_HEADER = ["finding", "figure", "value", "low", "high", "n", "outcome", "the paper's rule"]


def _findings(run: ModelRun) -> list[list[Any]]:
    """A run's findings: the figure as the app prints it (N, interval) and its numbers, outcome and rule."""
    return [[f.name, f.text(), f.value, f.low, f.high, f.n, f.outcome, f.rule] for f in run.findings]


def tables(result: Any) -> dict[str, Table]:
    """A result's grids, maps and lists as tables (name -> header, rows), for CSV; {} where it has none."""
    if isinstance(result, Prediction):
        return {"top": (["rank", "token", "prob"],
                        [[k + 1, t, float(p)] for k, (t, p) in enumerate(zip(result.top_tokens, result.top_probs))])}
    if isinstance(result, TraceResult):  # and its first-order preview, PatchEstimate
        return {kind: _grid(result.tokens, np.asarray(g), result.subject_range) for kind, g in result.grids.items()}
    if isinstance(result, Attribution):
        scores = np.asarray(result.scores)
        return {"scores": (["layer"] + [f"neuron {i}" for i in range(scores.shape[1])],
                           [[l, *map(float, scores[l])] for l in range(scores.shape[0])]),
                "top": (["layer", "neuron", "score"], [list(t) for t in result.top(20)])}
    if isinstance(result, InterventionResult):
        rows = [[when, k + 1, t["token"], t["prob"]] for when, st in (("before", result.before), ("after", result.after))
                for k, t in enumerate(st["top"])]
        return {"top": (["state", "rank", "token", "prob"], rows)}
    if isinstance(result, ParadigmAnalysis):  # per target type (the seed's grouping)
        return {"modifiers": (["target type", "token", "group", "p before", "p after", "relative change %", "p value"],
                              [[g.target, t.token, t.group, t.pre, t.post, t.rel_change, t.p_value]
                               for g in result.groups for t in g.tokens]),
                "neurons": (["target type", "layer", "neuron"], [[g.target, *n] for g in result.groups for n in g.neurons]),
                "target types": (["target type", "KNs", "tau", "R^2_1", "prompts", "overturned"],
                                 [[g.target, len(g.neurons), g.tau, g.r2_1, g.n_prompts, g.overturned]
                                  for g in result.groups])}
    if isinstance(result, EditReport):
        out = {"criteria": (["criterion", "rate"], [[c, v] for c, v in result.criteria.items()]),
               "probes": (PROBE_HEADER, _probes(result))}
        if result.left_out:  # the probes the model cannot answer before the edit, and why
            out["left-out"] = (LEFT_OUT_HEADER, [[x["criterion"], x["prompt"], x["reason"]] for x in result.left_out])
        return out
    if isinstance(result, Comparison):
        return {"probes": (["method"] + PROBE_HEADER,
                           [[m, *row] for m, rep in result.reports.items() if rep is not None for row in _probes(rep)])}
    if isinstance(result, Evaluation):
        rows = [[c, v, *result.counts.get(c, ["", ""])] for c, v in result.rates.items()]
        return {"rates": (["criterion", "rate", "holds", "probes"], rows)}
    if isinstance(result, ModelRun):
        return {"rows": (["item", "live", "published"], [[r["item"], r["live"], r["published"]] for r in result.rows]),
                "findings": (FINDINGS_HEADER, _findings(result))}
    if isinstance(result, ClaimResult):
        return {"rows": (["model", "item", "live", "published"],
                         [[r["model"], r["item"], r["live"], r["published"]] for r in result.rows]),
                "findings": (["model", *FINDINGS_HEADER], [[r.model, *row] for r in result.runs for row in _findings(r)])}
    if isinstance(result, StepResult):
        return tables(result.result)
    return {}


# --- the files --------------------------------------------------------------------------------------------

def _home() -> Path:
    """The hand-over folder, in the system's temp directory (one gradio serves files from)."""
    return Path(tempfile.gettempdir()) / "knlab-downloads"


def _prune(home: Path, now: float) -> None:
    for d in home.iterdir() if home.exists() else ():
        try:
            if now - d.stat().st_mtime > KEEP_SECONDS:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:  # another request removed it first
            pass


def fresh_folder(home: Path | None = None) -> Path:
    """A new, empty folder for one download (older ones pruned): the files a tab hands over."""
    home = home or _home()
    _prune(home, time.time())
    folder = home / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def write(name: str, result: Any, source: str, home: Path | None = None) -> list[str]:
    """``name``.json (the result as the API returns it), ``name``-<table>.csv for each of its tables and
    ``name``.py (the script), in a fresh folder; the paths, JSON first."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "result"
    folder = fresh_folder(home)
    paths = [folder / f"{name}.json"]
    paths[0].write_text(json.dumps(result.to_json(), indent=1, default=_plain))
    for table, (header, rows) in tables(result).items():
        path = folder / f"{name}-{table}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        paths.append(path)
    paths.append(folder / f"{name}.py")
    paths[-1].write_text(source)
    return [str(p) for p in paths]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")
