"""The Attribute tab: attribution over every layer, suppress / enhance the top neurons, the paradigm chart
and the `neurons` endpoint. Built in named parts: the widgets, the attribution's figures, and one function
per handler wired to them."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np

from knlab.app.context import Context, Progress, takeaway_panel, whole, with_figure_note, with_note
from knlab.app.defaults import defaults_for
from knlab.app.plots import attribution_overview, layer_figure, paradigm_figure
from knlab.core.limits import limits
from knlab.methods.attribute import IG_STEPS, Attribution, attribute
from knlab.methods.intervene import intervene, parse_neurons
from knlab.methods.neurons import select
from knlab.studies import published
from knlab.studies.paradigm_analysis import analyse
from knlab.world.paradigms import paradigm_names

INTERVENTIONS = (("suppress", "Suppress (x0)"), ("enhance", "Enhance (x2)"))


def attribute_defaults(model: str) -> tuple:
    """The Attribute tab's inputs for ``model``: its example prompt, the top prediction as the target, a
    paradigm it can be asked and a number of prompts its first click can afford."""
    d = defaults_for(model)
    return d.prompt, "", d.paradigm, min(d.paradigm_prompts, limits().paradigm_prompts)


@dataclass
class AttributeWidgets:
    """The tab's attribution inputs and outputs, shared by its handlers."""

    prompt: gr.Textbox
    target: gr.Textbox
    steps: gr.Slider
    method: gr.Radio
    tokens: gr.Markdown
    go: gr.Button
    overview: gr.Plot
    layer: gr.Slider
    detail: gr.Plot
    table: gr.Dataframe
    chosen: gr.Textbox
    buttons: dict[str, gr.Button]  # intervention mode -> its button
    effect: gr.Markdown
    scores: gr.State
    raw: gr.JSON
    files: gr.File
    code: gr.Code


def build_attribute_tab(ctx: Context) -> None:
    with gr.Tab("Attribute", id="attribute"):
        w = attribute_widgets(ctx)
        wire_attribution(ctx, w)
        wire_interventions(ctx, w)
        paradigm_chart(ctx, w)
        neurons_endpoint(ctx, w)


def attribute_widgets(ctx: Context) -> AttributeWidgets:
    gr.Markdown("Knowledge-neuron attribution (Dai et al.): integrated gradients of p(target) over every "
                "layer's FFN activation at the prediction position. Then suppress (x0) or enhance (x2) "
                "the top neurons and see what changes.")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", value=defaults_for(ctx.start).prompt, scale=4, elem_id="attr-prompt")
        target = gr.Textbox(label="Target (empty: the top prediction)", value="", scale=2)
        steps = gr.Slider(1, min(100, limits().ig_steps), value=min(IG_STEPS, limits().ig_steps), step=1,
                          label="IG steps", scale=1)
        method = gr.Radio(["ig", "activation"], value="ig", label="Method", scale=1)
    tokens = gr.Markdown(elem_id="attr-tokens")
    go = gr.Button("Attribute", variant="primary", elem_id="attr-button")
    overview = gr.Plot(label="All layers", elem_id="attr-overview")
    layer = gr.Slider(0, 5, value=0, step=1, label="Layer shown at full resolution", elem_id="attr-layer")
    detail = gr.Plot(label="One layer")
    table = gr.Dataframe(headers=["layer", "neuron", "score"], label="Top neurons", interactive=False)
    chosen = gr.Textbox(label="Neurons to intervene on (LAYER:INDEX ...), filled with the top 5",
                        elem_id="attr-neurons")
    with gr.Row():
        buttons = {mode: gr.Button(label, elem_id=f"attr-{mode}") for mode, label in INTERVENTIONS}
    effect = gr.Markdown(elem_id="attr-effect")
    scores = gr.State(None)
    raw = gr.JSON(visible=False)
    files, code = takeaway_panel("attribute")
    return AttributeWidgets(prompt, target, steps, method, tokens, go, overview, layer, detail, table, chosen,
                            buttons, effect, scores, raw, files, code)


def attribution_figures(res: Attribution) -> tuple:
    """What one attribution shows: the all-layer overview, the layer slider moved to the best neuron's layer,
    that layer in full, the top 20 neurons, the top 5 as the neurons to intervene on, the scores kept for
    the slider, and the result as JSON."""
    top = res.top(20)
    title = f"{res.model}: {res.method} attribution of {res.target!r}"
    best_layer = top[0][0] if top else 0
    return (attribution_overview(res.scores, title), gr.update(maximum=res.scores.shape[0] - 1, value=best_layer),
            layer_figure(res.scores, best_layer, title), [[l, i, round(s, 6)] for l, i, s in top],
            " ".join(f"{l}:{i}" for l, i, _ in top[:5]), res.scores, res.to_json())


