"""The Attribute tab."""

from __future__ import annotations

import gradio as gr

from knlab.app.context import Context, example, takeaway_panel, whole
from knlab.app.defaults import defaults_for
from knlab.app.plots import attribution_overview, layer_figure, paradigm_figure
from knlab.core.limits import limits
from knlab.methods.attribute import attribute
from knlab.methods.intervene import intervene, parse_neurons
from knlab.methods.neurons import select
from knlab.studies.paradigm import analyse
from knlab.world.paradigms import paradigm_names


def attribute_defaults(model: str) -> tuple:
    """The Attribute tab's inputs for ``model``: its example prompt, the top prediction as the target, a
    paradigm it can be asked and a number of prompts its first click can afford."""
    d = defaults_for(model)
    return d.prompt, "", d.paradigm, min(d.paradigm_prompts, limits().paradigm_prompts)


def build_attribute_tab(ctx: Context) -> None:
    import numpy as np

    with gr.Tab("Attribute", id="attribute"):
        gr.Markdown("Knowledge-neuron attribution (Dai et al.): integrated gradients of p(target) over every "
                    "layer's FFN activation at the prediction position. Then suppress (x0) or enhance (x2) "
                    "the top neurons and see what changes.")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value=example(ctx.start), scale=4, elem_id="attr-prompt")
            target = gr.Textbox(label="Target (empty: the top prediction)", value="", scale=2)
            steps = gr.Slider(1, min(100, limits().ig_steps), value=min(20, limits().ig_steps), step=1, label="IG steps", scale=1)
            method = gr.Radio(["ig", "activation"], value="ig", label="Method", scale=1)
        tokens = gr.Markdown(elem_id="attr-tokens")
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
        files, code = takeaway_panel("attribute")

        def run(model, prompt, target, steps, method, request: gr.Request, progress=gr.Progress()):
            progress(0.1, desc="integrated gradients over every layer")
            args = (prompt, target or None, whole(steps, 'steps'), method)
            res = ctx.serve(attribute, model, request, *args)
            top = res.top(20)
            title = f"{res.model}: {res.method} attribution of {res.target!r}"
            best_layer = top[0][0] if top else 0
            return (attribution_overview(res.scores, title), gr.update(maximum=res.scores.shape[0] - 1, value=best_layer),
                    layer_figure(res.scores, best_layer, title), [[l, i, round(s, 6)] for l, i, s in top],
                    " ".join(f"{l}:{i}" for l, i, _ in top[:5]), res.scores, res.to_json(),
                    *ctx.takeaway("attribute", res, attribute, model, request, *args))

        go_btn.click(run, [ctx.model, prompt, target, steps, method],
                     [overview, layer, detail, table, chosen, scores_state, raw, files, code], api_name="attribute")

        def show_layer(scores, l):
            if scores is None:
                return gr.update()
            return layer_figure(np.asarray(scores), int(min(l, len(scores) - 1)), "attribution")

        layer.change(show_layer, [scores_state, layer], detail, api_visibility="private")
        ctx.show_tokens(tokens, prompt)

        def act(mode):
            def fn(model, prompt, target, neurons, request: gr.Request):
                args = (prompt, parse_neurons((neurons or "").split()), mode, target or None)
                res = ctx.serve(intervene, model, request, *args)
                b, a = res.before, res.after
                fmt = lambda st: ", ".join(f"{t['token']} {t['prob']:.3f}" for t in st["top"])  # noqa: E731
                return (f"**{mode}**: p(target) {b['target_prob']:.4f} -> **{a['target_prob']:.4f}**  \n"
                        f"before: {fmt(b)}  \nafter: {fmt(a)}", *ctx.takeaway(mode, res, intervene, model, request, *args))
            return fn

        for btn, mode in ((suppress, "suppress"), (enhance, "enhance")):
            btn.click(act(mode), [ctx.model, prompt, target, chosen], [effect, files, code], api_visibility="private")

        with gr.Accordion("Paradigm: the paper's 24-modifier chart", open=False):
            gr.Markdown("Find the neurons shared by a grammatical paradigm's prompts, suppress them and see how each "
                        "of the paper's 24 modifiers changes (relative change of mean probability; * p < 0.05, "
                        "two-sample t-test) and how many grammatical preferences flip. Published (BERT-base, "
                        "determiner_noun_agreement_2): this +316%, these -124%, that +208%, those -158%, at most "
                        "5.2% overturned. A causal model can be asked only the paradigms whose critical word comes after "
                        "the word it agrees with (the _1 determiner paradigms, subject-verb, anaphora).")
            with gr.Row():
                start = defaults_for(ctx.start)
                par_name = gr.Dropdown(paradigm_names(), value=start.paradigm, label="Paradigm",
                                       elem_id="paradigm-name")
                par_n = gr.Slider(4, max(4, limits().paradigm_prompts),
                                  value=min(start.paradigm_prompts, limits().paradigm_prompts), step=1, label="Prompts")
                par_btn = gr.Button("Analyse paradigm", elem_id="paradigm-button")
            par_plot = gr.Plot(elem_id="paradigm-plot")
            par_json = gr.JSON(visible=False)
            par_files, par_code = takeaway_panel("paradigm")

            def run_paradigm(model, name, n, steps, request: gr.Request, progress=gr.Progress()):
                args = (name, whole(n, 'prompts'), whole(steps, 'steps'))
                res = ctx.serve(analyse, model, request, *args, progress=lambda f, d="": progress(f, desc=d))
                return paradigm_figure(res), res.to_json(), *ctx.takeaway("paradigm", res, analyse, model, request, *args)

            par_btn.click(run_paradigm, [ctx.model, par_name, par_n, steps], [par_plot, par_json, par_files, par_code],
                          api_name="paradigm")
            ctx.fields["Attribute"] = {"prompt": prompt, "target": target}
            ctx.on_model_choice(attribute_defaults, [prompt, target, par_name, par_n])

        # the `neurons` endpoint of the HTTP API: shared neurons of several paraphrases
        prompts_box = gr.Textbox(visible=False)
        neurons_out = gr.JSON(visible=False)
        neurons_btn = gr.Button(visible=False)

        def neurons(model, prompts, target, steps, request: gr.Request):
            lines = [p for p in (prompts or "").splitlines() if p.strip()]
            if not lines:
                raise gr.Error("give one prompt per line", print_exception=False)
            return ctx.serve(lambda lm: select([attribute(lm, p, target or None, whole(steps, 'steps')).scores
                                                for p in lines]), model, request).to_json()

        neurons_btn.click(neurons, [ctx.model, prompts_box, target, steps], neurons_out, api_name="neurons")
