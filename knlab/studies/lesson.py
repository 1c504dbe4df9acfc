"""The paper's argument in six steps, each a live run on one model (the real smollm2-135m when it is
installed, else the organism world-gpt): the model knows a fact; causal tracing says where it is computed;
integrated gradients finds "knowledge neurons", whose suppression barely changes the answer; ROME rewrites
the fact and the generation follows; the reverse question and the synonym do not; and grammar yields to the
same instruments. Steps 1-5 follow one fact (``FACTS``). What to notice is written here from the paper
(docs/paper.md). A step that measures one example states what the example shows; where the paper's claim
is a rate over many edits (steps 4-6), the step cites the record (``studies.record``: the claim at full
size, its findings with N, 95% interval and outcome) and its verdict is the record's, never the single
example's; a model not recorded yet is said to be so, and has no verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from knlab.core.errors import InputError
from knlab.core.models import LM, shipped_installed
from knlab.core.tokens import first_token
from knlab.methods.attribute import attribute
from knlab.methods.intervene import intervene
from knlab.methods.predict import predict
from knlab.methods.trace import trace
from knlab.studies import published, record
from knlab.studies.claims import editing
from knlab.studies.claims.after import grid_step
from knlab.studies.claims.common import ModelRun
from knlab.studies.claims.editing import rome_syntax
from knlab.studies.edit_report import edit
from knlab.studies.findings import AGREES, DEPARTS, Finding
from knlab.studies.known_facts import iter_known_subjects, known_subjects
from knlab.studies.sweep import sweep
from knlab.world import facts as F

# (prompt, subject, the answer the model gives, the new object ROME writes)
FACTS = {"smollm2-135m": ("The capital of France is", "France", "Paris", "Rome"),
         "world-gpt": ("The capital of Canada is", "Canada", "Ottawa", "Rome")}


def lesson_model() -> str:
    """The model the lesson runs on: the real one when installed (the paper is about real models)."""
    return "smollm2-135m" if "smollm2-135m" in shipped_installed() else "world-gpt"


@dataclass
class StepResult:
    step: int
    model: str
    summary: str  # what this run shows, with its numbers
    agrees: bool | None  # does this model agree with the paper's reading of the step: the example's own
    # observation in steps 1-3; the record's outcome in steps 4-6 (None: undecided there, or not recorded yet)
    kind: str  # what ``result`` is: "prediction", "trace", "neurons", "edit", "claim"
    result: Any = field(repr=False, default=None)
    detail: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {"step": self.step, "model": self.model, "summary": self.summary, "agrees": self.agrees,
               "kind": self.kind, "detail": self.detail}
        if self.result is not None and hasattr(self.result, "to_json"):
            out["result"] = self.result.to_json()
        return out


def _fact(lm: LM) -> tuple[str, str, str, str]:
    return FACTS.get(lm.spec, FACTS["world-gpt"])


def knows(lm: LM) -> StepResult:
    prompt, _subject, answer, _new = _fact(lm)
    pred = predict(lm, prompt, top=10)
    top = pred.top_tokens[0].strip()
    ok = first_token(lm, top) == first_token(lm, answer)
    return StepResult(1, lm.spec, f"'{prompt}' -> **{top}** (p = {float(pred.top_probs[0]):.2f}); "
                      f"{'the model knows the fact' if ok else f'not {answer}: the steps below measure little'}.",
                      ok, "prediction", pred)


def where(lm: LM) -> StepResult:
    prompt, subject, answer, _new = _fact(lm)
    res = trace(lm, prompt, subject, answer)
    t_last = res.subject_range[1] - 1
    mlp, attn = res.indirect_effect("mlp"), res.indirect_effect("attn")
    mlp_layer, attn_layer = int(mlp[t_last].argmax()), int(attn[res.position].argmax())
    L = lm.n_layers
    agrees = bool(mlp_layer < L / 2 and attn_layer >= L / 2)
    return StepResult(2, lm.spec, f"restoring the MLP at the subject's last token brings back up to "
                      f"**{mlp[t_last].max():+.2f}** of p({res.answer}) (layer {mlp_layer} of {L}); attention at the "
                      f"last token up to **{attn[res.position].max():+.2f}** (layer {attn_layer}): "
                      f"{'the early-MLP / late-attention signature' if agrees else 'not the usual signature'}.",
                      agrees, "trace", res, {"mlp_layer": mlp_layer, "attn_layer": attn_layer})


CONTROL_RELATIONS = ("P101", "P37", "P17", "P103")  # unrelated facts for step 3's first control, in this order
CONTROLS, RANDOM_DRAWS, SEED = 5, 5, 0


def _top(res) -> str:
    return res["top"][0]["token"].strip()


def _unrelated_facts(lm: LM, n: int = CONTROLS) -> list[tuple[str, str]]:
    """``n`` facts of another relation than the lesson's that the model states: (prompt, answer)."""
    for rid in CONTROL_RELATIONS:
        rel = F.relation(rid)
        subjects = known_subjects(lm, rid, n)
        if subjects:
            return [(F.causal_prompt(rel.train_templates[0], s), rel.fact(s).object) for s in subjects]
    return []


