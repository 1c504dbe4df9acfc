"""The Gradio app: widgets wired to knlab's functions (through the shared model worker) and plots.

Each tab is one ``build_*_tab`` function registered in ``TABS``; later tabs (Attribute, Trace, Edit,
Evaluate) slot in the same way. Every handler goes through ``_serve``, which turns knlab's clear errors
into a message in the UI (never a traceback) and runs the request with this browser session's edits.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import gradio as gr

from knlab.errors import KnlabError
from knlab.plots import category_figure, prediction_figure, trace_figure
from knlab.predict import predict
from knlab.trace import guess_subject, summarize, trace
from knlab.worker import ModelWorker, default_worker, gpu

log = logging.getLogger("knlab.ui")
SHIPPED_CHOICES = ["world-gpt", "world-bert"]
EXAMPLES = {"world-gpt": "The capital of Canada is", "world-bert": "The capital of Canada is [MASK] ."}


class Context:
    """What every tab needs: the worker, the model picker and the per-session edit list."""

    def __init__(self, worker: ModelWorker, model: gr.Dropdown, edits: gr.State):
        self.worker = worker
        self.model = model
        self.edits = edits

    def serve(self, fn: Callable[..., Any], model: str, edits: list | None, *args: Any, **kwargs: Any) -> Any:
        try:
            return _request(self.worker, model, edits or [], fn, *args, **kwargs)
        except KnlabError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # a bug: log it with the traceback, show the user one line
            log.exception("request failed")
            raise gr.Error(f"internal error ({type(e).__name__}); the model is unchanged", print_exception=False) from None


@gpu
def _request(worker: ModelWorker, model: str, edits: list, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return worker.run(model, edits, fn, *args, **kwargs)


def build_predict_tab(ctx: Context) -> None:
    with gr.Tab("Predict", id="predict"):
        gr.Markdown("What does the model say next? For a masked model (world-bert), put one `[MASK]` in the prompt.")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value=EXAMPLES["world-gpt"], scale=4, elem_id="predict-prompt")
            top = gr.Slider(1, 20, value=10, step=1, label="Top k", scale=1)
        go_btn = gr.Button("Predict", variant="primary", elem_id="predict-button")
        plot = gr.Plot(label="Prediction", elem_id="predict-plot")
        raw = gr.JSON(label="Result", visible=True)

        def run(model: str, prompt: str, top: float, edits: list):
            pred = ctx.serve(predict, model, edits, prompt, int(top))
            return prediction_figure(pred), pred.to_json()

        go_btn.click(run, [ctx.model, prompt, top, ctx.edits], [plot, raw], api_name="predict")
        prompt.submit(run, [ctx.model, prompt, top, ctx.edits], [plot, raw], api_visibility="private")
        ctx.model.change(lambda m: EXAMPLES.get(m, gr.update()), ctx.model, prompt, api_visibility="private")


def build_trace_tab(ctx: Context) -> None:
    with gr.Tab("Trace", id="trace"):
        gr.Markdown("Causal tracing (Meng et al.): corrupt the subject's embeddings with noise, then restore one "
                    "clean state at a time and see how much of p(answer) comes back. Subject tokens are marked *.")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value=EXAMPLES["world-gpt"], scale=3, elem_id="trace-prompt")
            subject = gr.Textbox(label="Subject (as in the prompt)", value=guess_subject(EXAMPLES["world-gpt"]),
                                 scale=2, elem_id="trace-subject")
            answer = gr.Textbox(label="Answer (empty: the clean top prediction)", value="", scale=2)
        with gr.Accordion("Parameters (published defaults)", open=False):
            with gr.Row():
                samples = gr.Slider(1, 50, value=10, step=1, label="Noise samples")
                window = gr.Slider(1, 20, value=10, step=1, label="Window (MLP / attention)")
                noise = gr.Textbox(value="3sd", label="Noise: '3sd' (x embedding std) or a number")
                seed = gr.Number(value=0, precision=0, label="Seed")
        go_btn = gr.Button("Trace", variant="primary", elem_id="trace-button")
        status = gr.Markdown(elem_id="trace-status")
        plot = gr.Plot(label="Causal trace", elem_id="trace-plot")
        cats = gr.Plot(label="Indirect effect by token category", elem_id="trace-categories")
        raw = gr.JSON(label="Result", visible=False)

        def run(model, prompt, subject, answer, samples, window, noise, seed, edits, progress=gr.Progress()):
            progress(0.05, desc="tracing (clean run, then all corrupted runs in batches)")
            res = ctx.serve(trace, model, edits, prompt, subject, answer or None, int(samples), int(window),
                            noise, int(seed or 0),
                            progress=lambda f: progress(0.05 + 0.9 * f, desc="restoring clean states"))
            progress(0.95, desc="drawing")
            msg = (f"**p({res.answer})**: clean **{res.clean:.3f}**, subject corrupted **{res.corrupted:.3f}** "
                   f"(noise std {res.noise:.3g}, {res.samples} samples). Best hidden-state restore: "
                   f"**{res.grids['hidden'].max():.3f}** at token *{res.tokens[int(res.grids['hidden'].max(1).argmax())].strip()}*.")
            return msg, trace_figure(res), category_figure(summarize([res], "this prompt")), res.to_json()

        inputs = [ctx.model, prompt, subject, answer, samples, window, noise, seed, ctx.edits]
        go_btn.click(run, inputs, [status, plot, cats, raw], api_name="trace")
        prompt.blur(lambda p: guess_subject(p), prompt, subject, api_visibility="private")


TABS: list[Callable[[Context], None]] = [build_predict_tab, build_trace_tab]


def build_app(worker: ModelWorker | None = None) -> gr.Blocks:
    worker = worker or default_worker()
    with gr.Blocks(title="knlab") as app:
        gr.Markdown("# knlab\nWhere, if anywhere, does a language model keep its knowledge? "
                    "Knowledge neurons, causal tracing and model editing, side by side on one model.")
        with gr.Row():
            model = gr.Dropdown(SHIPPED_CHOICES, value="world-gpt", allow_custom_value=True, label="Model",
                                info="a shipped model, or a Hugging Face model id / local path", elem_id="model")
        edits = gr.State([])
        ctx = Context(worker, model, edits)
        with gr.Tabs():
            for build in TABS:
                build(ctx)
    return app
