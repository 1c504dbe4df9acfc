"""The Paper tab: every experiment of the paper as a claim, rerun live on the shipped models that fit it."""

from __future__ import annotations

import gradio as gr

from knlab.app.context import Context, takeaway_panel, whole
from knlab.app.plots import claim_figure
from knlab.studies.paper import CLAIMS, SOURCE_NOTE, rerun

DOCS = "docs/paper.md"


def api_name(claim_id: str) -> str:
    """The HTTP API endpoint of a claim: /paper_<id with underscores>."""
    return f"paper_{claim_id.replace('-', '_')}"


def build_paper_tab(ctx: Context) -> None:
    with gr.Tab("Paper", id="paper"):
        gr.Markdown(
            "Every experiment of the paper (Niu et al., ICLR 2024, and the figures it cites), one claim at a time. "
            "Each button reruns the claim live on the shipped models that fit it, whatever model is picked above: "
            "the paper's BERT experiments on **world-bert**, its GPT-2 / LLaMA-2 ones on the real **smollm2-135m** "
            "and the organism **world-gpt** side by side. The published figures stand beside the live ones, "
            f"labelled as the paper's. The methods and every published figure: `{DOCS}` in the repository.")
        size = gr.Number(value=0, label="Size (prompts / facts per item; 0: each claim's default, "
                         "smaller on the real model)", elem_id="paper-size")
        ctx.fields["Paper"] = {}
        for c in CLAIMS:
            with gr.Accordion(f"{c.title} ({c.source})", open=False, elem_id=f"paper-{c.id}") as accordion:
                ctx.fields["Paper"][f"claim:{c.id}"] = accordion
                gr.Markdown(f"**Published ({c.source}):** {c.published}  \n*Runs on:* "
                            f"{', '.join(c.applies_to())} · default size {c.size} {c.unit} "
                            f"({c.real_size} on the real model) · id `{c.id}`")
                btn = gr.Button("Rerun live", elem_id=f"paper-{c.id}-button")
                summary = gr.Markdown(elem_id=f"paper-{c.id}-status")
                table = gr.Dataframe(headers=["model", "figure", "live", "published (paper)"], interactive=False,
                                     wrap=True, elem_id=f"paper-{c.id}-table")
                plot = gr.Plot(elem_id=f"paper-{c.id}-plot")
                raw = gr.JSON(visible=False)
                files, code = takeaway_panel(f"paper-{c.id}")

                def run(n, request: gr.Request, progress=gr.Progress(), c=c):
                    progress(0.01, desc=f"rerunning {c.id}")
                    n = whole(n, "size") if n not in (None, "") else 0
                    res = ctx.serve_many(rerun, request, c.id, n or None,
                                         progress=lambda f, d="": progress(f, desc=d))
                    lines = [f"- **{r.model}** ({r.size} {c.unit}, {r.seconds:.0f} s): {r.finding}" for r in res.runs]
                    lines += [f"- *{m}*: {why}" for m, why in res.absent.items()]
                    return ("\n".join(lines) + f"\n\n<small>{SOURCE_NOTE}</small>",
                            [[r["model"], r["item"], str(r["live"]), str(r["published"])] for r in res.rows],
                            claim_figure(res), res.to_json(),
                            *ctx.takeaway(api_name(c.id), res, rerun, None, request, c.id, n or None))

                btn.click(run, [size], [summary, table, plot, raw, files, code], api_name=api_name(c.id))
