"""The examples' outputs as recorded when knlab was released: what a page shows before this server has computed them.

A page opens with every tab's and the Lesson's default example already answered (``Context.prefill``): from the
result cache when this server has computed it (``Context.warm`` does, in the background, after start), else from
this record. The record matters where the cache cannot help: in the minutes a fresh Space spends warming up, and on
ZeroGPU, where the app does not warm at all (each GPU call spends a visitor's quota). The cache's key includes a
digest of the methods' code, so a recorded result could never be served *as* a cache entry; it is shown as what
it is instead, labelled with when, on what and by which version of knlab it was computed, and the button
recomputes it live.

The record holds each example's outputs as the page receives them (Markdown, plotly figures as JSON, tables), not
pickled results: JSON only, so it stays readable and safe to load. It is made by the same handlers a click runs::

    python -m knlab examples [--model M]     # default: the model the app opens with (knlab/app/cli.py)

and kept under ``assets/examples/<model>.json.gz``. A recording is shown only for the model whose weights it was
made on (checksum), never after a session has edits of that model.
"""

from __future__ import annotations

import datetime
import gzip
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import gradio as gr
import plotly.graph_objects as go
import plotly.io as pio
from plotly.utils import PlotlyJSONEncoder

from knlab.app.plots import note_under_title
from knlab.core.models import kernels

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"
FORMAT = 1


def path_for(model: str) -> Path:
    """Where the record of the examples a page opening on ``model`` shows is kept."""
    return EXAMPLES_DIR / f"{model}.json.gz"


# -- one output value, as JSON and back ------------------------------------------------------------------------

def encode(value: Any, component: Any) -> Any:
    """An output's value as JSON: a figure as plotly's JSON; a file list (its files are this server's, gone with it)
    as an update that leaves the output as it is; anything else as it is, when it is JSON."""
    if isinstance(component, gr.File):
        return {"__type__": "update"}
    if isinstance(value, go.Figure):
        return {"__plotly__": json.loads(value.to_json())}
    return json.loads(json.dumps(value, cls=PlotlyJSONEncoder))  # numpy arrays and numbers as plain JSON


def decode(value: Any) -> Any:
    if isinstance(value, dict) and "__plotly__" in value:
        return pio.from_json(json.dumps(value["__plotly__"]))
    if isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1:
        return gr.skip()
    return value


def key(handler: Any, values: list, outputs: list) -> str:
    """An example's name in the record: its handler, its outputs' element ids (the Lesson's steps share one handler)
    and its inputs' values. Numbers are compared as floats: a page sends a slider's 10 back as 10 or 10.0."""
    ids = [getattr(c, "elem_id", None) for c in outputs]
    plain = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in values]
    return json.dumps([handler.__qualname__, ids, plain], default=str)


# -- labelling -----------------------------------------------------------------------------------------------------

def label(meta: dict) -> str:
    """The line a recorded example carries: when, on what and by which knlab it was computed."""
    return (f"*Recorded {meta['recorded']} on {meta['on']} by knlab {meta['knlab']} (not computed by this server "
            f"yet): press the button to compute it live.*")


def labelled(values: list, outputs: list, meta: dict) -> tuple:
    """The recorded outputs, decoded, with ``label`` where the result shows: the first Markdown output that holds
    text, else under the first figure's title (a tab that shows only a figure)."""
    out = [decode(v) for v in values]
    note = label(meta)
    for i, (v, c) in enumerate(zip(out, outputs)):
        if isinstance(c, gr.Markdown) and isinstance(v, str) and v:
            out[i] = f"{v}  \n{note}"
            return tuple(out)
    for v in out:
        if isinstance(v, go.Figure):
            note_under_title(v, note)
            break
    return tuple(out)


# -- the record ----------------------------------------------------------------------------------------------------

def knlab_version() -> str:
    """The commit the record was made at (with ``+changes`` when the tree differed from it), else "unknown"."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "knlab"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record(ctx: Any, models: list[str]) -> dict:
    """Run every example of ``ctx`` (``Context.run_example``: as the warm-up does, a session of its own, no edits)
    and keep its outputs; ``models``: the models the examples run on, whose weights checksums the record keeps."""
    examples = {}
    for handler, inputs, outputs in ctx.examples:
        values = [getattr(c, "value", None) for c in inputs]
        out = ctx.run_example(handler, values, session="knlab-example-record")
        out = out if isinstance(out, tuple) else (out,)
        examples[key(handler, values, outputs)] = [encode(v, c) for v, c in zip(out, outputs)]
    ids = {m: ctx.worker.identity(m) for m in models}
    device = next(iter(ids.values()))["device"] if ids else "cpu"
    return {"format": FORMAT, "recorded": datetime.date.today().isoformat(), "knlab": knlab_version(),
            "on": f"{', '.join(models)} ({device}, {kernels(device)} kernels, {platform.machine()})",
            "models": list(models), "weights": {m: i["weights"] for m, i in ids.items()}, "examples": examples}


def write(path: Path, rec: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:  # figures' JSON: MBs, compressed ~10x
        json.dump(rec, fh, separators=(",", ":"))


def read(path: Path) -> dict | None:
    """The record at ``path``, or None where there is none or it is not one this version reads."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == FORMAT else None
