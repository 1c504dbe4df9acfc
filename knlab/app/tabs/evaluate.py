"""The Evaluate tab."""

from __future__ import annotations

import gradio as gr

from knlab.app.context import Context, Progress, edit_method_choice, takeaway_panel, whole, with_note
from knlab.app.defaults import defaults_for
from knlab.app.plots import evaluation_figure
from knlab.core.limits import limits
from knlab.studies.relation_evaluation import TABLE_RELATIONS, evaluate_relation
from knlab.world import facts as F


def evaluate_defaults(model: str) -> tuple:
    """The Evaluate tab's method (ROME only on a causal model) and how many facts a first click edits."""
    d = defaults_for(model)
    return (edit_method_choice(model),
            min(d.evaluate_facts, limits().evaluate_facts))


def build_evaluate_tab(ctx: Context) -> None:

    with gr.Tab("Evaluate", id="evaluate"):
        gr.Markdown("The paper's Table 1 on the loaded model: edit every fact of a relation **on its own** (the "
                    "model is restored after each), with the new object taken from another fact of the relation, "
                    "and count how often each criterion holds. Runs on the base model, not on your edits. "
                    "Beside it: the paper's published numbers for GPT-2 XL and LLaMA-2-7B (ROME), labelled as such.")
        with gr.Row():
            start = defaults_for(ctx.start)
            method = gr.Radio(list(start.edit_methods), value=start.edit_method, label="Method",
                              info=start.note or None, elem_id="evaluate-method")
            relation = gr.Dropdown(list(TABLE_RELATIONS) + [r for r in F.relations() if r not in TABLE_RELATIONS],
                                   value="P36", label="Relation")
            limit = gr.Slider(1, limits().evaluate_facts, value=min(start.evaluate_facts, limits().evaluate_facts), step=1,
                              label="Facts (the first N)")
        go_btn = gr.Button("Evaluate", variant="primary", elem_id="evaluate-button")
        status = gr.Markdown(elem_id="evaluate-status")
        table = gr.Dataframe(headers=["criterion", "live %", "holds / probes", "paper: GPT-2 XL", "paper: LLaMA-2-7B"],
                             label="Live (this model) vs published (the paper)", interactive=False,
                             elem_id="evaluate-table")
        plot = gr.Plot(elem_id="evaluate-plot")
        raw = gr.JSON(visible=False)
        files, code = takeaway_panel("evaluate")

        def run(model, method, relation, limit, request: gr.Request, progress=gr.Progress()):
            progress(0.02, desc="editing facts one at a time")
            args = (method, relation, whole(limit, 'facts'))
            asked = ctx.ask(evaluate_relation, model, request, *args, base=True, progress=Progress(progress))
            res = asked.value
            data = res.to_json()
            pub = data["published"]
            rows = []
            for c, v in res.rates.items():
                if v is None:
                    continue
                k, n = res.counts[c]
                rows.append([c, round(100 * v, 2), f"{k}/{n}", pub.get("GPT-2 XL", {}).get(c, ""),
                             pub.get("LLaMA-2-7B", {}).get(c, "")])
            note = f"  \n{pub['note']}" if "note" in pub else ""
            msg = (f"**{res.method.upper()} on {res.relation}**: {res.n} facts edited ({len(res.skipped)} skipped: "
                   f"the model got them wrong before editing) in {res.seconds:.0f} s.{note}")
            return (with_note(msg, asked), rows, evaluation_figure(res), data,
                    *ctx.takeaway("evaluate", res, evaluate_relation, model, request, *args, base=True))

        go_btn.click(run, [ctx.model, method, relation, limit], [status, table, plot, raw, files, code],
                     api_name="evaluate")
        ctx.prefill(run, [ctx.model, method, relation, limit], [status, table, plot, raw, files, code])
        ctx.on_model_choice(evaluate_defaults, [method, limit])
