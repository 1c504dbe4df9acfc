"""The Edit tab: make an edit (kept in the session), undo or reset, or compare a KN edit with ROME on the same
fact (kept by neither). An edit report is shown the same way wherever it appears (``report_views``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gradio as gr

from knlab.app.context import Context, Progress, edit_method_choice, takeaway_panel, whole
from knlab.app.defaults import defaults_for
from knlab.app.plots import edit_figure, sweep_figure
from knlab.app.takeaway import LEFT_OUT_HEADER, PROBE_HEADER, Call
from knlab.core.limits import limits
from knlab.methods.intervene import KN_RULES
from knlab.serve.hosting import check_model
from knlab.serve.worker import INTERACTIVE
from knlab.studies.edit_report import EditReport, compare, describe, edit
from knlab.studies.probes import SCORINGS
from knlab.studies.relation_evaluation import counterfactual
from knlab.studies.sweep import edit_at, every, finish, prepare
from knlab.world import facts as F


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


def edit_defaults(model: str) -> tuple:
    """The Edit tab's inputs for ``model``: the methods it has (ROME only on a causal model, the reason shown
    otherwise), and a fact it answers with a new object."""
    d = defaults_for(model)
    return edit_method_choice(model), d.prompt, d.subject, d.new_target


CRITERIA_HEADER = ["criterion", "score", "probes that hold"]


def rome_layer_choice(layer: Any) -> int | None:
    """The ROME layer field: empty means the published or traced default layer (``edit_report.rome_layer``)."""
    return None if layer is None or str(layer).strip() == "" else whole(layer, "layer")


def report_views(rep: EditReport) -> tuple[str, list[list], list[list], list[list]]:
    """An edit report as the tab shows it: a summary (where, how long, p(new) and p(old) before and after,
    the greedy generations), the criteria table, the probes table (PROBE_HEADER's columns) and the probes
    left out, unscored, because the model cannot answer them before the edit (LEFT_OUT_HEADER's columns)."""
    where = (f"layer {rep.layer}" if rep.layer is not None else
             f"{len(rep.neurons or [])} neurons, rule {rep.rule}")
    summary = (f"**{rep.method.upper()}** ({where}, {rep.seconds:.2f} s; criteria scored by {rep.scoring}): *{rep.prompt}* **{rep.old} → {rep.new}**  \n"
               f"p({rep.new}) {rep.before['p_new']:.4f} → **{rep.after['p_new']:.4f}**; "
               f"p({rep.old}) {rep.before['p_old']:.4f} → **{rep.after['p_old']:.4f}**  \n"
               f"before: *{rep.generation['before']}*  \nafter: *{rep.generation['after']}*")
    criteria = []
    for c, v in rep.criteria.items():
        probes = [p for p in rep.probes if p.criterion == c]
        criteria.append([c, "n/a" if v is None else f"{v:.0%}", f"{sum(p.holds for p in probes)}/{len(probes)}"])
    probes = [[p.criterion, p.prompt, p.expected, p.old or "", round(p.p_before, 4), round(p.p_after, 4),
               "✓" if p.holds else "✗"] for p in rep.probes]
    left_out = [[x["criterion"], x["prompt"], x["reason"]] for x in rep.left_out]
    if left_out:
        summary += (f"  \n{len(left_out)} probe{'s' if len(left_out) != 1 else ''} left out, not scored: the model "
                    "does not answer them before the edit (listed under the probes)")
    return summary, criteria, probes, left_out


LEFT_OUT_LABEL = "Probes left out (not scored): the model cannot answer them before the edit"


@dataclass
class EditForm:
    """The fields an edit or a comparison reads."""

    method: gr.Radio
    layer: gr.Textbox
    prompt: gr.Textbox
    subject: gr.Textbox
    target: gr.Textbox
    rule: gr.Radio
    scoring: gr.Radio


def _edit_form(ctx: Context) -> EditForm:
    """The fields, filled from a fact of the world when one is picked and from the model's defaults when
    another model is chosen."""
    with gr.Row():
        fact = gr.Dropdown(_fact_choices(), value=None, label="A fact of the world (fills the fields)", scale=3)
        start = defaults_for(ctx.start)
        method = gr.Radio(list(start.edit_methods), value=start.edit_method, label="Method", scale=1,
                          info=start.note or None, elem_id="edit-method")
        layer = gr.Textbox(value="", label="ROME layer (empty: published / traced default)", scale=1)
    with gr.Row():
        rule = gr.Radio(list(KN_RULES), value="dai", label="KN edit rule", elem_id="edit-rule",
                        info="dai: 1 x e(old) out, 8 x e(new) in (Dai et al.); ekn: 2 and 2 (EleutherAI's "
                             "knowledge-neurons, EasyEdit's KN, behind the figures the paper quotes)")
        scoring = gr.Radio(list(SCORINGS), value="first-token", label="Scoring", elem_id="edit-scoring",
                           info="first-token: p(new) > p(old) (the paper); token-accuracy: teacher-forced "
                                "accuracy of the whole expected string (the seed's, Yao et al.'s)")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", value=start.prompt, scale=3, elem_id="edit-prompt")
        subject = gr.Textbox(label="Subject (as in the prompt)", value=start.subject, scale=2, elem_id="edit-subject")
        target = gr.Textbox(label="New target", value=start.new_target, scale=1, elem_id="edit-target")
    tokens = gr.Markdown(elem_id="edit-tokens")

    def pick(choice, model):
        if not choice:
            return gr.update(), gr.update(), gr.update()
        rid, subj, obj = [x.strip() for x in choice.split("|")]
        rel = F.relation(rid)
        try:
            with ctx.worker.tokenizing(check_model(model)) as lm:
                masked = lm.masked
        except Exception:  # a model that does not load: the next request says why
            masked = False
        return F.prompt(rel.train_templates[0], subj, masked), subj, counterfactual(rel, rel.fact(subj), {obj})

    fact.change(pick, [fact, ctx.model], [prompt, subject, target], api_visibility="private")
    ctx.show_tokens(tokens, prompt, subject)
    ctx.fields["Edit"] = {"method": method, "prompt": prompt, "subject": subject, "target": target}
    ctx.on_model_choice(edit_defaults, [method, prompt, subject, target])
    return EditForm(method, layer, prompt, subject, target, rule, scoring)


def _apply_and_history(ctx: Context, form: EditForm) -> None:
    """Apply an edit to the session's model, undo the last one, or reset to the base model."""
    with gr.Row():
        apply_btn = gr.Button("Apply edit", variant="primary", elem_id="edit-button")
        undo_btn = gr.Button("Undo last edit", elem_id="edit-undo")
        reset_btn = gr.Button("Reset to the base model", elem_id="edit-reset")
    status = gr.Markdown(elem_id="edit-status")
    history = gr.Markdown(_history([]), elem_id="edit-history")
    criteria_table = gr.Dataframe(headers=CRITERIA_HEADER, label="Criteria", interactive=False)
    plot = gr.Plot(label="Probes", elem_id="edit-plot")
    probes_table = gr.Dataframe(headers=PROBE_HEADER, label="Probe prompts", interactive=False)
    left_table = gr.Dataframe(headers=LEFT_OUT_HEADER, label=LEFT_OUT_LABEL, interactive=False, wrap=True,
                              elem_id="edit-left-out")
    raw = gr.JSON(visible=False)
    files, code = takeaway_panel("edit")

    def apply(model, method, prompt, subject, target, layer, rule, scoring, request: gr.Request,
              progress=gr.Progress()):
        cap = limits().edits_per_session
        if len(ctx.edits(request) or []) >= cap:
            raise gr.Error(f"this session already keeps {cap} edits (the limit); undo or reset first",
                           print_exception=False)
        progress(0.05, desc=f"computing the {method} edit")
        args = (method, prompt, subject, target, rome_layer_choice(layer))
        kwargs = {"rule": rule, "scoring": scoring} if method == "kn" else {"scoring": scoring}
        rep = ctx.serve(edit, model, request, *args, progress=Progress(progress, 0.05, 0.8),
                        **kwargs)
        taken = ctx.takeaway("edit", rep, edit, model, request, *args, **kwargs)  # on the edits before this one
        edits = ctx.edits(request) + [{"model": model, "spec": rep.spec, "label": describe(rep.spec),
                                       "call": Call(edit, args, kwargs)}]
        ctx.set_edits(request, edits)
        summary, criteria, probes, left_out = report_views(rep)
        out = rep.to_json()
        out["history"] = [e["label"] for e in edits]
        return summary, _history(edits), criteria, edit_figure(rep), probes, left_out, out, *taken

    apply_btn.click(apply, [ctx.model, form.method, form.prompt, form.subject, form.target, form.layer, form.rule,
                            form.scoring],
                    [status, history, criteria_table, plot, probes_table, left_table, raw, files, code],
                    api_name="edit")

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


def _compare(ctx: Context, form: EditForm) -> None:
    """The same fact by KN edit and by ROME, side by side, each report shown as an applied edit's is."""
    with gr.Accordion("Compare: the same fact by KN edit and by ROME, side by side", open=False):
        gr.Markdown("Each edit is made on its own on your session's model and undone before the other (never "
                    "stacked, never kept): what each changes and what it does not. A causal model only (ROME).")
        cmp_btn = gr.Button("Compare KN and ROME", elem_id="compare-button")
        columns = {}
        with gr.Row():
            for m, title in (("kn", "KN edit (the rule chosen above)"), ("rome", "ROME")):
                with gr.Column():
                    gr.Markdown(f"#### {title}")
                    columns[m] = (gr.Markdown(elem_id=f"compare-{m}-status"),
                                  gr.Dataframe(headers=CRITERIA_HEADER, interactive=False,
                                               elem_id=f"compare-{m}-criteria"),
                                  gr.Dataframe(headers=PROBE_HEADER, interactive=False, wrap=True),
                                  gr.Dataframe(headers=LEFT_OUT_HEADER, label=LEFT_OUT_LABEL, interactive=False,
                                               wrap=True, elem_id=f"compare-{m}-left-out"))
        cmp_json = gr.JSON(visible=False)
        cmp_files, cmp_code = takeaway_panel("compare")

        def run_compare(model, prompt, subject, target, layer, rule, scoring, request: gr.Request,
                        progress=gr.Progress()):
            args = (prompt, subject, target, rome_layer_choice(layer))
            kwargs = {"rule": rule, "scoring": scoring}
            res = ctx.serve(compare, model, request, *args, progress=Progress(progress), **kwargs)
            out: list = []
            for m in ("kn", "rome"):
                rep = res.reports[m]
                out += report_views(rep) if rep is not None else (f"⚠ {res.errors[m]}", [], [], [])
            return (*out, res.to_json(), *ctx.takeaway("compare", res, compare, model, request, *args, **kwargs))

        cmp_btn.click(run_compare, [ctx.model, form.prompt, form.subject, form.target, form.layer, form.rule,
                                    form.scoring],
                      [*columns["kn"], *columns["rome"], cmp_json, cmp_files, cmp_code], api_name="compare")


def _sweep(ctx: Context, form: EditForm) -> None:
    """Hase et al.'s question for this fact: ROME at every layer (one request per layer, so Stop takes
    effect between layers) beside the causal trace, the trace's peak and the best edit layer marked."""
    with gr.Accordion("Edit at every layer: does the trace tell you where to edit? (Hase et al. 2023)", open=False):
        gr.Markdown("ROME at each layer, each edit made on its own and undone, beside the causal trace's effect per "
                    "layer at the subject's last token. The rewrite score is (p_new after - before) / (1 - before). "
                    "A causal model only. On the real model each layer's edit takes seconds to minutes.")
        with gr.Row():
            step = gr.Slider(1, 10, value=1, step=1, label="Every k-th layer", elem_id="sweep-step")
            sweep_btn = gr.Button("Edit at every layer", elem_id="sweep-button")
            stop_btn = gr.Button("Stop", elem_id="sweep-stop")
        sweep_status = gr.Markdown(elem_id="sweep-status")
        sweep_plot = gr.Plot(label="Rewrite score and tracing effect by layer", elem_id="sweep-plot")
        sweep_json = gr.JSON(visible=False)

        def run_sweep(model, prompt, subject, target, k, request: gr.Request, progress=gr.Progress()):
            lm_layers = ctx.serve(every, model, request, whole(k, "step"), lane=INTERACTIVE)
            plan = ctx.serve(prepare, model, request, prompt, subject, target, lm_layers,
                             progress=Progress(progress, 0.0, 0.1))
            after, t0 = [], time.perf_counter()
            for j, layer in enumerate(plan.layers):
                progress(0.1 + 0.9 * j / len(plan.layers), desc=f"ROME at layer {layer} ({j + 1}/{len(plan.layers)})")
                yield f"ROME at layer {layer} ({j + 1} of {len(plan.layers)})...", gr.update(), gr.update()
                after.append(ctx.serve(edit_at, model, request, plan, layer))
            res = finish(model, plan, after, time.perf_counter() - t0)
            yield (f"Trace peak: layer **{res.trace_peak}**; best edit: layer **{res.best_layer}** (rewrite score "
                   f"{res.rewrite.max():.2f}). Did the trace tell you where to edit? "
                   f"{'Yes, here' if abs(res.trace_peak - res.best_layer) <= max(1, whole(k, 'step')) else 'Not here'}.",
                   sweep_figure(res), res.to_json())

        event = sweep_btn.click(run_sweep, [ctx.model, form.prompt, form.subject, form.target, step],
                                [sweep_status, sweep_plot, sweep_json], api_name="sweep")
        stop_btn.click(None, None, None, cancels=[event])


def build_edit_tab(ctx: Context) -> None:
    with gr.Tab("Edit", id="edit"):
        gr.Markdown("Change one fact with **ROME** (a rank-one update of one MLP layer at the subject's last token) "
                    "or a **KN edit** (shift the knowledge neurons' value vectors from the old answer's embedding to "
                    "the new one's: Dai et al.'s rule, or EleutherAI's that EasyEdit uses), then see what changed: reliability (the prompt), generality "
                    "(held-out paraphrases), locality (other facts), and the paper's symmetry and synonymy tests. "
                    "Your edits stay yours: every tab then answers with them applied, and nobody else sees them.")
        form = _edit_form(ctx)
        _apply_and_history(ctx, form)
        _compare(ctx, form)
        _sweep(ctx, form)
