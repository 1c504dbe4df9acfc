"""The Lesson tab: the paper's argument in six live steps, for a class or a first visit."""

from __future__ import annotations

import gradio as gr

from knlab.app.context import Context
from knlab.app.plots import attribution_overview, claim_figure, edit_figure, prediction_figure, trace_figure
from knlab.studies.lesson import STEPS, lesson_model


def api_name(number: int) -> str:
    return f"lesson_{number}"


def figure(res):
    """The step's result drawn as its full tab draws it."""
    if res.kind == "prediction":
        return prediction_figure(res.result)
    if res.kind == "trace":
        return trace_figure(res.result)
    if res.kind == "neurons":
        return attribution_overview(res.result.scores, f"{res.model}: integrated gradients for {res.result.target!r}")
    if res.kind == "edit":
        return edit_figure(res.result)
    if res.kind == "claim":
        from types import SimpleNamespace
        return claim_figure(SimpleNamespace(runs=[res.result], title=f"Step {res.step}", source="live"))
    return None


def build_lesson_tab(ctx: Context) -> None:
    model = lesson_model()
    with gr.Tab("Lesson", id="lesson"):
        gr.Markdown(
            "## Where, if anywhere, does a language model keep its knowledge?\n"
            f"Six steps through the argument of Niu et al. (ICLR 2024), each run live on **{model}** "
            + ("(SmolLM2-135M, a real pretrained model)" if model == "smollm2-135m" else
               "(the causal organism: the real model is not installed)")
            + ", whatever model is picked above. Press each step's button in order; each takes seconds to about a "
              "minute. Every step names the tab that does the same with your own inputs.")
        for s in STEPS:
            with gr.Group():
                gr.Markdown(f"### {s.number}. {s.title}\n{s.notice}  \n*The full tool: the **{s.tab}** tab.*")
                btn = gr.Button(f"Run step {s.number} live", elem_id=f"lesson-{s.number}-button")
                status = gr.Markdown(elem_id=f"lesson-{s.number}-status")
                plot = gr.Plot(elem_id=f"lesson-{s.number}-plot")
                raw = gr.JSON(visible=False)

                def run(request: gr.Request, progress=gr.Progress(), s=s):
                    progress(0.05, desc=f"step {s.number} on {model}")
                    res = ctx.serve(s.run, model, request, base=True)
                    verdict = {True: "As the paper reads it.", False: "**Here this model departs from the paper's "
                               "reading** (said plainly: a small model is not GPT-2 XL).", None: ""}[res.agrees]
                    return f"**Live ({res.model}):** {res.summary}  \n{verdict}", figure(res), res.to_json()

                btn.click(run, None, [status, plot, raw], api_name=api_name(s.number))
