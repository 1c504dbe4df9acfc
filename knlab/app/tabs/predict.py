"""The Predict tab."""

from __future__ import annotations

import gradio as gr

from knlab.app.context import Context, takeaway_panel, whole, with_figure_note
from knlab.app.defaults import DEFAULTS, defaults_for
from knlab.app.plots import prediction_figure
from knlab.methods.predict import predict
from knlab.serve.worker import INTERACTIVE


def build_predict_tab(ctx: Context) -> None:
    with gr.Tab("Predict", id="predict"):
        gr.Markdown("What does the model say next? For a masked model (world-bert), put one `[MASK]` in the prompt.")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value=defaults_for(ctx.start).prompt, scale=4, elem_id="predict-prompt")
            top = gr.Slider(1, 20, value=10, step=1, label="Top k", scale=1)
        tokens = gr.Markdown(elem_id="predict-tokens")
        go_btn = gr.Button("Predict", variant="primary", elem_id="predict-button")
        plot = gr.Plot(label="Prediction", elem_id="predict-plot")
        raw = gr.JSON(label="Result", visible=True)
        files, code = takeaway_panel("predict")

        def run(model: str, prompt: str, top: float, request: gr.Request):
            args = (prompt, whole(top, 'top'))
            asked = ctx.ask(predict, model, request, *args, lane=INTERACTIVE)
            pred = asked.value
            return (with_figure_note(prediction_figure(pred), asked), pred.to_json(),
                    *ctx.takeaway("predict", pred, predict, model, request, *args))

        go_btn.click(run, [ctx.model, prompt, top], [plot, raw, files, code], api_name="predict")
        ctx.prefill(run, [ctx.model, prompt, top], [plot, raw, files, code])
        prompt.submit(run, [ctx.model, prompt, top], [plot, raw, files, code], api_visibility="private")
        ctx.on_model_choice(lambda m: defaults_for(m).prompt if m in DEFAULTS else gr.update(), [prompt])
        ctx.fields["Predict"] = {"prompt": prompt}
        ctx.show_tokens(tokens, prompt)
