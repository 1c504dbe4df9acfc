"""The Gradio app: widgets wired to knlab's functions (through the shared model worker) and plots.

Each tab is a module of ``knlab.app.tabs`` whose ``build_*_tab(ctx)`` lays it out; ``TABS`` lists them in
order. Every handler goes through ``Context.serve`` (``knlab.app.context``), which turns knlab's clear errors
into a message in the UI (never a traceback) and runs the request with this browser session's edits.
"""

from __future__ import annotations

import os
from typing import Callable

import gradio as gr

from knlab.app import example_record
from knlab.app.context import Context
from knlab.app.tabs.attribute import build_attribute_tab
from knlab.app.tabs.edit import build_edit_tab
from knlab.app.tabs.evaluate import build_evaluate_tab
from knlab.app.tabs.lesson import build_lesson_tab
from knlab.app.tabs.paper import build_paper_tab
from knlab.app.tabs.predict import build_predict_tab
from knlab.app.tabs.trace import build_trace_tab
from knlab.core.limits import describe as describe_limits
from knlab.core.limits import hosted
from knlab.core.models import SHIPPED_MODELS, default_model, shipped_installed
from knlab.serve.dispatch import zero_gpu
from knlab.serve.hosting import allowed_models
from knlab.serve.worker import ModelWorker, default_worker


def start_model() -> str:
    """The model the app opens with: ``KNLAB_DEFAULT_MODEL``, else the real model when it is installed."""
    return os.environ.get("KNLAB_DEFAULT_MODEL", "").strip() or default_model()


def model_choices(names) -> list[tuple[str, str]]:
    """(label, name) pairs: each shipped model labelled with what it is for."""
    return [(f"{n} — {SHIPPED_MODELS[n].purpose}" if n in SHIPPED_MODELS else n, n) for n in names]


TABS: list[Callable[[Context], None]] = [build_lesson_tab, build_predict_tab, build_attribute_tab, build_trace_tab, build_edit_tab,
                                         build_evaluate_tab, build_paper_tab]


WARM_ENV = "KNLAB_WARM"


def examples_wanted() -> bool:
    """``KNLAB_WARM`` (default on): whether pages open with their examples' results, and the app computes them."""
    return os.environ.get(WARM_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def warm_wanted(choice: bool | None = None) -> bool:
    """Whether the app computes its examples into the result cache after it starts: ``choice``, else
    ``examples_wanted``; never on ZeroGPU (each GPU call spends a visitor's quota)."""
    return (examples_wanted() if choice is None else choice) and not zero_gpu()


def recorded_examples(start: str) -> dict | None:
    """The examples' outputs recorded at release for a page opening on ``start`` (``knlab.app.example_record``),
    when they were made on the models this app's examples run on (the Lesson's model and ``start``)."""
    from knlab.studies.lesson import lesson_model
    rec = example_record.read(example_record.path_for(start))
    return rec if rec and rec.get("models") == sorted({start, lesson_model()}) else None


def build_app(worker: ModelWorker | None = None, warm: bool | None = False, examples: bool | None = None) -> gr.Blocks:
    """The app on ``worker`` (default: the default worker, with its result cache). ``examples``: pages open with
    every tab's and the Lesson's default example shown when the cache holds it (None: ``examples_wanted``).
    ``warm``: compute those examples into the cache in a background thread after the page is built (None:
    ``warm_wanted``; ``python app.py`` passes None)."""
    worker = worker or default_worker()
    if zero_gpu():  # load every model now, in the main thread, so that ZeroGPU packs their weights
        worker.second_copy = False  # concurrent requests run in separate GPU processes (serve.worker)
        worker.preload(allowed_models() if hosted() else shipped_installed())
    with gr.Blocks(title="knlab") as app:
        gr.Markdown("# knlab\nWhere, if anywhere, does a language model keep its knowledge? "
                    "Knowledge neurons, causal tracing and model editing, side by side on one model.")
        gr.Markdown(describe_limits(), elem_id="limits")
        with gr.Row():
            if hosted():
                names = list(allowed_models())
                start = start_model() if start_model() in names else names[0]
                model = gr.Dropdown(model_choices(names), value=start, allow_custom_value=False,
                                    label="Model", elem_id="model")
            else:
                start = start_model()
                model = gr.Dropdown(model_choices(shipped_installed()), value=start, allow_custom_value=True,
                                    label="Model", elem_id="model",
                                    info="a shipped model, or a Hugging Face model id / local path" +
                                    ("" if "smollm2-135m" in shipped_installed() else
                                     " (the real model smollm2-135m is not installed: see the README)"))
        ctx = Context(worker, model, start=start)
        with gr.Tabs() as ctx.tabs:
            for build in TABS:
                build(ctx)
        for wire in ctx.after_build:
            wire()
        for fn, inputs, outputs in ctx.on_load:
            app.load(fn, inputs, outputs, api_visibility="private")
        shown = examples_wanted() if examples is None else examples
        if shown:  # each example's result: from the cache, else as recorded at release
            ctx.recorded = recorded_examples(start)
        for handler, inputs, outputs in ctx.examples if shown else ():
            app.load(ctx.opened(handler, inputs, outputs), inputs, outputs, api_visibility="private", show_progress="hidden")
        status_btn, status_out = gr.Button(visible=False), gr.JSON(visible=False)
        status_btn.click(lambda: {**worker.status(), "warming": ctx.warming(), "rendered": ctx.rendered_report()}, None,
                         status_out, api_name="status")
    app.knlab_context = ctx  # the tabs' shared state, for tests and for code that extends the app
    if worker.cache is not None and (examples is not False) and warm_wanted(warm):
        ctx.warm_in_background()  # after the page is built: it never delays one
    return app