def _random_neurons(neurons: list[tuple[int, int]], width: int, rng: np.random.Generator) -> tuple:
    """As many neurons as ``neurons``, each drawn at random from the same layer as one of them (not it)."""
    out = []
    for layer, i in neurons:
        j = int(rng.integers(width - 1))
        out.append((layer, j + (j >= i)))
    return tuple(out)


def neurons(lm: LM) -> StepResult:
    """IG's top 5 neurons for the answer, suppressed; beside it the two controls that make the result
    readable: the same neurons suppressed on unrelated facts (does their answer change too?), and as many
    random neurons of the same layers suppressed on this fact (fixed seed)."""
    prompt, _subject, answer, _new = _fact(lm)
    att = attribute(lm, prompt, answer)
    top = [(l, i) for l, i, _ in att.top(5)]
    res = intervene(lm, prompt, tuple(top), "suppress", answer)
    before, after = res.before["target_prob"], res.after["target_prob"]
    still = _top(res.after) == _top(res.before)
    unrelated = []
    for p, obj in _unrelated_facts(lm):
        r = intervene(lm, p, tuple(top), "suppress")
        unrelated.append({"prompt": p, "answer": obj, "before": _top(r.before), "after": _top(r.after),
                          "changes": _top(r.after) != _top(r.before)})
    rng = np.random.default_rng(SEED)
    randoms = []
    for _ in range(RANDOM_DRAWS):
        chosen = _random_neurons(top, att.scores.shape[1], rng)
        r = intervene(lm, prompt, chosen, "suppress", answer)
        randoms.append({"neurons": [list(n) for n in chosen], "p_after": r.after["target_prob"],
                        "top_after": _top(r.after), "changes": _top(r.after) != _top(r.before)})
    control_1 = (f"the same 5 neurons suppressed on {len(unrelated)} unrelated facts "
                 f"({', '.join(repr(u['prompt']) for u in unrelated)}) change "
                 f"**{sum(u['changes'] for u in unrelated)} of {len(unrelated)}** answers" if unrelated else
                 "no unrelated fact the model states was found for the first control")
    ps = [r["p_after"] for r in randoms]
    control_2 = (f"5 random neurons of the same layers (seed {SEED}, {RANDOM_DRAWS} draws) move p({answer}) "
                 f"{before:.3f} -> **{np.mean(ps):.3f}** on average ({min(ps):.3f}-{max(ps):.3f}) and change the "
                 f"answer in **{sum(r['changes'] for r in randoms)} of {RANDOM_DRAWS}** draws")
    return StepResult(3, lm.spec, f"the 5 neurons with the largest integrated gradients for {answer}: {top}. "
                      f"Suppressing them moves p({answer}) {before:.3f} -> **{after:.3f}**; the answer "
                      f"{'stays' if still else 'changes to ' + _top(res.after)}. Controls: {control_1}; "
                      f"{control_2}.",
                      still, "neurons", att, {"neurons": [list(n) for n in top], "p_before": before, "p_after": after,
                                              "top_after": res.after["top"][0]["token"], "unrelated": unrelated,
                                              "random": randoms, "seed": SEED})


def _recorded(claim_id: str, model: str) -> ModelRun | None:
    return record.recorded(claim_id, model, record.RECORDS)


def _cite(run: ModelRun | None, claim_id: str, model: str, names: list[str]) -> tuple[str, list[Finding]]:
    """The record's findings ``names`` of ``claim_id`` on ``model``, as a sentence; or that it has none yet."""
    if run is None:
        return (f"The record has no full-size run of {claim_id} on {model} yet (`python -m knlab paper --record "
                f"{claim_id} --model {model}`): this example alone decides nothing.", [])
    found = [f for n in names for f in run.findings if f.name == n]
    text = "; ".join(f"{f.name}: **{f.text()}**, *{f.outcome}* ({f.rule})" for f in found)
    return f"Recorded ({claim_id} on {model}, full size): {text}.", found


