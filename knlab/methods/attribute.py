"""Knowledge-neuron attribution (Dai et al. 2022): integrated gradients over every layer's FFN activation.

The activation is the input of the MLP's output projection at the prediction position (the last token,
or the [MASK]); see ``knlab.core.arch``. For layer l the activation a is replaced by scaled copies
gamma * a (baseline zero, gamma = linspace(0, 1, steps)), the gradient of the target's probability with
respect to the scaled activation is summed over the steps, and score = a * sum / steps. All layers are
attributed in one batched forward/backward pass (rows = layer x step); each row changes only its own
layer, exactly as the reference code does one layer at a time.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch

from knlab.core.errors import InputError
from knlab.core.limits import check_count
from knlab.core.models import LM
from knlab.core.nethook import Trace
from knlab.core.replay import Stages, returned_cache, staged_blocks, staged_cache
from knlab.methods.predict import Encoded, encode, target_id, target_ids

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


def _activations(lm: LM, enc) -> tuple[np.ndarray, torch.Tensor]:
    """Every layer's FFN activation at the prediction position, and the next-token distribution."""
    traces = [Trace(lm.model, lm.arch.module("mlp_out", l), retain_input=True, retain_output=False)
              for l in range(lm.n_layers)]
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=enc.input_ids).logits
    finally:
        for t in traces:
            t.close()
    acts = np.stack([t.input[0, enc.position].float().cpu().numpy() for t in traces])
    return acts, torch.softmax(logits[0, enc.position].float(), -1)


