"""The paper's argument in six steps, each a live run on one model (the real smollm2-135m when it is
installed, else the organism world-gpt): the model knows a fact; causal tracing says where it is computed;
integrated gradients finds "knowledge neurons", whose suppression barely changes the answer; ROME rewrites
the fact and the generation follows; the reverse question and the synonym do not; and grammar yields to the
same instruments. What to notice is written here from the paper (docs/paper.md); whether this model's run
agrees is computed, and said, step by step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from knlab.core.errors import InputError
from knlab.core.models import LM, shipped_installed
from knlab.core.tokens import first_token
from knlab.methods.attribute import attribute
from knlab.methods.intervene import intervene
from knlab.methods.predict import predict
from knlab.methods.trace import trace
from knlab.studies import published
from knlab.studies.claims.editing import rome_examples, rome_syntax
from knlab.studies.edit_report import edit

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
    agrees: bool | None  # does this model's run agree with the paper's reading of the step
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


def neurons(lm: LM) -> StepResult:
    prompt, _subject, answer, _new = _fact(lm)
    att = attribute(lm, prompt, answer)
    top = [(l, i) for l, i, _ in att.top(5)]
    res = intervene(lm, prompt, tuple(top), "suppress", answer)
    before, after = res.before["target_prob"], res.after["target_prob"]
    still = res.after["top"][0]["token"].strip() == res.before["top"][0]["token"].strip()
    return StepResult(3, lm.spec, f"the 5 neurons with the largest integrated gradients for {answer}: {top}. "
                      f"Suppressing them moves p({answer}) {before:.3f} -> **{after:.3f}**; the answer "
                      f"{'stays' if still else 'changes to ' + res.after['top'][0]['token'].strip()}.",
                      still, "neurons", att, {"neurons": [list(n) for n in top], "p_before": before, "p_after": after,
                                              "top_after": res.after["top"][0]["token"]})


def rewrite(lm: LM) -> StepResult:
    prompt, subject, _answer, new = _fact(lm)
    rep = edit(lm, "rome", prompt, subject, new)
    took = rep.after["p_new"] > rep.after["p_old"]
    return StepResult(4, lm.spec, f"ROME at layer {rep.layer}: p({new}) {rep.before['p_new']:.3f} -> "
                      f"**{rep.after['p_new']:.3f}**, p({rep.old}) {rep.before['p_old']:.3f} -> {rep.after['p_old']:.3f}. "
                      f"Before: *{rep.generation['before']}*; after: *{rep.generation['after']}* (the edit is undone "
                      f"after this step).", took, "edit", rep)


def reverse_and_synonym(lm: LM) -> StepResult:
    run = rome_examples(lm, 1)
    return StepResult(5, lm.spec, run.finding, run.holds, "claim", run)


def grammar(lm: LM) -> StepResult:
    run = rome_syntax(lm, 1)
    edited = run.detail["edit"][0]
    took = run.detail["prompts"][edited]["after"] == "is"
    return StepResult(6, lm.spec, f"ROME edits '{edited}' from are to is as it edits a capital: it "
                      f"{'takes' if took else 'does not take'}. {run.finding}", took, "claim", run)


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
         "and the synonym in 52-58% (GPT-2 XL, LLaMA-2). A claim of the Paper tab (rome-examples) reruns it; "
         "where this model disagrees with the paper, the result says so.", reverse_and_synonym, "Paper", "rome-examples"),
    Step(6, "Grammar yields to the same instruments: patterns, not knowledge",
         "Determiner-noun and subject-verb agreement have their own 'knowledge neurons' (Paper tab: kn-sharing, "
         "localisation) and ROME rewrites 'are' to 'is' after a subject as it rewrites a capital. If the methods "
         "find the same kind of thing for grammar as for facts, what they find is how the model completes token "
         "patterns, not a store of knowledge: the paper's conclusion.", grammar, "Paper", "rome-syntax"),
]


def step(number: int) -> Step:
    for s in STEPS:
        if s.number == number:
            return s
    raise InputError(f"the lesson has steps 1-{len(STEPS)}, not {number!r}")