def _verdict(findings: list[Finding]) -> bool | None:
    """The record's verdict: False when a finding departs, True when all agree, else None (undecided)."""
    if not findings:
        return None
    if any(f.outcome == DEPARTS for f in findings):
        return False
    return True if all(f.outcome == AGREES for f in findings) else None


def rewrite(lm: LM) -> StepResult:
    prompt, subject, _answer, new = _fact(lm)
    rep = edit(lm, "rome", prompt, subject, new)
    took = rep.after["p_new"] > rep.after["p_old"]
    cite, found = _cite(_recorded("rome-examples", lm.spec), "rome-examples", lm.spec, ["the capital edit takes"])
    return StepResult(4, lm.spec, f"ROME at layer {rep.layer}: p({new}) {rep.before['p_new']:.3f} -> "
                      f"**{rep.after['p_new']:.3f}**, p({rep.old}) {rep.before['p_old']:.3f} -> {rep.after['p_old']:.3f}: "
                      f"this edit {'takes' if took else 'does not take'}. Before: *{rep.generation['before']}*; after: "
                      f"*{rep.generation['after']}* (the edit is undone after this step). {cite}",
                      _verdict(found), "edit", rep, {"takes": took, "recorded": [f.to_json() for f in found] or None})


def reverse_example(lm: LM, generate_tokens: int = 6) -> dict:
    """Step 4's edit again (the lesson's fact, its new object), with both reverse questions asked before
    and after it: rome-examples' symmetry item on this fact and this new object."""
    _prompt, subject, _answer, new = _fact(lm)
    return editing._symmetry_item(lm, subject, None, generate_tokens, new=new)


def synonym_example(lm: LM) -> dict | None:
    """rome-examples' synonymy item on the first scientist whose field and occupation the model states;
    None where it states none."""
    occ, p101 = F.occupations(), F.relation("P101")
    subject = next((s for s in iter_known_subjects(lm, "P101") if p101.fact(s).object in occ), None)
    return None if subject is None else editing._synonymy_item(lm, subject, 0)


def _asked(seen: dict, prompt: str) -> str:
    return f"'{prompt}' says {seen[prompt]['before']} before the edit and **{seen[prompt]['after']}** after"


REVERSE_FINDINGS = ["the new capital's reverse question names the edited country",
                    "the old capital's reverse question still names the country",
                    "the occupation follows the edited field"]


def reverse_and_synonym(lm: LM) -> StepResult:
    ex = reverse_example(lm)
    prompt, subject, old, new = ex["edit"]
    seen = ex["prompts"]
    if ex["reverse_new_names_subject"] is None:
        rev_new = (f"'{ex['reverse_new']}' does not say {ex['own'] or 'a country'} before the edit "
                   f"({seen[ex['reverse_new']]['before']}), so here it asks nothing")
    else:
        rev_new = (f"{_asked(seen, ex['reverse_new'])}: it "
                   f"{'names' if ex['reverse_new_names_subject'] else 'does not name'} {subject}")
    if ex["reverse_old_names_subject"] is None:
        rev_old = f"'{ex['reverse_old']}' does not say {subject} before the edit, so here it asks nothing"
    else:
        rev_old = (f"{_asked(seen, ex['reverse_old'])}: it "
                   f"{'still names' if ex['reverse_old_names_subject'] else 'no longer names'} {subject}")
    syn = synonym_example(lm)
    if syn is None:
        syn_text = "The model states no scientist's field and occupation: the synonym has no example here."
    else:
        sp, ss, so, sn = syn["edit"]
        follows = syn["occupation_follows"]
        syn_prompt = next(p for p in syn["prompts"] if p != sp)
        syn_text = (f"The synonym needs a fact with one, so a second edit: '{sp}' {so} -> {sn} "
                    f"({'takes' if syn['takes'] else 'does not take'}); {_asked(syn['prompts'], syn_prompt)}"
                    + ("" if follows is None else f": the occupation {'follows' if follows else 'does not follow'} "
                       f"the field ({syn['occupation'][0]} -> {syn['occupation'][1]})")
                    + ("" if follows is not None else f" (not {syn['occupation'][0]} before the edit, so it asks "
                       f"nothing)") + ".")
    run = _recorded("rome-examples", lm.spec)
    cite, found = _cite(run, "rome-examples", lm.spec, REVERSE_FINDINGS)
    summary = (f"This edit (step 4's: {subject}, {old} -> {new}, which "
               f"{'takes' if ex['takes'] else 'does not take'}): {rev_new}; {rev_old}. {syn_text} "
               f"One edit is an example, not a rate. {cite}")
    return StepResult(5, lm.spec, summary, _verdict(found), "claim", run,
                      {"example": ex, "synonymy_example": syn, "recorded": [f.to_json() for f in found] or None})