def _ig_one_token(lm: LM, enc, tid: int | None, steps: int, baseline: float, layers: list[int],
                  max_floats: int = 2**27) -> tuple[np.ndarray, torch.Tensor]:
    """IG of every layer in ``layers`` (and the clean next-token distribution), all in one batch:
    row 0 is the clean run, then ``steps - 1`` rows per layer, ordered by layer (the last step, gamma = 1,
    is the clean run itself, whose gradients come from row 0 for every layer). A row that scales layer l
    equals the clean run below l, so each block computes only the clean row and the rows of the
    layers at or below it, the rest copying the clean row; inside block l, l's rows copy the clean
    attention and first MLP projection too. In a causal model the positions before the prediction
    never see the change, so only the prediction position is run, against the keys and values of
    the prompt before it. Only the prediction position goes through the output head. ``tid`` None:
    the clean run's top token."""
    ids, pos = enc.input_ids, enc.position
    T, L, W = ids.shape[1], lm.n_layers, lm.ffn_width
    first = pos if not lm.masked and pos == T - 1 else 0  # the first position that is run
    gammas = torch.linspace(0, 1, steps, device=lm.device)
    shared_last = steps >= 2
    rows_per_layer = steps - 1 if shared_last else steps
    scores, clean_probs = np.zeros((L, W)), None
    # activations kept for the backward pass grow with rows x positions x blocks: bound them
    d = lm.model.get_input_embeddings().weight.shape[1]
    per = max(1, max_floats // (rows_per_layer * (T - first) * L * (16 * d + 4 * W)))
    order = sorted(set(layers))
    prefix = None
    if first and order:  # the prompt's keys and values before the prediction: once, for every chunk
        with torch.no_grad():
            prefix = returned_cache(lm.model.base_model(input_ids=ids[:, :first], use_cache=True))
    for c in range(0, len(order), per):
        chunk = order[c : c + per]
        stages = Stages(chunk, [rows_per_layer] * len(chunk))
        last_chunk = c + per >= len(order)
        kwargs = staged_cache(lm, prefix if last_chunk or prefix is None else copy.deepcopy(prefix), stages)
        leaves: dict[int, list[torch.Tensor]] = {}
        diffs: dict[int, torch.Tensor] = {}

        def put(x, name, l=None, row=None):
            col = 0 if x.shape[1] == 1 else pos - first  # one column: the last block, cut to the prediction
            a = x[0, col].detach()  # the clean activation: row 0, computed just now
            base = torch.full_like(a, baseline)
            scaled = (base[None] + gammas[:rows_per_layer, None].to(a.dtype) * (a - base)[None])
            leaves[l] = [scaled.requires_grad_(True)]
            diffs[l] = (a - base).float()
            x = x.clone()
            x[row : row + rows_per_layer, col] = scaled
            if shared_last:  # an added zero, so that the gradient still flows to the layers below
                leaves[l].append(torch.zeros_like(a).requires_grad_(True))
                x[0, col] = x[0, col] + leaves[l][1]
            return x

        def prediction_only(x, name):
            return x if x.shape[1] == 1 else x[:, pos - first : pos - first + 1]

        with contextlib.ExitStack() as stack:
            stack.enter_context(staged_blocks(lm, stages, pos - first))
            if lm.arch.attn_adds_residual:  # the last block is position-wise after its attention
                stack.enter_context(Trace(lm.model, lm.arch.module("attn", L - 1), retain_output=False,
                                          edit_output=prediction_only))
            for g, l in enumerate(chunk):
                stack.enter_context(Trace(lm.model, lm.arch.module("mlp_out", l), retain_output=False,
                                          edit_input=lambda x, n, l=l, r=stages.offset(g): put(x, n, l, r)))
            stack.enter_context(Trace(lm.model, lm.arch.lm_head, retain_output=False, edit_input=prediction_only))
            with torch.enable_grad():
                logits = lm.model(input_ids=ids[:, first:].expand(stages.total, T - first), **kwargs).logits
                probs = torch.softmax(logits[:, -1].float(), -1)
                if clean_probs is None:
                    clean_probs = probs[0].detach()
                t = int(clean_probs.argmax()) if tid is None else tid
                objective = probs[:, t].sum() if shared_last else probs[1:, t].sum()
                grads = torch.autograd.grad(objective, [v for l in chunk for v in leaves[l]])
        k = 0
        for l in chunk:
            total = grads[k].float().sum(0)
            if shared_last:
                total = total + grads[k + 1].float()
            k += len(leaves[l])
            scores[l] = (diffs[l] * total / steps).cpu().numpy()
    if clean_probs is None:  # no layer asked for
        clean_probs = _activations(lm, enc)[1]
    return scores, clean_probs


def attribute(lm: LM, prompt: str, target: str | None = None, steps: int = IG_STEPS, method: str = "ig",
              baseline: float = 0.0, layers: list[int] | None = None) -> Attribution:
    """The [n_layers, d_ff] attribution map of ``target`` (default: the model's top prediction)."""
    if method not in ("ig", "activation"):
        raise InputError(f"unknown attribution method {method!r} (ig, activation)")
    steps = check_count(steps, "ig_steps", "steps")
    if not np.isfinite(baseline):
        raise InputError("the baseline must be a finite number")
    enc = encode(lm, prompt)
    tids = None if target is None or not str(target).strip() else _target_ids(lm, str(target))
    layers = list(range(lm.n_layers)) if layers is None else layers
    if any(not 0 <= l < lm.n_layers for l in layers):
        raise InputError(f"layers must be between 0 and {lm.n_layers - 1}")
    # multi-token targets: greedy, one token after another, maps averaged
    if method == "activation":
        first_map, probs = _activations(lm, enc)
    else:
        first_map, probs = _ig_one_token(lm, enc, tids[0] if tids else None, steps, baseline, layers)
    tids = tids or [int(probs.argmax())]
    maps = [first_map]
    for k in range(1, len(tids)):
        e = _extend(enc, tids[:k])
        maps.append(_activations(lm, e)[0] if method == "activation"
                    else _ig_one_token(lm, e, tids[k], steps, baseline, layers)[0])
    name = lm.tokenizer.decode(tids).strip()
    return Attribution(lm.spec, prompt.strip(), name, method, steps, np.mean(maps, 0), float(probs[tids[0]]))


def _extend(enc, ids: list[int]):
    """The prompt followed by the target's first tokens: the next position predicts the next token."""
    extra = torch.tensor([ids], device=enc.input_ids.device)
    x = torch.cat([enc.input_ids, extra], 1)
    return Encoded(x, torch.ones_like(x), x.shape[1] - 1, enc.tokens + [str(i) for i in ids])


def _target_ids(lm: LM, target: str) -> list[int]:
    return [target_id(lm, target)] if lm.masked else target_ids(lm, target)
