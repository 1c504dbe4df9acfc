"""Knowledge-neuron interventions as edit specs: suppress (x0) or enhance (x2) chosen FFN neurons at the
prediction position. They are hooks, never weight changes, so they are per user and undo themselves;
the worker applies them for one request at a time like any other edit."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from knlab.core.arch import weight_as_out_in
from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.nethook import Trace, get_module, module_weight
from knlab.core.tokens import first_token, spoken_ids, token_strings
from knlab.methods.predict import encode, next_token_probs, top_token

FACTORS = {"suppress": 0.0, "enhance": 2.0}


def check_neurons(lm: LM, neurons: tuple[tuple[int, int], ...]) -> None:
    if not neurons:
        raise InputError("no neurons given")
    for l, i in neurons:
        if not (0 <= l < lm.n_layers and 0 <= i < lm.ffn_width):
            raise InputError(f"neuron {l}:{i} is out of range (layers 0-{lm.n_layers - 1}, "
                             f"neurons 0-{lm.ffn_width - 1})")


@dataclass(frozen=True)
class NeuronIntervention:
    neurons: tuple[tuple[int, int], ...]
    mode: str = "suppress"

    def validate(self, lm: LM) -> None:
        if self.mode not in FACTORS:
            raise InputError(f"unknown mode {self.mode!r} (suppress, enhance)")
        check_neurons(lm, self.neurons)

    def touched_parameters(self, lm: LM) -> list[str]:
        return []

    @contextlib.contextmanager
    def apply(self, lm: LM):
        self.validate(lm)
        factor = FACTORS[self.mode]
        where: dict[str, torch.Tensor] = {}

        def find_positions(ids, _name):  # the prediction position(s) of whatever is being run
            if lm.masked:
                where["mask"] = ids == lm.tokenizer.mask_token_id
            return ids

        by_layer: dict[int, list[int]] = {}
        for l, i in self.neurons:
            by_layer.setdefault(l, []).append(i)
        with contextlib.ExitStack() as stack:
            stack.enter_context(Trace(lm.model, lm.arch.embed, retain_output=False, edit_input=find_positions))
            for l, idx in by_layer.items():
                cols = torch.tensor(idx, device=lm.device)

                def scale(x, _name, cols=cols):
                    x = x.clone()
                    if lm.masked:
                        m = where["mask"][..., None] & torch.isin(torch.arange(x.shape[-1], device=x.device), cols)
                        return torch.where(m, x * factor, x)
                    x[:, -1, cols] = x[:, -1, cols] * factor
                    return x
                stack.enter_context(Trace(lm.model, lm.arch.module("mlp_out", l), retain_output=False,
                                          edit_input=scale))
            yield


def parse_neurons(items: list[str]) -> tuple[tuple[int, int], ...]:
    out = []
    for s in items:
        try:
            l, i = s.split(":")
            out.append((int(l), int(i)))
        except ValueError:
            raise InputError(f"a neuron is written LAYER:INDEX, e.g. 5:1094, not {s!r}") from None
    return tuple(out)


@dataclass
class InterventionResult:
    before: dict
    after: dict

    def to_json(self) -> dict:
        return {"before": self.before, "after": self.after}


def _state(lm: LM, enc, tid: int, top: int) -> dict:
    probs = next_token_probs(lm, enc)
    p, i = probs.topk(min(top, probs.shape[0]))
    return {"target_prob": float(probs[tid]),
            "top": [{"token": t, "prob": float(q)} for t, q in zip(token_strings(lm, i.tolist()), p.tolist())]}


def intervene(lm: LM, prompt: str, neurons: tuple[tuple[int, int], ...], mode: str = "suppress",
              target: str | None = None, top: int = 5) -> InterventionResult:
    """p(target) and the top-k before and after suppressing / enhancing ``neurons``."""
    spec = NeuronIntervention(tuple(neurons), mode)
    spec.validate(lm)
    enc = encode(lm, prompt)
    if target:
        ids = spoken_ids(lm, target, "target")
        if len(ids) != 1:  # p(target) is read at one position: the whole word must be one token there
            raise InputError(f"{target.strip()!r} is not a single token of {lm.spec}")
        tid = ids[0]
    else:
        tid = top_token(lm, next_token_probs(lm, enc))[0]
    before = _state(lm, enc, tid, top)
    with torch.no_grad(), spec.apply(lm):
        after = _state(lm, enc, tid, top)
    return InterventionResult(before, after)


# The KN edit's rule: (lambda_old, lambda_new) in v_i <- v_i - lambda_old x e(old) + lambda_new x e(new).
# "dai": Dai et al. 2022, section 5.1, as knlab reads it (1 and 8; not restated in docs/paper.md). "ekn":
# EleutherAI's knowledge-neurons ``modify_weights(mode="edit")`` (2 and 2), which EasyEdit's KN method
# calls, and EasyEdit produced Yao et al.'s figures that the paper's Fig. 6c quotes.
KN_RULES = {"dai": (1.0, 8.0), "ekn": (2.0, 2.0)}


def check_rule(rule: str) -> tuple[float, float]:
    if rule not in KN_RULES:
        raise InputError(f"unknown KN edit rule {rule!r} ({', '.join(KN_RULES)})")
    return KN_RULES[rule]


@dataclass(frozen=True)
class KnowledgeNeuronEdit:
    """A fact update through knowledge neurons as an edit spec: each neuron's value vector (its column of
    the MLP output projection) moves from the old target's word embedding toward the new one's,
    v_i <- v_i - lambda_old * e(old) + lambda_new * e(new), the lambdas the ``rule``'s (``KN_RULES``).
    Weights change in place for one request; the worker restores them bit for bit. A word is its first
    token's embedding (a BPE word: the piece it starts with; EKN's edit reads one token too)."""

    neurons: tuple[tuple[int, int], ...]
    old: str
    new: str
    rule: str = "dai"
    label: str = ""

    def touched_parameters(self, lm: LM) -> list[str]:
        return sorted({f"{lm.arch.module('mlp_out', l)}.weight" for l, _ in self.neurons})

    @contextlib.contextmanager
    def apply(self, lm: LM):
        lambda_old, lambda_new = check_rule(self.rule)
        check_neurons(lm, self.neurons)
        emb = module_weight(get_module(lm.model, lm.arch.embed), lm.model, lm.arch.embed)
        old, new = first_token(lm, self.old), first_token(lm, self.new)  # a BPE word: the piece it starts with
        if old is None or new is None:
            raise InputError(f"{self.old!r} / {self.new!r}: not words {lm.spec} can say")
        e_old, e_new = emb[old], emb[new]
        with torch.no_grad():
            for l, i in self.neurons:
                W = weight_as_out_in(lm.model, lm.arch.module("mlp_out", l), writable=True)  # a view
                W[:, i] += (lambda_new * e_new - lambda_old * e_old).to(W.dtype)
        yield


@torch.no_grad()
def summed_activation(lm: LM, prompt: str, neurons: tuple[tuple[int, int], ...]) -> float:
    """The neurons' activations at the prompt's prediction position, summed: what multiplies the direction
    a KN edit adds to their value vectors. Where it is negative (a gated MLP's SiLU(gate) x up can be), the
    edit pushes the output *away* from the new word's embedding."""
    check_neurons(lm, neurons)
    enc = encode(lm, prompt)
    layers = sorted({l for l, _ in neurons})
    traces = {l: Trace(lm.model, lm.arch.module("mlp_out", l), retain_input=True, retain_output=False)
              for l in layers}
    try:
        lm.model(input_ids=enc.input_ids)
    finally:
        for t in traces.values():
            t.close()
    return float(sum(traces[l].input[0, enc.position, i].float() for l, i in neurons))