def grammar(lm: LM) -> StepResult:
    ex = rome_syntax(lm, 1).detail["example"]
    seen = ex["prompts"]

    def verb(p):
        b, a = seen[p]["before"], seen[p]["after"]
        return f"'{p}': {b['prefers']} -> **{a['prefers']}** (p(is) {b['p_is']:.2f} -> {a['p_is']:.2f})"
    run = _recorded("rome-syntax", lm.spec)
    cite, found = _cite(run, "rome-syntax", lm.spec, [f.name for f in run.findings] if run else [])
    summary = (f"ROME edits '{ex['edited']}' from are to is as it edits a capital; this edit "
               f"{'takes' if ex['takes'] else 'does not take'}. Same head, another noun: "
               f"{'; '.join(verb(p) for p in ex['carries'])}. Another head: {'; '.join(verb(p) for p in ex['others'])}. "
               f"{cite}")
    return StepResult(6, lm.spec, summary, _verdict(found), "claim", run,
                      {"example": ex, "recorded": [f.to_json() for f in found] or None})


LESSON_GRID = 3  # step 7's coarse sweep: this many layers of the edit-layers record's grid, bottom to top
LESSON_MOM2 = False  # step 7 edits without ROME's key covariance (see ``where_to_edit``)
EDIT_LAYERS_FINDINGS = ("facts whose best edit layer is the trace's peak (within one grid step)",
                        "R^2 the tracing effect adds beyond the layer")  # the record's, that step 7 cites


def lesson_layers(n_layers: int) -> list[int]:
    """Step 7's layers: ``LESSON_GRID`` of the edit-layers record's grid, spread from its bottom to its top
    (0, 16, 28 of SmolLM2's 0, 4, ..., 28; 0, 2, 5 on a 6-layer organism)."""
    grid = list(range(0, n_layers, grid_step(n_layers)))
    if len(grid) <= LESSON_GRID:
        return grid
    return [grid[round(i * (len(grid) - 1) / (LESSON_GRID - 1))] for i in range(LESSON_GRID)]


def where_to_edit(lm: LM) -> StepResult:
    """Step 7 (Hase et al. 2023): the lesson's fact edited by ROME at a few layers beside its trace; the
    verdict is the record's edit-layers findings, never this one fact's.

    The live edits run without ROME's key covariance (``mom2=False``: ``knlab sweep ... --no-mom2``, each
    row ``knlab edit rome --layer L --no-mom2``), the setting of ROME's and the seed's own configs
    (``mom2_adjustment: false``, docs/paper.md section 5), and the step says so. Why: the covariance is the
    one part of an edit that costs minutes the first time per model and layer (a pass of 60,000 tokens
    through the layers below, and a float64 sum of 1536 x 1536 outer products), so a fresh machine's first
    click would wait minutes for three layers' covariances; without it the step is the template
    generation (once per model, cached by step 4), one batched trace and three v* optimisations. The
    rewrite score on the edit prompt hardly depends on the covariance: the rank-one update maps the key k*
    to the optimised v* with or without it (the covariance only chooses which other keys the update
    spares), so the prompt's p_new is set by v*, which the covariance does not touch. The record's
    edit-layers, which the step cites, edits with the covariance (knlab's default)."""
    prompt, subject, _answer, new = _fact(lm)
    res = sweep(lm, prompt, subject, new, lesson_layers(lm.n_layers), mom2=LESSON_MOM2)
    cite, found = _cite(_recorded("edit-layers", lm.spec), "edit-layers", lm.spec, list(EDIT_LAYERS_FINDINGS))
    scores = ", ".join(f"L{l}: {r:.2f}" for l, r in zip(res.layers, res.rewrite))
    return StepResult(7, lm.spec, f"The trace of step 2 peaks at layer **{res.trace_peak}** (MLP window at the "
                      f"subject's last token); ROME's rewrite score by layer (live, without the key covariance: "
                      f"`--no-mom2`, as ROME's own configs; the record edits with it): {scores}, best at layer "
                      f"**{res.best_layer}**. {cite}", _verdict(found), "sweep", res,
                      {"recorded": [f.to_json() for f in found] or None, "mom2": LESSON_MOM2,
                       "command": f"python -m knlab sweep {prompt!r} --subject {subject!r} --target {new!r} "
                                  f"--layers {','.join(map(str, res.layers))} --no-mom2 --model {lm.spec}"})


