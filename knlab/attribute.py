"""Knowledge-neuron attribution (Dai et al. 2022): integrated gradients over every layer's FFN activation.

The activation is the input of the MLP's output projection at the prediction position (the last token,
or the [MASK]); see ``knlab.arch``. For layer l the activation a is replaced by scaled copies
gamma * a (baseline zero, gamma = linspace(0, 1, steps)), the gradient of the target's probability with
respect to the scaled activation is summed over the steps, and score = a * sum / steps. All layers are
attributed in one batched forward/backward pass (rows = layer x step); each row changes only its own
layer, exactly as the reference code does one layer at a time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from knlab.errors import InputError
from knlab.models import LM
from knlab.nethook import Trace, TraceDict
from knlab.predict import encode, target_id, target_ids
from knlab.replay import Stages, returned_cache, staged_blocks, staged_cache, staged_modules

IG_STEPS = 20


@dataclass
class Attribution:
    model: str
    prompt: str
    target: str
    method: str  # "ig" | "activation"
    steps: int
    scores: np.ndarray  # [n_layers, d_ff]
    target_prob: float

    def top(self, k: int = 20) -> list[tuple[int, int, float]]:
        flat = np.argsort(self.scores, axis=None)[::-1][:k]
        return [(int(i // self.scores.shape[1]), int(i % self.scores.shape[1]), float(self.scores.flat[i]))
                for i in flat]

    def to_json(self, k: int = 20) -> dict:
        return {"model": self.model, "prompt": self.prompt, "target": self.target, "method": self.method,
                "layers": int(self.scores.shape[0]), "width": int(self.scores.shape[1]),
                "target_prob": self.target_prob,
                "top_neurons": [{"layer": l, "neuron": i, "score": s} for l, i, s in self.top(k)]}


@dataclass
class _Recording:
    """One clean forward pass: what IG continues from (blocks, attention, first MLP projection, the
    keys and values when only the prediction position is recomputed) and the FFN activations."""
    modules: TraceDict
    acts: list[torch.Tensor]  # [d_ff] per layer, at the prediction position
    probs: torch.Tensor  # next-token distribution at the prediction position
    cache: object | None
    first: int  # the first position IG recomputes (the prediction itself, when a cache is kept)


def _record(lm: LM, enc) -> _Recording:
    ids, pos = enc.input_ids, enc.position
    T, L = ids.shape[1], lm.n_layers
    act_traces = [Trace(lm.model, lm.arch.module("mlp_out", l), retain_input=True, retain_output=False)
                  for l in range(L)]
    suffix = not lm.masked and pos == T - 1
    try:
        with torch.no_grad(), TraceDict(lm.model, staged_modules(lm)) as modules:
            res = lm.model(input_ids=ids, use_cache=suffix)
    finally:
        for t in act_traces:
            t.close()
    cache = returned_cache(res) if suffix else None
    return _Recording(modules, [t.input[0, pos].float() for t in act_traces],
                      torch.softmax(res.logits[0, pos].float(), -1), cache, pos if cache is not None else 0)


def _ig_one_token(lm: LM, enc, tid: int, steps: int, baseline: float, layers: list[int],
                  clean: _Recording, max_floats: int = 2**27) -> np.ndarray:
    """IG of every layer in ``layers``, all in one batch (rows = layer x step, ordered by layer).
    A row that scales layer l equals the clean run below l, so each block computes only the rows of
    the layers at or below it and the rest take the clean run's output; inside block l, l's rows take
    the clean attention and first MLP projection too. In a causal model the positions before the
    prediction never see the change, so only that position is recomputed, against the clean run's keys
    and values. Only the prediction position goes through the output head."""
    ids, pos = enc.input_ids, enc.position
    T, L = ids.shape[1], lm.n_layers
    acts, cache, first = clean.acts, clean.cache, clean.first
    W = acts[0].shape[0]
    gammas = torch.linspace(0, 1, steps, device=lm.device)
    scores = np.zeros((L, W))
    # activations kept for the backward pass grow with rows x positions x blocks: bound them
    d = lm.model.get_input_embeddings().weight.shape[1]
    per_layer = steps * (T - first) * L * (16 * d + 4 * W)
    per = max(1, max_floats // per_layer)
    order = sorted(set(layers))
    for c in range(0, len(order), per):
        chunk = order[c : c + per]
        stages = Stages(chunk, [steps] * len(chunk))
        scaled = {}
        for l in chunk:
            base = torch.full_like(acts[l], baseline)
            s = (base[None] + gammas[:, None] * (acts[l] - base)[None]).to(lm.model.dtype)
            scaled[l] = s.detach().requires_grad_(True)

        def put(x, name, l=None, j=None):
            x = x.clone()
            x[j * steps : (j + 1) * steps, pos - first] = scaled[l]
            return x

        def prediction_only(x, name):
            return x[:, pos - first : pos - first + 1]

        kwargs = staged_cache(lm, cache, first, T, stages)
        with contextlib.ExitStack() as stack:
            stack.enter_context(staged_blocks(lm, clean.modules, stages, first))
            for j, l in enumerate(chunk):
                stack.enter_context(Trace(lm.model, lm.arch.module("mlp_out", l), retain_output=False,
                                          edit_input=lambda x, n, l=l, j=j: put(x, n, l, j)))
            stack.enter_context(Trace(lm.model, lm.arch.lm_head, retain_output=False, edit_input=prediction_only))
            with torch.enable_grad():
                logits = lm.model(input_ids=ids[:, first:].expand(stages.total, T - first), **kwargs).logits
                probs = torch.softmax(logits[:, -1].float(), -1)[:, tid]
                grads = torch.autograd.grad(probs.sum(), [scaled[l] for l in chunk])
        for l, g in zip(chunk, grads):
            scores[l] = ((acts[l] - baseline) * g.float().sum(0) / steps).cpu().numpy()
    return scores


def attribute(lm: LM, prompt: str, target: str | None = None, steps: int = IG_STEPS, method: str = "ig",
              baseline: float = 0.0, layers: list[int] | None = None) -> Attribution:
    """The [n_layers, d_ff] attribution map of ``target`` (default: the model's top prediction)."""
    if method not in ("ig", "activation"):
        raise InputError(f"unknown attribution method {method!r} (ig, activation)")
    from knlab.limits import check_count
    steps = check_count(steps, "ig_steps", "steps")
    if not np.isfinite(baseline):
        raise InputError("the baseline must be a finite number")
    enc = encode(lm, prompt)
    clean = _record(lm, enc)
    probs = clean.probs
    if target is None or not str(target).strip():
        tids = [int(probs.argmax())]
    else:
        tids = _target_ids(lm, str(target))
    layers = list(range(lm.n_layers)) if layers is None else layers
    if any(not 0 <= l < lm.n_layers for l in layers):
        raise InputError(f"layers must be between 0 and {lm.n_layers - 1}")
    p = float(probs[tids[0]])
    maps = []
    for k, tid in enumerate(tids):  # multi-token targets: greedy, one token after another, averaged
        e = enc if k == 0 else _extend(enc, tids[:k])
        rec = clean if k == 0 else _record(lm, e)
        if method == "activation":
            maps.append(np.stack([a.cpu().numpy() for a in rec.acts]))
        else:
            maps.append(_ig_one_token(lm, e, tid, steps, baseline, layers, rec))
    name = lm.tokenizer.decode(tids).strip()
    return Attribution(lm.spec, prompt.strip(), name, method, steps, np.mean(maps, 0), p)


def _extend(enc, ids: list[int]):
    """The prompt followed by the target's first tokens: the next position predicts the next token."""
    from knlab.predict import Encoded
    extra = torch.tensor([ids], device=enc.input_ids.device)
    x = torch.cat([enc.input_ids, extra], 1)
    return Encoded(x, torch.ones_like(x), x.shape[1] - 1, enc.tokens + [str(i) for i in ids])


def _target_ids(lm: LM, target: str) -> list[int]:
    return [target_id(lm, target)] if lm.masked else target_ids(lm, target)
