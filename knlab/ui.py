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
from knlab.attribute import attribute
from knlab.intervene import intervene, parse_neurons
from knlab.neurons import select
from knlab.paradigm import analyse
from knlab.plots import (attribution_overview, category_figure, layer_figure, paradigm_figure, prediction_figure,
                         trace_figure)
from knlab.world.paradigms import paradigm_names
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


def build_attribute_tab(ctx: Context) -> None:
    import numpy as np

    with gr.Tab("Attribute", id="attribute"):
        gr.Markdown("Knowledge-neuron attribution (Dai et al.): integrated gradients of p(target) over every "
                    "layer's FFN activation at the prediction position. Then suppress (x0) or enhance (x2) "
                    "the top neurons and see what changes.")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value=EXAMPLES["world-gpt"], scale=4, elem_id="attr-prompt")
            target = gr.Textbox(label="Target (empty: the top prediction)", value="", scale=2)
            steps = gr.Slider(1, 100, value=20, step=1, label="IG steps", scale=1)
            method = gr.Radio(["ig", "activation"], value="ig", label="Method", scale=1)
        go_btn = gr.Button("Attribute", variant="primary", elem_id="attr-button")
        overview = gr.Plot(label="All layers", elem_id="attr-overview")
        layer = gr.Slider(0, 5, value=0, step=1, label="Layer shown at full resolution", elem_id="attr-layer")
        detail = gr.Plot(label="One layer")
        table = gr.Dataframe(headers=["layer", "neuron", "score"], label="Top neurons", interactive=False)
        chosen = gr.Textbox(label="Neurons to intervene on (LAYER:INDEX ...), filled with the top 5",
                            elem_id="attr-neurons")
        with gr.Row():
            suppress = gr.Button("Suppress (x0)", elem_id="attr-suppress")
            enhance = gr.Button("Enhance (x2)", elem_id="attr-enhance")
        effect = gr.Markdown(elem_id="attr-effect")
        scores_state = gr.State(None)
        raw = gr.JSON(visible=False)

        def run(model, prompt, target, steps, method, edits, progress=gr.Progress()):
            progress(0.1, desc="integrated gradients over every layer")
            res = ctx.serve(attribute, model, edits, prompt, target or None, int(steps), method)
            top = res.top(20)
            title = f"{res.model}: {res.method} attribution of {res.target!r}"
            best_layer = top[0][0] if top else 0
            return (attribution_overview(res.scores, title), gr.update(maximum=res.scores.shape[0] - 1, value=best_layer),
                    layer_figure(res.scores, best_layer, title), [[l, i, round(s, 6)] for l, i, s in top],
                    " ".join(f"{l}:{i}" for l, i, _ in top[:5]), res.scores, res.to_json())

        go_btn.click(run, [ctx.model, prompt, target, steps, method, ctx.edits],
                     [overview, layer, detail, table, chosen, scores_state, raw], api_name="attribute")

        def show_layer(scores, l):
            if scores is None:
                return gr.update()
            return layer_figure(np.asarray(scores), int(min(l, len(scores) - 1)), "attribution")

        layer.change(show_layer, [scores_state, layer], detail, api_visibility="private")

        def act(mode):
            def fn(model, prompt, target, neurons, edits):
                res = ctx.serve(intervene, model, edits, prompt, parse_neurons((neurons or "").split()), mode,
                                target or None)
                b, a = res.before, res.after
                fmt = lambda st: ", ".join(f"{t['token']} {t['prob']:.3f}" for t in st["top"])  # noqa: E731
                return (f"**{mode}**: p(target) {b['target_prob']:.4f} -> **{a['target_prob']:.4f}**  \n"
                        f"before: {fmt(b)}  \nafter: {fmt(a)}")
            return fn

        suppress.click(act("suppress"), [ctx.model, prompt, target, chosen, ctx.edits], effect, api_visibility="private")
        enhance.click(act("enhance"), [ctx.model, prompt, target, chosen, ctx.edits], effect, api_visibility="private")

        with gr.Accordion("Paradigm: the paper's 24-modifier chart", open=False):
            gr.Markdown("Find the neurons shared by a grammatical paradigm's prompts, suppress them and see how each "
                        "of the paper's 24 modifiers changes (relative change of mean probability; * p < 0.05, "
                        "two-sample t-test) and how many grammatical preferences flip. Published (BERT-base, "
                        "determiner_noun_agreement_2): this +316%, these -124%, that +208%, those -158%, at most "
                        "5.2% overturned. Use a masked model (world-bert) for determiner paradigms.")
            with gr.Row():
                par_name = gr.Dropdown(paradigm_names(), value="determiner_noun_agreement_2", label="Paradigm")
                par_n = gr.Slider(4, 200, value=40, step=1, label="Prompts")
                par_btn = gr.Button("Analyse paradigm", elem_id="paradigm-button")
            par_plot = gr.Plot(elem_id="paradigm-plot")
            par_json = gr.JSON(visible=False)

            def run_paradigm(model, name, n, steps, edits, progress=gr.Progress()):
                res = ctx.serve(analyse, model, edits, name, int(n), int(steps),
                                progress=lambda f, d="": progress(f, desc=d))
                return paradigm_figure(res), res.to_json()

            par_btn.click(run_paradigm, [ctx.model, par_name, par_n, steps, ctx.edits], [par_plot, par_json],
                          api_name="paradigm")

        # the `neurons` endpoint of the HTTP API: shared neurons of several paraphrases
        prompts_box = gr.Textbox(visible=False)
        neurons_out = gr.JSON(visible=False)
        neurons_btn = gr.Button(visible=False)

        def neurons(model, prompts, target, steps, edits):
            lines = [p for p in (prompts or "").splitlines() if p.strip()]
            if not lines:
                raise gr.Error("give one prompt per line", print_exception=False)
            return ctx.serve(lambda lm: select([attribute(lm, p, target or None, int(steps)).scores
                                                for p in lines]), model, edits).to_json()

        neurons_btn.click(neurons, [ctx.model, prompts_box, target, steps, ctx.edits], neurons_out, api_name="neurons")


TABS: list[Callable[[Context], None]] = [build_predict_tab, build_attribute_tab, build_trace_tab]


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