def wire_attribution(ctx: Context, w: AttributeWidgets) -> None:
    def run(model, prompt, target, steps, method, request: gr.Request, progress=gr.Progress()):
        progress(0.1, desc="integrated gradients over every layer")
        args = (prompt, target or None, whole(steps, 'steps'), method)
        asked = ctx.ask(attribute, model, request, *args)
        res = asked.value
        overview, *rest = attribution_figures(res)
        return (with_figure_note(overview, asked), *rest,
                *ctx.takeaway("attribute", res, attribute, model, request, *args))

    outputs = [w.overview, w.layer, w.detail, w.table, w.chosen, w.scores, w.raw, w.files, w.code]
    w.go.click(run, [ctx.model, w.prompt, w.target, w.steps, w.method], outputs, api_name="attribute")
    ctx.prefill(run, [ctx.model, w.prompt, w.target, w.steps, w.method], outputs)

    def show_layer(scores, l):
        if scores is None:
            return gr.update()
        return layer_figure(np.asarray(scores), int(min(l, len(scores) - 1)), "attribution")

    w.layer.change(show_layer, [w.scores, w.layer], w.detail, api_visibility="private")
    ctx.show_tokens(w.tokens, w.prompt)


def intervention_handler(ctx: Context, mode: str):
    """The click of one intervention button: p(target) and the top tokens before and after."""
    def fn(model, prompt, target, neurons, request: gr.Request):
        args = (prompt, parse_neurons((neurons or "").split()), mode, target or None)
        asked = ctx.ask(intervene, model, request, *args)
        res = asked.value
        b, a = res.before, res.after
        fmt = lambda st: ", ".join(f"{t['token']} {t['prob']:.3f}" for t in st["top"])  # noqa: E731
        return (with_note(f"**{mode}**: p(target) {b['target_prob']:.4f} -> **{a['target_prob']:.4f}**  \n"
                          f"before: {fmt(b)}  \nafter: {fmt(a)}", asked),
                *ctx.takeaway(mode, res, intervene, model, request, *args))
    return fn


def wire_interventions(ctx: Context, w: AttributeWidgets) -> None:
    for mode, btn in w.buttons.items():
        btn.click(intervention_handler(ctx, mode), [ctx.model, w.prompt, w.target, w.chosen],
                  [w.effect, w.files, w.code], api_visibility="private")


def paradigm_chart(ctx: Context, w: AttributeWidgets) -> None:
    """The paper's 24-modifier chart for a grammatical paradigm's shared neurons, beside its published one."""
    with gr.Accordion("Paradigm: the paper's 24-modifier chart", open=False):
        gr.Markdown("Find the neurons shared by a grammatical paradigm's prompts of one target type (singular or "
                    "plural critical word, as the paper's code groups them), suppress them in those prompts and see "
                    "how each of the paper's 24 modifiers changes (relative change of mean probability; * p < 0.05, "
                    "two-sample t-test) and how many grammatical preferences flip. Published (BERT-base, "
                    f"determiner_noun_agreement_2): {published.det_suppression_text()}, at most "
                    f"{published.most_overturned():g}% overturned. A causal model can be asked only the paradigms "
                    "whose critical word comes after the word it agrees with (the _1 determiner paradigms, "
                    "subject-verb, anaphora).")
        with gr.Row():
            start = defaults_for(ctx.start)
            name = gr.Dropdown(paradigm_names(), value=start.paradigm, label="Paradigm", elem_id="paradigm-name")
            n = gr.Slider(4, max(4, limits().paradigm_prompts),
                          value=min(start.paradigm_prompts, limits().paradigm_prompts), step=1, label="Prompts per target type")
            go = gr.Button("Analyse paradigm", elem_id="paradigm-button")
        plot = gr.Plot(elem_id="paradigm-plot")
        raw = gr.JSON(visible=False)
        files, code = takeaway_panel("paradigm")

        def run_paradigm(model, name, n, steps, request: gr.Request, progress=gr.Progress()):
            args = (name, whole(n, 'prompts'), whole(steps, 'steps'))
            asked = ctx.ask(analyse, model, request, *args, progress=Progress(progress))
            res = asked.value
            return (with_figure_note(paradigm_figure(res), asked), res.to_json(),
                    *ctx.takeaway("paradigm", res, analyse, model, request, *args))

        go.click(run_paradigm, [ctx.model, name, n, w.steps], [plot, raw, files, code], api_name="paradigm")
        ctx.fields["Attribute"] = {"prompt": w.prompt, "target": w.target}
        ctx.on_model_choice(attribute_defaults, [w.prompt, w.target, name, n])


def shared_neurons(lm, prompts: list[str], target: str | None, steps: int):
    """The neurons that several paraphrases share (``select`` over each prompt's attribution): a module-level
    function, so that a request for it pickles."""
    return select([attribute(lm, p, target, steps).scores for p in prompts])


def neurons_endpoint(ctx: Context, w: AttributeWidgets) -> None:
    """The `neurons` endpoint of the HTTP API: the neurons shared by several paraphrases (no widget shows)."""
    prompts = gr.Textbox(visible=False)
    out = gr.JSON(visible=False)
    button = gr.Button(visible=False)

    def neurons(model, prompts, target, steps, request: gr.Request):
        lines = [p for p in (prompts or "").splitlines() if p.strip()]
        if not lines:
            raise gr.Error("give one prompt per line", print_exception=False)
        return ctx.serve(shared_neurons, model, request, lines, target or None, whole(steps, 'steps')).to_json()

    button.click(neurons, [ctx.model, prompts, w.target, w.steps], out, api_name="neurons")
