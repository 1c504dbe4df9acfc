"""The Trace tab."""

from __future__ import annotations

import gradio as gr

from knlab.app.context import Context, Progress, takeaway_panel, whole, with_note
from knlab.app.defaults import DEFAULTS, defaults_for
from knlab.app.plots import category_figure, knockout_figure, trace_figure
from knlab.core.limits import limits
from knlab.methods.knockout import knockout
from knlab.methods.patching import patch_estimate
from knlab.methods.trace import trace
from knlab.serve.worker import INTERACTIVE
from knlab.studies.known_facts import pick_replacement
from knlab.studies.trace_summary import summarize, trace_prompt
from knlab.world.facts import guess_subject


def build_trace_tab(ctx: Context) -> None:
    with gr.Tab("Trace", id="trace"):
        gr.Markdown("Causal tracing (Meng et al.): corrupt the subject's embeddings with noise, then restore one "
                    "clean state at a time and see how much of p(answer) comes back. Subject tokens are marked *.")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value=defaults_for(ctx.start).prompt, scale=3, elem_id="trace-prompt")
            subject = gr.Textbox(label="Subject (as in the prompt)", value=defaults_for(ctx.start).subject,
                                 scale=2, elem_id="trace-subject")
            answer = gr.Textbox(label="Answer (empty: the clean top prediction)", value="", scale=2)
        with gr.Accordion("Parameters (published defaults)", open=False):
            with gr.Row():
                samples = gr.Slider(1, min(50, limits().trace_samples), value=min(10, limits().trace_samples), step=1, label="Noise samples")
                window = gr.Slider(0, 20, value=0, step=1,
                                   label="Window (MLP / attention; 0: a fifth of the depth, as 10 of GPT-2 XL's 48)")
                noise = gr.Textbox(value="3sd", label="Noise: '3sd' (x embedding std) or a number")
                seed = gr.Number(value=0, precision=0, label="Seed")
            with gr.Row():  # Zhang & Nanda (ICLR 2024): what the trace finds depends on both
                corruption = gr.Radio(["noise", "replace"], value="noise", elem_id="trace-corruption",
                                      label="Corruption: Gaussian noise, or the subject replaced by another of the "
                                            "same token length (symmetric token replacement)")
                replacement = gr.Textbox(value="", label="Replacement subject (empty: one the model knows for "
                                                         "the same relation)", elem_id="trace-replacement")
                metric = gr.Radio(["prob", "logit_diff"], value="prob", elem_id="trace-metric",
                                  label="Metric: p(answer), or its logit minus the corrupted run's answer's")
        tokens = gr.Markdown(elem_id="trace-tokens")
        go_btn = gr.Button("Trace", variant="primary", elem_id="trace-button")
        status = gr.Markdown(elem_id="trace-status")
        plot = gr.Plot(label="Causal trace", elem_id="trace-plot")
        cats = gr.Plot(label="Indirect effect by token category", elem_id="trace-categories")
        knock = gr.Plot(label="Attention knockout (Geva et al. 2023): where the answer leaves the subject",
                        elem_id="trace-knockout")
        raw = gr.JSON(label="Result", visible=False)
        files, code = takeaway_panel("trace")

        def chosen(res) -> dict:
            """The trace's non-default choices, as the Python call that reproduces it passes them."""
            if res.corruption == "noise" and res.metric == "prob":
                return {}
            return dict(corruption=res.corruption, replacement=res.replacement, metric=res.metric)

        def run(model, prompt, subject, answer, samples, window, noise, seed, preview, corruption, replacement, metric,
                request: gr.Request, progress=gr.Progress()):
            args = (prompt, subject, answer or None, whole(samples, 'samples'), whole(window, 'window') or None,
                    noise, whole(seed or 0, 'seed'))
            choices = dict(corruption=corruption or "noise", replacement=replacement or None, metric=metric or "prob")
            if preview:  # drawn at once; the exact grid replaces it. The same corrupted run and metric
                if choices["corruption"] == "replace" and not choices["replacement"]:
                    choices["replacement"] = ctx.serve(pick_replacement, model, request, prompt, subject,
                                                       lane=INTERACTIVE)
                est = ctx.serve(patch_estimate, model, request, *args, **choices, lane=INTERACTIVE)
                yield (f"**Preview** (attribution patching: a first-order estimate of every cell from one clean, "
                       f"one corrupted and one backward pass; it can leave [0, 1] and underrates saturated "
                       f"cells). {'logit difference' if est.metric == 'logit_diff' else f'p({est.answer})'}: clean "
                       f"**{est.clean:.3f}**, corrupted **{est.corrupted:.3f}**. "
                       f"*Exact trace running...*", trace_figure(est), gr.update(), gr.update(), est.to_json(),
                       gr.update(), gr.update())
            progress(0.05, desc="tracing (clean run, then all corrupted runs in batches)")
            traced = ctx.ask(trace_prompt, model, request, *args, **choices,
                             progress=Progress(progress, 0.05, 0.85, "restoring clean states"))
            res = traced.value
            progress(0.9, desc="attention knockout")
            knocked_asked = ctx.ask(knockout, model, request, prompt, subject, answer or None, res.window)
            knocked = knocked_asked.value
            what = f"logit({res.answer}) - logit({res.foil})" if res.metric == "logit_diff" else f"p({res.answer})"
            how = (f"subject replaced by *{res.replacement}*" if res.corruption == "replace"
                   else f"noise std {res.noise:.3g}, {res.samples} samples")
            msg = (f"**{what}**: clean **{res.clean:.3f}**, subject corrupted **{res.corrupted:.3f}** "
                   f"({how}, window {res.window}). Best hidden-state restore: "
                   f"**{res.grids['hidden'].max():.3f}** at token *{res.tokens[int(res.grids['hidden'].max(1).argmax())].strip()}*. "
                   f"Knockout: cutting last -> subject drops p({knocked.answer}) most around layer "
                   f"**{knocked.strongest()[0]}** ({100 * knocked.strongest()[1]:+.0f}%).")
            yield (with_note(msg, traced, knocked_asked), trace_figure(res), category_figure(summarize([res], "this prompt")), knockout_figure(knocked),
                   res.to_json(), *ctx.takeaway("trace", res, trace, model, request, *args, **chosen(res)))

        preview = gr.Checkbox(value=True, label="Draw a first-order preview first (attribution patching)",
                              elem_id="trace-preview")
        inputs = [ctx.model, prompt, subject, answer, samples, window, noise, seed, preview, corruption, replacement,
                  metric]
        go_btn.click(run, inputs, [status, plot, cats, knock, raw, files, code], api_name="trace")
        ctx.prefill(run, inputs, [status, plot, cats, knock, raw, files, code])
        prompt.blur(lambda p: guess_subject(p), prompt, subject, api_visibility="private")
        ctx.show_tokens(tokens, prompt, subject)
        ctx.fields["Trace"] = {"prompt": prompt, "subject": subject, "answer": answer}
        ctx.on_model_choice(lambda m: (defaults_for(m).prompt, defaults_for(m).subject) if m in DEFAULTS
                            else (gr.update(), gr.update()), [prompt, subject])
