"""The Gradio app: widgets wired to knlab's functions (through the shared model worker) and plots.

Each tab is one ``build_*_tab`` function registered in ``TABS``; later tabs (Attribute, Trace, Edit,
Evaluate) slot in the same way. Every handler goes through ``_serve``, which turns knlab's clear errors
into a message in the UI (never a traceback) and runs the request with this browser session's edits.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable

import gradio as gr

from knlab.app.plots import (
    attribution_overview,
    category_figure,
    edit_figure,
    evaluation_figure,
    layer_figure,
    paradigm_figure,
    prediction_figure,
    trace_figure,
)
from knlab.core.errors import KnlabError
from knlab.core.limits import describe as describe_limits
from knlab.core.limits import hosted, limits
from knlab.core.models import SHIPPED_MODELS, default_model, shipped_installed
from knlab.methods.attribute import attribute
from knlab.methods.intervene import intervene, parse_neurons
from knlab.methods.neurons import select
from knlab.methods.patching import patch_estimate
from knlab.methods.predict import predict
from knlab.methods.trace import trace
from knlab.serve.hosting import Sessions, allowed_models, check_model
from knlab.serve.worker import ModelWorker, default_worker, gpu
from knlab.studies.edit import (
    TABLE_RELATIONS,
    counterfactual,
    describe,
    edit,
    evaluate_relation,
)
from knlab.studies.paper import CLAIMS, rerun
from knlab.studies.paradigm import analyse
from knlab.studies.trace_summary import summarize
from knlab.world import facts as F
from knlab.world.facts import guess_subject
from knlab.world.paradigms import paradigm_names

log = logging.getLogger("knlab.app.ui")
EXAMPLES = {"smollm2-135m": "The capital of France is", "world-gpt": "The capital of Canada is",
            "world-bert": "The capital of Canada is [MASK] ."}


def start_model() -> str:
    """The model the app opens with: ``KNLAB_DEFAULT_MODEL``, else the real model when it is installed."""
    return os.environ.get("KNLAB_DEFAULT_MODEL", "").strip() or default_model()


def model_choices(names) -> list[tuple[str, str]]:
    """(label, name) pairs: each shipped model labelled with what it is for."""
    return [(f"{n} — {SHIPPED_MODELS[n].purpose}" if n in SHIPPED_MODELS else n, n) for n in names]


def example(model: str) -> str:
    return EXAMPLES.get(model, EXAMPLES["world-gpt"])


class Context:
    """What every tab needs: the worker, the model picker, and the sessions (each with its own edits)."""

    def __init__(self, worker: ModelWorker, model: gr.Dropdown, sessions: Sessions | None = None,
                 start: str = "world-gpt"):
        self.worker = worker
        self.model = model
        self.start = start  # the model the page opens with: tabs start with examples it answers
        self.sessions = sessions or Sessions()

    @staticmethod
    def session_of(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "local"

    def edits(self, request: gr.Request | None) -> list:
        return self.sessions.edits(self.session_of(request))

    def set_edits(self, request: gr.Request | None, edits: list) -> None:
        self.sessions.set_edits(self.session_of(request), edits)

    def serve(self, fn: Callable[..., Any], model: str, request: gr.Request | None, *args: Any,
              base: bool = False, **kwargs: Any) -> Any:
        """Run ``fn(lm, ...)`` with this session's edits *of this model* applied (edits are kept per model:
        switching the model never applies one model's edit to another); ``base=True``: on the base model."""
        try:
            self.sessions.touch(self.session_of(request))
            model = check_model(model)
            specs = [] if base else [e["spec"] for e in self.edits(request) if e.get("model") == model]
            return _request(self.worker, model, specs, fn, *args, **kwargs)
        except KnlabError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # a bug: log it with the traceback, show the user one line
            log.exception("request failed")
            raise gr.Error(f"internal error ({type(e).__name__}); the model is unchanged", print_exception=False) from None


