"""The Paper tab: every experiment of the paper as a claim. Each claim opens on its record (the full-size
runs ``python -m knlab paper --record`` committed in assets/records: each finding with its N, its 95%
interval and its outcome against the paper's rule), with a button beside it that reruns the claim live,
at a small size, on the shipped models that fit it."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from knlab.app.context import Context, Progress, takeaway_panel, whole, with_note
from knlab.app.plots import claim_figure, recorded_figure
from knlab.studies import record
from knlab.studies.claims.common import ModelRun
from knlab.studies.paper import CLAIMS, SOURCE_NOTE, Claim, rerun

DOCS = "docs/paper.md"
FINDINGS_HEADER = ["model", "finding", "figure (N, 95% interval)", "outcome", "the paper's rule"]
LIVE_HEADER = ["model", "figure", "live", "published (paper)"]


def api_name(claim_id: str) -> str:
    """The HTTP API endpoint of a claim: /paper_<id with underscores>."""
    return f"paper_{claim_id.replace('-', '_')}"


def findings_rows(run: ModelRun) -> list[list[str]]:
    """A run's findings as FINDINGS_HEADER's rows."""
    return [[run.model, f.name, f.text(), f.outcome, f.rule] for f in run.findings]


def _provenance(entry: dict, run: ModelRun) -> str:
    """'Recorded: 38 items (2 left out), size 40, 12.3 minutes, commit 1234abcd, on cpu (rome float32, ig
    float32, trace float32), `command`' (the device and dtypes where the record says them)."""
    left = len(run.left_out)
    commit = str(entry.get("commit") or "unknown")[:8]
    return (f"Recorded: {len(entry.get('items', {}))} items{f' ({left} left out)' if left else ''}, size "
            f"{entry.get('size', run.size)}, {entry.get('seconds', run.seconds) / 60:.1f} minutes, commit {commit}"
            + (f", on {entry['device']} ({', '.join(f'{m} {d}' for m, d in entry['dtypes'].items())})"
               if entry.get("device") else "")
            + (f", `{entry['command']}`" if entry.get("command") else "")
            + (f", finished {entry['finished']}" if entry.get("finished") else ""))


def record_views(c: Claim, directory: Path | None = None) -> tuple[str, list[list[str]], object, list[ModelRun]]:
    """A claim's record as the tab shows it on open: a line per model it applies to (what was recorded, or
    "not recorded yet"), the findings table, the recorded figure (None when nothing is recorded) and the
    recorded runs."""
    directory = record.RECORDS if directory is None else Path(directory)
    lines, rows, runs = [], [], []
    for m in c.applies_to():
        run = record.recorded(c.id, m, directory)
        entry = record.load_record(m, directory)["claims"].get(c.id)
        if run is None:
            so_far = (f": in progress, {len(entry.get('items', {}))} items so far" if entry else "")
            lines.append(f"- *{m}*: not recorded yet{so_far} (`python -m knlab paper --record {c.id} --model {m}`)")
            continue
        runs.append(run)
        rows += findings_rows(run)
        lines.append(f"- **{m}**: {_provenance(entry, run)}")
    text = "**The record** (full size; each finding's figure with its N and 95% interval, and its outcome " \
           "against the paper's rule):  \n" + "\n".join(lines)
    return text, rows, recorded_figure(c, runs) if runs else None, runs


def live_summary(c: Claim, res) -> str:
    """A live rerun's findings, labelled as such: a small size, where most will be undecided."""
    lines = [f"**Live rerun at a small size** (a check that the claim runs here, not a result: at this size most "
             f"findings are *undecided*; the record above is the result)"]
    for r in res.runs:
        lines.append(f"- **{r.model}** (live, {r.size} {c.unit}, {r.seconds:.0f} s):")
        lines += [f"  - {f.name}: {f.text()}, *{f.outcome}*" for f in r.findings]
    lines += [f"- *{m}*: {why}" for m, why in res.absent.items()]
    return "\n".join(lines) + f"\n\n<small>{SOURCE_NOTE}</small>"


def build_paper_tab(ctx: Context) -> None:
    with gr.Tab("Paper", id="paper"):
        gr.Markdown(
            "Every experiment of the paper (Niu et al., ICLR 2024, and the figures it cites), one claim at a time. "
            "Each claim opens on **the record**: the claim run at full size on the shipped models that fit it "
            "(the paper's BERT experiments on **world-bert**, its GPT-2 / LLaMA-2 ones on the real **smollm2-135m** "
            "and the organism **world-gpt**), each finding with its N, its 95% interval and whether it agrees "
            "with the paper, departs from it, or is undecided at that size; the published figures stand beside "
            "the recorded ones, labelled as the paper's. Each claim's button reruns it **live at a small size** "
            f"(whatever model is picked above), beside the record. The methods and every published figure: "
            f"`{DOCS}` in the repository.")
        size = gr.Number(value=0, label="Size of a live rerun (prompts / facts per item; 0: each claim's default, "
                         "smaller on the real model)", elem_id="paper-size")
        ctx.fields["Paper"] = {}
        for c in CLAIMS:
            with gr.Accordion(f"{c.title} ({c.source})", open=False, elem_id=f"paper-{c.id}") as accordion:
                ctx.fields["Paper"][f"claim:{c.id}"] = accordion
                gr.Markdown(f"**Published ({c.source}):** {c.published}  \n*Runs on:* "
                            f"{', '.join(c.applies_to())} · recorded at size {c.record_size} · live default size "
                            f"{c.size} {c.unit} ({c.real_size} on the real model) · id `{c.id}`")
                text, rows, figure, _runs = record_views(c)
                with gr.Row():
                    with gr.Column():
                        gr.Markdown(text, elem_id=f"paper-{c.id}-record")
                        gr.Dataframe(value=rows, headers=FINDINGS_HEADER, interactive=False, wrap=True,
                                     label="Recorded findings", elem_id=f"paper-{c.id}-record-table")
                        if figure is not None:
                            gr.Plot(value=figure, label="Recorded, beside the paper",
                                    elem_id=f"paper-{c.id}-record-plot")
                    with gr.Column():
                        btn = gr.Button("Rerun live (small size)", size="sm", elem_id=f"paper-{c.id}-button")
                        summary = gr.Markdown(elem_id=f"paper-{c.id}-status")
                        table = gr.Dataframe(headers=LIVE_HEADER, interactive=False, wrap=True,
                                             label="Live rerun (small size)", elem_id=f"paper-{c.id}-table")
                        plot = gr.Plot(label="Live rerun (small size), beside the paper", elem_id=f"paper-{c.id}-plot")
                raw = gr.JSON(visible=False)
                files, code = takeaway_panel(f"paper-{c.id}")

                def run(n, request: gr.Request, progress=gr.Progress(), c=c):
                    progress(0.01, desc=f"rerunning {c.id}")
                    n = whole(n, "size") if n not in (None, "") else 0
                    served: list = []
                    res = ctx.serve_many(rerun, request, c.id, n or None, progress=Progress(progress), served=served)
                    return (with_note(live_summary(c, res), *served) if served else live_summary(c, res),
                            [[r["model"], r["item"], str(r["live"]), str(r["published"])] for r in res.rows],
                            claim_figure(res, "live rerun at a small size"), res.to_json(),
                            *ctx.takeaway(api_name(c.id), res, rerun, None, request, c.id, n or None))

                btn.click(run, [size], [summary, table, plot, raw, files, code], api_name=api_name(c.id))