@dataclass(frozen=True)
class Step:
    number: int
    title: str
    notice: str  # what to notice and why it matters, from the paper
    run: Callable[[LM], StepResult]
    tab: str  # the full tab that does the same with any input
    claim: str | None = None  # on the Paper tab: the claim the step reruns in small

    def inputs(self, model: str) -> dict[str, str]:
        """The step's own inputs as its tab names them (the Lesson tab's "open in ..." fills them in): a
        user who goes on from the step starts from exactly what the step ran."""
        prompt, subject, answer, new = FACTS.get(model, FACTS["world-gpt"])
        return {"Predict": {"prompt": prompt},
                "Trace": {"prompt": prompt, "subject": subject, "answer": answer},
                "Attribute": {"prompt": prompt, "target": answer},
                "Edit": {"method": "rome", "prompt": prompt, "subject": subject, "target": new},
                "Paper": {"claim": self.claim or ""}}[self.tab]


STEPS = [
    Step(1, "The model knows a fact",
         "Every instrument below starts from a fact the model states: tracing or editing a fact the model does not "
         "know measures nothing. The real model here is small (135M parameters) and knows the capitals it was "
         "most likely to read about.", knows, "Predict"),
    Step(2, "Causal tracing: where is the answer computed?",
         "Noise on the subject's embeddings destroys the answer; restoring one clean state at a time shows which "
         "states carry it. Meng et al. read an early MLP peak at the subject's last token as the place the fact is "
         "recalled, and a late attention peak at the last token as where it moves to the answer. Step 6 asks "
         "whether that signature is specific to facts.", where, "Trace"),
    Step(3, "Knowledge neurons: found, but not decisive",
         "Integrated gradients ranks every FFN neuron by its contribution to p(answer); Dai et al. call the top ones "
         "'knowledge neurons'. Niu et al. show that suppressing them shifts probabilities but rarely changes what "
         f"the model says (at most {published.most_overturned():g}% of grammatical choices in BERT): they take part in "
         "the answer; they do not "
         "store it.", neurons, "Attribute"),
    Step(4, "ROME rewrites the fact, and the generation follows",
         "A rank-one change of one MLP layer, at the subject's last token, makes the prompt and its continuation "
         "say the new object. That the edit takes is the strongest argument that the layer holds the fact.",
         rewrite, "Edit"),
    Step(5, "But the reverse question and the synonym do not follow",
         "If the edit changed a fact, 'Rome is the capital of' should now say Canada, and a scientist's new field "
         "should change the occupation the model names. The paper finds the reverse follows in 24-34% of edits "
         "and the synonym in 52-58% (GPT-2 XL, LLaMA-2). This step asks the reverse questions of step 4's own "
         "edit, then cites the record (the Paper tab's rome-examples, over many edits): one edit is an "
         "example; the recorded rate, with its interval, is the finding.", reverse_and_synonym, "Paper", "rome-examples"),
    Step(6, "Grammar yields to the same instruments: patterns, not knowledge",
         "Determiner-noun and subject-verb agreement have their own 'knowledge neurons' (Paper tab: kn-sharing, "
         "localisation) and ROME rewrites 'are' to 'is' after a subject as it rewrites a capital. If the methods "
         "find the same kind of thing for grammar as for facts, what they find is how the model completes token "
         "patterns, not a store of knowledge: the paper's conclusion.", grammar, "Paper", "rome-syntax"),
    Step(7, "Does the trace tell you where to edit?",
         "After the paper, Hase et al. (NeurIPS 2023) asked what steps 2 and 4 take for granted: that the layer the "
         "trace points at is the layer to edit. Over many facts they found the two barely related: which layer you "
         "edit explains ROME's success far better than the tracing effect does. This step edits step 4's fact at "
         "three layers, bottom to top, beside step 2's trace (live without ROME's key covariance, as ROME's own "
         "configs: it would cost minutes per layer on a fresh machine and hardly moves the edited prompt's "
         "score), then cites the record (edit-layers, over 30 facts, with the covariance). If the best place "
         "to write a fact is not where the trace finds it, the trace's peak is not where the fact is kept.",
         where_to_edit, "Edit", "edit-layers"),
]


def step(number: int) -> Step:
    for s in STEPS:
        if s.number == number:
            return s
    raise InputError(f"the lesson has steps 1-{len(STEPS)}, not {number!r}")
