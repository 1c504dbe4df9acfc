"""The Lesson tab: the paper's argument in six live steps and a seventh from after it, for a class or a first
visit."""

from __future__ import annotations

import gradio as gr

from knlab.app.context import Context, takeaway_panel, with_note
from knlab.app.plots import (attribution_overview, edit_figure, prediction_figure, runs_figure, sweep_figure,
                             trace_figure)
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
    if res.kind == "sweep":
        return sweep_figure(res.result)
    if res.kind == "claim":  # the record's run of the claim the step cites (None: not recorded yet)
        return runs_figure([res.result], f"Step {res.step}: the record, full size, beside the paper") \
            if res.result is not None else None
    return None


def verdict(res) -> str:
    """The step's verdict line: the example's own in steps 1-3; in steps 4-6 the record's (its findings
    and outcomes are in the summary), and none where the record is undecided or absent."""
    if "recorded" in res.detail:
        return {True: "On the record, as the paper reads it.", False: "**On the record, this model departs from "
                "the paper's reading** (said plainly: a small model is not GPT-2 XL).",
                None: "No verdict: the record is undecided at its size, or has no run yet."}[res.agrees]
    return {True: "As the paper reads it.", False: "**Here this model departs from the paper's reading** (said "
            "plainly: a small model is not GPT-2 XL).", None: ""}[res.agrees]


def open_in_tab(ctx: Context, s, button: gr.Button, model: str) -> None:
    """Wire ``button`` to show step ``s``'s tab with the step's inputs filled in (and the lesson's model in the
    header, where the header offers it): a Paper step opens its claim. Run once every tab is built."""
    fields, values = ctx.fields[s.tab], s.inputs(model)
    tab = gr.update(selected=s.tab.lower())  # an update, not a gr.Tabs(...): that would add a tab bar here
    if s.tab == "Paper":
        button.click(lambda: (tab, gr.update(open=True)), None, [ctx.tabs, fields[f"claim:{values['claim']}"]],
                     api_visibility="private")
        return
    offered = {c[1] if isinstance(c, tuple) else c for c in (ctx.model.choices or [])}
    inputs: dict = {}
    if model in offered:  # the lesson's model in the header and every tab's inputs for it, then the step's own
        inputs = {ctx.model: model, **ctx.defaults_for_all(model)}
    for k, v in values.items():  # a default that also sets choices (the edit method) keeps them
        old = inputs.get(fields[k])
        inputs[fields[k]] = {**old, "value": v} if isinstance(old, dict) else v
    button.click(lambda: {ctx.tabs: tab, **inputs}, None, [ctx.tabs, *inputs], api_visibility="private")


def build_lesson_tab(ctx: Context) -> None:
    model = lesson_model()
    with gr.Tab("Lesson", id="lesson"):
        gr.Markdown(
            "## Where, if anywhere, does a language model keep its knowledge?\n"
            "Six steps through the argument of Niu et al. (ICLR 2024) and a seventh from after it, each run live "
            f"on **{model}** "
            + ("(SmolLM2-135M, a real pretrained model)" if model == "smollm2-135m" else
               "(the causal organism: the real model is not installed)")
            + ", whatever model is picked above. Press each step's button in order: computed once (seconds to about "
              "a minute on 2 cores), a step's answer is served to everyone after, and the page shows each step's "
              "answer as soon as the app has computed it after starting. Each step's second button opens the tab "
              "that does the same, filled in with the step's inputs, for you to change and go on.")
        for s in STEPS:
            with gr.Group():
                gr.Markdown(f"### {s.number}. {s.title}\n{s.notice}")
                with gr.Row():
                    btn = gr.Button(f"Run step {s.number} live", elem_id=f"lesson-{s.number}-button")
                    go = gr.Button(f"Open the {s.tab} tab with this step's inputs", elem_id=f"lesson-{s.number}-open")
                ctx.after_build.append(lambda s=s, go=go: open_in_tab(ctx, s, go, model))
                status = gr.Markdown(elem_id=f"lesson-{s.number}-status")
                plot = gr.Plot(elem_id=f"lesson-{s.number}-plot")
                raw = gr.JSON(visible=False)
                files, code = takeaway_panel(f"lesson-{s.number}")

                def run(request: gr.Request, progress=gr.Progress(), s=s):
                    progress(0.05, desc=f"step {s.number} on {model}")
                    asked = ctx.ask(s.run, model, request, base=True)
                    res = asked.value
                    return (with_note(f"**Live ({res.model}):** {res.summary}  \n{verdict(res)}", asked), figure(res),
                            res.to_json(),
                            *ctx.takeaway(api_name(s.number), res, s.run, model, request, base=True))

                btn.click(ctx.reused(run), None, [status, plot, raw, files, code], api_name=api_name(s.number))
                ctx.prefill(run, [], [status, plot, raw, files, code])