def whole(value: Any, what: str) -> int:
    """A widget's number as an int, or one clear message (the HTTP API accepts any JSON)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{what} must be a whole number, not {value!r}", print_exception=False) from None
    if not math.isfinite(f) or f != int(f) or abs(f) > 1e9:
        raise gr.Error(f"{what} must be a whole number, not {value!r}", print_exception=False)
    return int(f)


@gpu
def _request(worker: ModelWorker, model: str, edits: list, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return worker.run(model, edits, fn, *args, **kwargs)


def build_predict_tab(ctx: Context) -> None:
    with gr.Tab("Predict", id="predict"):
        gr.Markdown("What does the model say next? For a masked model (world-bert), put one `[MASK]` in the prompt.")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value=example(ctx.start), scale=4, elem_id="predict-prompt")
            top = gr.Slider(1, 20, value=10, step=1, label="Top k", scale=1)
        go_btn = gr.Button("Predict", variant="primary", elem_id="predict-button")
        plot = gr.Plot(label="Prediction", elem_id="predict-plot")
        raw = gr.JSON(label="Result", visible=True)

        def run(model: str, prompt: str, top: float, request: gr.Request):
            pred = ctx.serve(predict, model, request, prompt, whole(top, 'top'))
            return prediction_figure(pred), pred.to_json()

        go_btn.click(run, [ctx.model, prompt, top], [plot, raw], api_name="predict")
        prompt.submit(run, [ctx.model, prompt, top], [plot, raw], api_visibility="private")
        ctx.model.change(lambda m: EXAMPLES.get(m, gr.update()), ctx.model, prompt, api_visibility="private")


def build_trace_tab(ctx: Context) -> None:
    with gr.Tab("Trace", id="trace"):
        gr.Markdown("Causal tracing (Meng et al.): corrupt the subject's embeddings with noise, then restore one "
                    "clean state at a time and see how much of p(answer) comes back. Subject tokens are marked *.")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value=example(ctx.start), scale=3, elem_id="trace-prompt")
            subject = gr.Textbox(label="Subject (as in the prompt)", value=guess_subject(example(ctx.start)),
                                 scale=2, elem_id="trace-subject")
            answer = gr.Textbox(label="Answer (empty: the clean top prediction)", value="", scale=2)
        with gr.Accordion("Parameters (published defaults)", open=False):
            with gr.Row():
                samples = gr.Slider(1, min(50, limits().trace_samples), value=min(10, limits().trace_samples), step=1, label="Noise samples")
                window = gr.Slider(0, 20, value=0, step=1,
                                   label="Window (MLP / attention; 0: a fifth of the depth, as 10 of GPT-2 XL's 48)")
                noise = gr.Textbox(value="3sd", label="Noise: '3sd' (x embedding std) or a number")
                seed = gr.Number(value=0, precision=0, label="Seed")
        go_btn = gr.Button("Trace", variant="primary", elem_id="trace-button")
        status = gr.Markdown(elem_id="trace-status")
        plot = gr.Plot(label="Causal trace", elem_id="trace-plot")
        cats = gr.Plot(label="Indirect effect by token category", elem_id="trace-categories")
        raw = gr.JSON(label="Result", visible=False)

        def run(model, prompt, subject, answer, samples, window, noise, seed, preview, request: gr.Request,
                progress=gr.Progress()):
            args = (prompt, subject, answer or None, whole(samples, 'samples'), whole(window, 'window') or None,
                    noise, whole(seed or 0, 'seed'))
            if preview:  # drawn at once; the exact grid replaces it when it is ready
                est = ctx.serve(patch_estimate, model, request, *args)
                yield (f"**Preview** (attribution patching: a first-order estimate of every cell from one clean, "
                       f"one corrupted and one backward pass; it can leave [0, 1] and underrates saturated "
                       f"cells). p({est.answer}): clean **{est.clean:.3f}**, corrupted **{est.corrupted:.3f}**. "
                       f"*Exact trace running...*", trace_figure(est), gr.update(), est.to_json())
            progress(0.05, desc="tracing (clean run, then all corrupted runs in batches)")
            res = ctx.serve(trace, model, request, *args,
                            progress=lambda f: progress(0.05 + 0.9 * f, desc="restoring clean states"))
            progress(0.95, desc="drawing")
            msg = (f"**p({res.answer})**: clean **{res.clean:.3f}**, subject corrupted **{res.corrupted:.3f}** "
                   f"(noise std {res.noise:.3g}, {res.samples} samples, window {res.window}). Best hidden-state restore: "
                   f"**{res.grids['hidden'].max():.3f}** at token *{res.tokens[int(res.grids['hidden'].max(1).argmax())].strip()}*.")
            yield msg, trace_figure(res), category_figure(summarize([res], "this prompt")), res.to_json()

        preview = gr.Checkbox(value=True, label="Draw a first-order preview first (attribution patching)",
                              elem_id="trace-preview")
        inputs = [ctx.model, prompt, subject, answer, samples, window, noise, seed, preview]
        go_btn.click(run, inputs, [status, plot, cats, raw], api_name="trace")
        prompt.blur(lambda p: guess_subject(p), prompt, subject, api_visibility="private")
        ctx.model.change(lambda m: (example(m), guess_subject(example(m))) if m in EXAMPLES else (gr.update(), gr.update()),
                         ctx.model, [prompt, subject], api_visibility="private")


def build_attribute_tab(ctx: Context) -> None:
    import numpy as np

    with gr.Tab("Attribute", id="attribute"):
        gr.Markdown("Knowledge-neuron attribution (Dai et al.): integrated gradients of p(target) over every "
                    "layer's FFN activation at the prediction position. Then suppress (x0) or enhance (x2) "
                    "the top neurons and see what changes.")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value=EXAMPLES["world-gpt"], scale=4, elem_id="attr-prompt")
            target = gr.Textbox(label="Target (empty: the top prediction)", value="", scale=2)
            steps = gr.Slider(1, min(100, limits().ig_steps), value=min(20, limits().ig_steps), step=1, label="IG steps", scale=1)
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

        def run(model, prompt, target, steps, method, request: gr.Request, progress=gr.Progress()):
            progress(0.1, desc="integrated gradients over every layer")
            res = ctx.serve(attribute, model, request, prompt, target or None, whole(steps, 'steps'), method)
            top = res.top(20)
            title = f"{res.model}: {res.method} attribution of {res.target!r}"
            best_layer = top[0][0] if top else 0
            return (attribution_overview(res.scores, title), gr.update(maximum=res.scores.shape[0] - 1, value=best_layer),
                    layer_figure(res.scores, best_layer, title), [[l, i, round(s, 6)] for l, i, s in top],
                    " ".join(f"{l}:{i}" for l, i, _ in top[:5]), res.scores, res.to_json())

        go_btn.click(run, [ctx.model, prompt, target, steps, method],
                     [overview, layer, detail, table, chosen, scores_state, raw], api_name="attribute")

        def show_layer(scores, l):
            if scores is None:
                return gr.update()
            return layer_figure(np.asarray(scores), int(min(l, len(scores) - 1)), "attribution")

        layer.change(show_layer, [scores_state, layer], detail, api_visibility="private")

        def act(mode):
            def fn(model, prompt, target, neurons, request: gr.Request):
                res = ctx.serve(intervene, model, request, prompt, parse_neurons((neurons or "").split()), mode,
                                target or None)
                b, a = res.before, res.after
                fmt = lambda st: ", ".join(f"{t['token']} {t['prob']:.3f}" for t in st["top"])  # noqa: E731
                return (f"**{mode}**: p(target) {b['target_prob']:.4f} -> **{a['target_prob']:.4f}**  \n"
                        f"before: {fmt(b)}  \nafter: {fmt(a)}")
            return fn

        suppress.click(act("suppress"), [ctx.model, prompt, target, chosen], effect, api_visibility="private")
        enhance.click(act("enhance"), [ctx.model, prompt, target, chosen], effect, api_visibility="private")

        with gr.Accordion("Paradigm: the paper's 24-modifier chart", open=False):
            gr.Markdown("Find the neurons shared by a grammatical paradigm's prompts, suppress them and see how each "
                        "of the paper's 24 modifiers changes (relative change of mean probability; * p < 0.05, "
                        "two-sample t-test) and how many grammatical preferences flip. Published (BERT-base, "
                        "determiner_noun_agreement_2): this +316%, these -124%, that +208%, those -158%, at most "
                        "5.2% overturned. Use a masked model (world-bert) for determiner paradigms.")
            with gr.Row():
                par_name = gr.Dropdown(paradigm_names(), value="determiner_noun_agreement_2", label="Paradigm")
                par_n = gr.Slider(4, max(4, limits().paradigm_prompts), value=min(40, limits().paradigm_prompts), step=1, label="Prompts")
                par_btn = gr.Button("Analyse paradigm", elem_id="paradigm-button")
            par_plot = gr.Plot(elem_id="paradigm-plot")
            par_json = gr.JSON(visible=False)

            def run_paradigm(model, name, n, steps, request: gr.Request, progress=gr.Progress()):
                res = ctx.serve(analyse, model, request, name, whole(n, 'prompts'), whole(steps, 'steps'),
                                progress=lambda f, d="": progress(f, desc=d))
                return paradigm_figure(res), res.to_json()

            par_btn.click(run_paradigm, [ctx.model, par_name, par_n, steps], [par_plot, par_json],
                          api_name="paradigm")

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


def _fact_choices() -> list[str]:
    """Facts offered in the Edit tab: the Table-1 relations first, a few of every other relation after."""
    out = []
    for rid in ("P36", "P1376", "P101") + tuple(r for r in F.relations() if r not in ("P36", "P1376", "P101")):
        rel = F.relation(rid)
        out += [f"{rid} | {f.subject} | {f.object}" for f in rel.facts[: 40 if rid in ("P36", "P1376", "P101") else 8]]
    return out


def _history(edits: list) -> str:
    if not edits:
        return "*No edits: every tab sees the base model.*"
    return "**Your edits** (applied in this order to every request you make on that model):  \n" + "  \n".join(
        f"{i + 1}. `{e['model']}` {e['label']}" for i, e in enumerate(edits))


def build_edit_tab(ctx: Context) -> None:

    with gr.Tab("Edit", id="edit"):
        gr.Markdown("Change one fact with **ROME** (a rank-one update of one MLP layer at the subject's last token) "
                    "or a **KN edit** (Dai et al.: shift the knowledge neurons' value vectors from the old answer's "
                    "embedding to the new one's), then see what changed: reliability (the prompt), generality "
                    "(held-out paraphrases), locality (other facts), and the paper's symmetry and synonymy tests. "
                    "Your edits stay yours: every tab then answers with them applied, and nobody else sees them.")
        with gr.Row():
            fact = gr.Dropdown(_fact_choices(), value=None, label="A fact of the world (fills the fields)", scale=3)
            method = gr.Radio(["rome", "kn"], value="rome", label="Method", scale=1)
            layer = gr.Textbox(value="", label="ROME layer (empty: published / traced default)", scale=1)
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value="The capital of Canada is", scale=3, elem_id="edit-prompt")
            subject = gr.Textbox(label="Subject (as in the prompt)", value="Canada", scale=2, elem_id="edit-subject")
            target = gr.Textbox(label="New target", value="Rome", scale=1, elem_id="edit-target")
        with gr.Row():
            apply_btn = gr.Button("Apply edit", variant="primary", elem_id="edit-button")
            undo_btn = gr.Button("Undo last edit", elem_id="edit-undo")
            reset_btn = gr.Button("Reset to the base model", elem_id="edit-reset")
        status = gr.Markdown(elem_id="edit-status")
        history = gr.Markdown(_history([]), elem_id="edit-history")
        criteria_table = gr.Dataframe(headers=["criterion", "score", "probes that hold"], label="Criteria",
                                      interactive=False)
        plot = gr.Plot(label="Probes", elem_id="edit-plot")
        probes_table = gr.Dataframe(headers=["criterion", "prompt", "expected", "old", "p before", "p after", "holds"],
                                    label="Probe prompts", interactive=False)
        raw = gr.JSON(visible=False)

        def pick(choice, model):
            if not choice:
                return gr.update(), gr.update(), gr.update()
            rid, subj, obj = [x.strip() for x in choice.split("|")]
            rel = F.relation(rid)
            try:
                masked = ctx.worker.model(check_model(model)).masked
            except Exception:  # a model that does not load: the next request says why
                masked = False
            tmpl = rel.train_templates[0]
            p = F.prompt(tmpl, subj, masked)
            return p, subj, counterfactual(rel, rel.fact(subj), {obj})

        fact.change(pick, [fact, ctx.model], [prompt, subject, target], api_visibility="private")

        def apply(model, method, prompt, subject, target, layer, request: gr.Request, progress=gr.Progress()):
            edits = ctx.edits(request)
            cap = limits().edits_per_session
            if len(edits or []) >= cap:
                raise gr.Error(f"this session already keeps {cap} edits (the limit); undo or reset first",
                               print_exception=False)
            progress(0.05, desc=f"computing the {method} edit")
            lay = None if layer is None or str(layer).strip() == "" else whole(layer, "layer")
            rep = ctx.serve(edit, model, request, method, prompt, subject, target, lay,
                            progress=lambda f, d="": progress(0.05 + 0.8 * f, desc=d))
            edits = ctx.edits(request) + [{"model": model, "spec": rep.spec, "label": describe(rep.spec)}]
            ctx.set_edits(request, edits)
            where = f"layer {rep.layer}" if rep.layer is not None else f"{len(rep.neurons or [])} neurons"
            msg = (f"**{rep.method.upper()}** ({where}, {rep.seconds:.2f} s): *{rep.prompt}* **{rep.old} → {rep.new}**  \n"
                   f"p({rep.new}) {rep.before['p_new']:.4f} → **{rep.after['p_new']:.4f}**; "
                   f"p({rep.old}) {rep.before['p_old']:.4f} → **{rep.after['p_old']:.4f}**  \n"
                   f"before: *{rep.generation['before']}*  \nafter: *{rep.generation['after']}*")
            crit = []
            for c, v in rep.criteria.items():
                ps = [p for p in rep.probes if p.criterion == c]
                crit.append([c, "n/a" if v is None else f"{v:.0%}", f"{sum(p.holds for p in ps)}/{len(ps)}"])
            rows = [[p.criterion, p.prompt, p.expected, p.old or "", round(p.p_before, 4), round(p.p_after, 4),
                     "✓" if p.holds else "✗"] for p in rep.probes]
            out = rep.to_json()
            out["history"] = [e["label"] for e in edits]
            return msg, _history(edits), crit, edit_figure(rep), rows, out

        apply_btn.click(apply, [ctx.model, method, prompt, subject, target, layer],
                        [status, history, criteria_table, plot, probes_table, raw], api_name="edit")

        def undo(request: gr.Request):
            edits = ctx.edits(request)[:-1]
            ctx.set_edits(request, edits)
            return _history(edits), [e["label"] for e in edits]

        def reset(request: gr.Request):
            ctx.set_edits(request, [])
            return _history([]), []

        undo_out = gr.JSON(visible=False)
        undo_btn.click(undo, None, [history, undo_out], api_name="undo")
        reset_btn.click(reset, None, [history, undo_out], api_name="reset")


def build_evaluate_tab(ctx: Context) -> None:

    with gr.Tab("Evaluate", id="evaluate"):
        gr.Markdown("The paper's Table 1 on the loaded model: edit every fact of a relation **on its own** (the "
                    "model is restored after each), with the new object taken from another fact of the relation, "
                    "and count how often each criterion holds. Runs on the base model, not on your edits. "
                    "Beside it: the paper's published numbers for GPT-2 XL and LLaMA-2-7B (ROME), labelled as such.")
        with gr.Row():
            method = gr.Radio(["rome", "kn"], value="rome", label="Method")
            relation = gr.Dropdown(list(TABLE_RELATIONS) + [r for r in F.relations() if r not in TABLE_RELATIONS],
                                   value="P36", label="Relation")
            limit = gr.Slider(1, limits().evaluate_facts, value=min(10, limits().evaluate_facts), step=1, label="Facts (the first N)")
        go_btn = gr.Button("Evaluate", variant="primary", elem_id="evaluate-button")
        status = gr.Markdown(elem_id="evaluate-status")
        table = gr.Dataframe(headers=["criterion", "live %", "holds / probes", "paper: GPT-2 XL", "paper: LLaMA-2-7B"],
                             label="Live (this model) vs published (the paper)", interactive=False,
                             elem_id="evaluate-table")
        plot = gr.Plot(elem_id="evaluate-plot")
        raw = gr.JSON(visible=False)

        def run(model, method, relation, limit, request: gr.Request, progress=gr.Progress()):
            progress(0.02, desc="editing facts one at a time")
            res = ctx.serve(evaluate_relation, model, request, method, relation, whole(limit, 'facts'), base=True,
                            progress=lambda f, d="": progress(f, desc=d))
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
            return msg, rows, evaluation_figure(res), data

        go_btn.click(run, [ctx.model, method, relation, limit], [status, table, plot, raw], api_name="evaluate")


def build_paper_tab(ctx: Context) -> None:

    with gr.Tab("Paper", id="paper"):
        gr.Markdown("The paper's claims (Niu et al., ICLR 2024, and the figures it cites), one by one. Each button "
                    "reruns the claim live on a shipped model; the published figure stands beside the live one, "
                    "labelled as the paper's. The shipped models are tiny: the point is the shape of the result.")
        size = gr.Slider(2, 40, value=10, step=1, label="Facts / prompts per live rerun (more: slower, steadier)")
        for c in CLAIMS:
            with gr.Group():
                gr.Markdown(f"### {c.title}\n**Published:** {c.published}  \n*Reruns on the selected model; "
                            f"the shipped model that fits the paper's subject:* `{c.model}`")
                btn = gr.Button("Rerun live on the selected model", elem_id=f"paper-{c.id}-button")
                summary = gr.Markdown(elem_id=f"paper-{c.id}-status")
                table = gr.Dataframe(headers=["figure", "live", "published (paper)"], interactive=False,
                                     elem_id=f"paper-{c.id}-table")
                plot = gr.Plot(visible=c.id in ("det-agreement", "rome-table-1"), elem_id=f"paper-{c.id}-plot")
                raw = gr.JSON(visible=False)

                def run(model, n, request: gr.Request, progress=gr.Progress(), c=c):
                    progress(0.02, desc=f"rerunning on {model}")
                    res = ctx.serve(rerun, model, request, c.id, whole(n, 'size'), base=True,
                                    progress=lambda f, d="": progress(f, desc=d))
                    fig = None
                    if c.id == "det-agreement":
                        fig = paradigm_figure(res.detail)
                    elif c.id == "rome-table-1":
                        fig = evaluation_figure(res.detail[0])
                    return (f"**Live ({res.model}):** {res.summary}",
                            [[r["item"], r["live"], r["published"]] for r in res.rows], fig, res.to_json())

                btn.click(run, [ctx.model, size], [summary, table, plot, raw],
                          api_name=f"paper_{c.id.replace('-', '_')}")


TABS: list[Callable[[Context], None]] = [build_predict_tab, build_attribute_tab, build_trace_tab, build_edit_tab,
                                         build_evaluate_tab, build_paper_tab]


def build_app(worker: ModelWorker | None = None) -> gr.Blocks:
    worker = worker or default_worker()
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
        with gr.Tabs():
            for build in TABS:
                build(ctx)
        status_btn, status_out = gr.Button(visible=False), gr.JSON(visible=False)
        status_btn.click(lambda: worker.status(), None, status_out, api_name="status")
    return app
