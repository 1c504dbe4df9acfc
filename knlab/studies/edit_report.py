"""One edit and its report: make a ROME or knowledge-neuron edit of one fact, and measure at once what it
did (reliability, generality) and did not do (locality, symmetry, synonymy), with the probe prompts
(``studies.probes``) and greedy generations before and after; or the same fact edited both ways, side by
side. ``studies.relation_evaluation`` repeats the edit over a relation's facts, as the paper's Table 1 does.

The edit comes back as an edit spec (ROME: layer, u, v; KN: neurons, old, new); the session keeps the
spec, never a copy of the weights, and the worker applies it on each later request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.specs import applied
from knlab.core.tokens import first_token
from knlab.methods.attribute import IG_STEPS, attribute
from knlab.methods.intervene import KnowledgeNeuronEdit, check_rule
from knlab.methods.neurons import select
from knlab.methods.predict import check_prompt, encode, next_token_probs, top_token
from knlab.methods.rome import default_layer, params_for, rome
from knlab.studies.known_facts import find_fact
from knlab.studies.localisation import fact_neurons
from knlab.studies.probes import (NEIGHBOURS, ProbeResult, accuracy_criteria, build_probes, check_scoring, criteria,
                                  probe_probs, resolve, score)
from knlab.world import facts as F
from knlab.world.covariance_texts import covariance_corpus

METHODS = ("rome", "kn")


@dataclass
class EditReport:
    method: str
    model: str
    prompt: str
    subject: str
    old: str
    new: str
    layer: int | None
    neurons: list[tuple[int, int]] | None
    seconds: float
    before: dict
    after: dict
    criteria: dict
    probes: list[ProbeResult]
    generation: dict
    relation: str | None
    spec: Any = field(repr=False, default=None)
    timing: dict = field(default_factory=dict)  # ROME: one-off templates / covariance seconds and the edit itself
    left_out: list[dict] = field(default_factory=list)  # probes the model cannot answer before the edit, and why
    dtype: str = "float32"  # the compute dtype of the edit's method (ROME's v*, the KN edit's IG)
    rule: str | None = None  # the KN edit's rule (``intervene.KN_RULES``); None for ROME
    scoring: str = "first-token"  # how ``criteria`` scored the probes (``probes.SCORINGS``)
    device: str = "cpu"  # where it ran

    def to_json(self) -> dict:
        return {"method": self.method, "model": self.model, "prompt": self.prompt, "subject": self.subject,
                "old": self.old, "new": self.new, "layer": self.layer,
                "neurons": [list(n) for n in self.neurons] if self.neurons is not None else None,
                "seconds": round(self.seconds, 4), "before": self.before, "after": self.after,
                "timing": {k: round(v, 4) for k, v in self.timing.items()},
                "criteria": self.criteria, "relation": self.relation, "generation": self.generation,
                "probes": [p.to_json() for p in self.probes], "left_out": self.left_out, "dtype": self.dtype,
                "rule": self.rule, "scoring": self.scoring, "device": self.device}


def generate(lm: LM, prompt: str, tokens: int = 8) -> str:
    """Greedy continuation (causal) or the prompt with its [MASK] filled (masked)."""
    if tokens <= 0:
        return ""
    enc = encode(lm, prompt)
    if lm.masked:
        return prompt.replace(lm.tokenizer.mask_token, top_token(lm, next_token_probs(lm, enc))[1], 1)
    with torch.no_grad():
        out = lm.model.generate(enc.input_ids, attention_mask=enc.attention_mask, do_sample=False,
                                max_new_tokens=tokens, pad_token_id=lm.tokenizer.pad_token_id
                                if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id)
    return prompt + " " + lm.tokenizer.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True).strip()


def rome_layer(lm: LM) -> int:
    """ROME's layer for this model: the published or shipped one, else its causal trace over the world's
    P36 facts (``rome.default_layer``)."""
    rel = F.relation("P36")
    probes = [(F.causal_prompt(rel.train_templates[0], f.subject), f.subject, f.object) for f in rel.facts]
    return default_layer(lm, probes)


def check_new_target(lm: LM, target: str, old: str) -> int:
    """The new target's token id, refused with the reason when the edit could not show anything: an empty
    target, a word the model cannot say, or the answer it already gives."""
    if not isinstance(target, str) or not target.strip():
        raise InputError("the new target is empty")
    tid = first_token(lm, target)
    if tid is None:
        raise InputError(f"the new target {target.strip()!r} is not something {lm.spec} can say")
    if target.strip() == old or tid == first_token(lm, old):
        raise InputError(f"the model already answers {old!r}; choose a different new target")
    return tid


def make_spec(lm: LM, method: str, prompt: str, subject: str, old: str, new: str, layer: int | None = None,
              steps: int = IG_STEPS, progress: Callable[[float, str], None] | None = None,
              mom2: bool | str = True, rule: str = "dai",
              neurons: list[tuple[int, int]] | None = None) -> tuple[Any, dict]:
    """The edit spec and what describes it (layer or neurons). A KN edit moves ``neurons`` by ``rule``
    (``intervene.KN_RULES``); without ``neurons``, the ones attribution finds (the fact's paraphrases'
    shared KNs where the prompt states a fact of the world, else this prompt's)."""
    if method == "rome":
        params = params_for(lm, mom2=bool(mom2), mom2_corpus=mom2 if isinstance(mom2, str) else None)
        res = rome(lm, prompt, subject, new, layer if layer is not None else rome_layer(lm), params=params,
                   progress=progress, corpus=covariance_corpus(params.mom2_corpus) if params.mom2 else None)
        return res.edit, {"layer": res.layer, "neurons": None, "timing": res.seconds}
    if method == "kn":
        if layer is not None:
            raise InputError("a KN edit has no layer: it edits the neurons attribution finds")
        check_rule(rule)
        if neurons is None:
            found = find_fact(lm, prompt, subject)
            if found and first_token(lm, found[1].object) == first_token(lm, old):  # "Kab" of "Kabul" on BPE
                sel = fact_neurons(lm, found[0].id, subject, steps)  # over the fact's paraphrases, as Dai et al.
            else:
                sel = select([attribute(lm, prompt, old, steps).scores])
            neurons = sel.neurons
        if not neurons:
            raise InputError(f"no knowledge neurons found for {old!r} at this prompt, so there is nothing to edit")
        kns = tuple((int(l), int(i)) for l, i in neurons)
        spec = KnowledgeNeuronEdit(kns, old, new, rule,
                                   label=f"KN ({len(kns)} neurons, rule {rule}): {prompt} -> {new}")
        return spec, {"layer": None, "neurons": list(kns)}
    raise InputError(f"unknown edit method {method!r} (rome, kn)")


def edit(lm: LM, method: str, prompt: str, subject: str, target: str, layer: int | None = None,
         neighbours: int = NEIGHBOURS, progress: Callable[[float, str], None] | None = None,
         generate_tokens: int = 8, mom2: bool | str = True, rule: str = "dai", scoring: str = "first-token",
         neurons: list[tuple[int, int]] | None = None) -> EditReport:
    """Make the edit on the model as this request sees it (earlier edits of the session applied), measure
    the five criteria before and after, and leave the model as it was: the spec is what comes back.
    ``rule``: the KN edit's (``intervene.KN_RULES``); ``scoring``: the criteria's (``probes.SCORINGS``);
    ``neurons``: the KNs to edit, instead of those attribution finds."""
    if method not in METHODS:
        raise InputError(f"unknown edit method {method!r} (rome, kn)")
    check_scoring(scoring)
    check_rule(rule)
    prompt = check_prompt(prompt)
    if not isinstance(subject, str) or not subject.strip() or subject.strip() not in prompt:
        raise InputError(f"the subject {subject!r} is not in the prompt {prompt!r}" if isinstance(subject, str)
                         and subject.strip() else "the subject is empty")
    subject = subject.strip()
    base = next_token_probs(lm, encode(lm, prompt))
    old_id, old = top_token(lm, base)
    new_id = check_new_target(lm, target, old)
    new = target.strip()
    probes, info = build_probes(lm, prompt, subject, old, new, neighbours)
    before = probe_probs(lm, [p.prompt for p in probes])
    kept, left_out = resolve(lm, probes, before)
    probes, before = [probes[k] for k in kept], before[kept]
    gen_before = generate(lm, prompt, generate_tokens)
    t0 = time.perf_counter()
    spec, where = make_spec(lm, method, prompt, subject, old, new, layer, progress=progress, mom2=mom2, rule=rule,
                            neurons=neurons)
    seconds = time.perf_counter() - t0
    with applied(lm, [spec]):
        after = probe_probs(lm, [p.prompt for p in probes])
        gen_after = generate(lm, prompt, generate_tokens)
        p_after = next_token_probs(lm, encode(lm, prompt))
        results = score(lm, probes, before, after)
        scored = criteria(results) if scoring == "first-token" else accuracy_criteria(lm, results)
    return EditReport(method, lm.spec, prompt, subject, old, new, where["layer"], where["neurons"], seconds,
                      {"p_new": float(base[new_id]), "p_old": float(base[old_id])},
                      {"p_new": float(p_after[new_id]), "p_old": float(p_after[old_id])},
                      scored, results, {"before": gen_before, "after": gen_after},
                      info["relation"], spec, where.get("timing", {}), left_out,
                      lm.compute_dtype("rome" if method == "rome" else "ig"), rule if method == "kn" else None,
                      scoring, str(lm.device))


@dataclass
class Comparison:
    """A KN edit and a ROME edit of the same fact, each made on its own (never stacked)."""

    reports: dict[str, EditReport | None]  # "kn", "rome" -> the report, or None where that edit could not be made
    errors: dict[str, str]  # method -> why it could not be made (e.g. no knowledge neurons found)

    def to_json(self) -> dict:
        return {m: (r.to_json() if r is not None else {"error": self.errors[m]}) for m, r in self.reports.items()}


def compare(lm: LM, prompt: str, subject: str, target: str, layer: int | None = None,
            progress: Callable[[float, str], None] | None = None, generate_tokens: int = 8, rule: str = "dai",
            scoring: str = "first-token") -> Comparison:
    """The same fact edited by Dai et al.'s KN edit and by ROME, each on the model as this request sees it
    and undone before the other is made, with the same probes: what each does and does not change."""
    if lm.masked:
        raise InputError(f"comparing needs ROME, which edits causal language models; {lm.spec} is a masked model")
    reports: dict[str, EditReport | None] = {}
    errors: dict[str, str] = {}
    for k, method in enumerate(("kn", "rome")):
        try:
            reports[method] = edit(lm, method, prompt, subject, target, layer if method == "rome" else None,
                                   progress=(lambda f, d="", k=k, m=method: progress(0.5 * (k + f), f"{m}: {d}"))
                                   if progress else None, generate_tokens=generate_tokens, rule=rule,
                                   scoring=scoring)
        except InputError as e:
            if method == "rome" and not reports.get("kn"):
                raise  # neither could be made: the input is the problem, say it once
            reports[method], errors[method] = None, str(e)
    return Comparison(reports, errors)


def describe(spec: Any) -> str:
    """A line for the session's edit history."""
    label = getattr(spec, "label", "")
    if label:
        return label
    neurons = getattr(spec, "neurons", ())
    return f"KN ({len(neurons)} neurons): {getattr(spec, 'old', '?')} -> {getattr(spec, 'new', '?')}"
