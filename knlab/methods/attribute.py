"""Knowledge-neuron attribution (Dai et al. 2022): integrated gradients over every layer's FFN activation.

The activation is the input of the MLP's output projection at the prediction position (the last token,
or the [MASK]); see ``knlab.core.arch``. For layer l the activation a is replaced by scaled copies
gamma * a (baseline zero, gamma = linspace(0, 1, steps)), the gradient of the target's probability with
respect to the scaled activation is summed over the steps, and score = a * sum / steps. All layers are
attributed in one batched forward/backward pass (rows = layer x step); each row changes only its own
layer, exactly as the reference code does one layer at a time.

On families that RMS-normalise the MLP's output before the residual add (OLMo-2, Gemma-2, Gemma-3:
``Arch.mlp_post_norm``) the path is degenerate: the output is the same for every gamma > 0, so the
gradient along it is ~0 except at gamma = 0, where the norm's input vanishes, and the Riemann sum's scores
are dominated by that one point. The scores are computed all the same; read them with that in mind
(tests/test_families.py checks the invariance that causes it).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from knlab.core.errors import InputError
from knlab.core.limits import check_count
from knlab.core.models import LM
from knlab.core.nethook import Trace
from knlab.core.replay import Stages, prefix_reusable, returned_cache, staged_blocks, staged_cache
from knlab.core.tokens import spoken_ids
from knlab.methods.predict import Encoded, encode

IG_STEPS = 20
@dataclass(frozen=True)
class SiteHook:
    """Where a KN site's activation of one layer is read and written: a module's input or output, and, for a
    fused gated projection (``Arch.mlp_in_fused``: Phi-3's gate_up_proj, ModernBERT's Wi), only the first
    half of that output, the pre-activation; the second half, the factor it multiplies, is left alone."""

    module: str
    io: str  # "input" | "output"
    first_half: bool = False

    def read(self, t: torch.Tensor) -> torch.Tensor:
        return t[..., : t.shape[-1] // 2] if self.first_half else t

    def trace(self, lm: LM, edit=None) -> Trace:
        """A Trace retaining the site (``edit`` None) or writing it with ``edit(x, name)``, which sees and
        returns the site's own width."""
        if edit is None:
            return Trace(lm.model, self.module, retain_input=self.io == "input", retain_output=self.io == "output")
        fn = edit
        if self.first_half:
            def fn(x, name):
                w = x.shape[-1] // 2
                return torch.cat([edit(x[..., :w], name), x[..., w:]], -1)
        return Trace(lm.model, self.module, retain_output=False, **{f"edit_{self.io}": fn})

    def value(self, trace: Trace) -> torch.Tensor:
        return self.read(trace.input if self.io == "input" else trace.output)


def site_hook(lm: LM, layer: int, site: str) -> SiteHook:
    """Where ``site``'s activation of ``layer`` is read and written (``Arch.kn_site``; a fused gated projection's
    pre-activation is the first half of its output)."""
    name, io = lm.arch.kn_site(site, layer)
    return SiteHook(name, io, site == "pre-activation" and lm.arch.mlp_in_fused)


@dataclass
class Attribution:
    model: str
    prompt: str
    target: str
    method: str  # "ig" | "activation"
    steps: int
    scores: np.ndarray  # [n_layers, d_ff]
    target_prob: float
    dtype: str = "float32"  # the compute dtype it ran in (LM.compute_dtype("ig"))
    device: str = "cpu"  # where it ran

    def top(self, k: int = 20) -> list[tuple[int, int, float]]:
        flat = np.argsort(self.scores, axis=None)[::-1][:k]
        return [(int(i // self.scores.shape[1]), int(i % self.scores.shape[1]), float(self.scores.flat[i]))
                for i in flat]

    def to_json(self, k: int = 20) -> dict:
        return {"model": self.model, "prompt": self.prompt, "target": self.target, "method": self.method,
                "layers": int(self.scores.shape[0]), "width": int(self.scores.shape[1]),
                "target_prob": self.target_prob, "dtype": self.dtype, "device": self.device,
                "top_neurons": [{"layer": l, "neuron": i, "score": s} for l, i, s in self.top(k)]}


def _activations(lm: LM, enc, site: str = "activation") -> tuple[np.ndarray, torch.Tensor]:
    """Every layer's FFN activation at the prediction position, and the next-token distribution."""
    hooks = [site_hook(lm, l, site) for l in range(lm.n_layers)]
    traces = [h.trace(lm) for h in hooks]
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=enc.input_ids).logits
    finally:
        for t in traces:
            t.close()
    acts = np.stack([h.value(t)[0, enc.position].float().cpu().numpy() for t, h in zip(traces, hooks)])
    return acts, torch.softmax(logits[0, enc.position].float(), -1)


# What autograd keeps per row, position and block for the backward pass, in floats: the block's input and
# the residual sums, the two layer norms' inputs and outputs, queries, keys, values and the attention
# output (~16 x d in all, d the hidden width), and the MLP's W-wide tensors: the first projection(s), the
# activation and, in a gated MLP, the product (~4 x W). An upper bound: a row that scales layer l runs only
# the blocks from l up.
def _floats_per_row_position_block(d: int, W: int) -> int:
    return 16 * d + 4 * W


IG_MEMORY_FLOATS = 2**27  # 512 MiB of float32 activations kept for one backward pass


def ig_layers_per_batch(rows_per_layer: int, positions: int, n_layers: int, d: int, W: int,
                        max_floats: int = IG_MEMORY_FLOATS) -> int:
    """How many layers' scaled copies run in one batch: each layer adds ``rows_per_layer`` rows, each row
    runs at most ``n_layers`` blocks over ``positions`` positions, and each such cell keeps
    ``_floats_per_row_position_block`` floats; so k layers keep at most
    k x rows_per_layer x positions x n_layers x (16d + 4W) floats, which must stay under ``max_floats``."""
    return max(1, max_floats // (rows_per_layer * positions * n_layers * _floats_per_row_position_block(d, W)))


class ScaledActivations:
    """The integrated-gradients path of each layer of a batch, written into the batch as it runs.

    Layer l's rows hold its activation a at the prediction position scaled to baseline + gamma (a -
    baseline) for gamma = 0, 1/(m-1), ..., (m-2)/(m-1) (``steps`` = m points from 0 to 1). The last point,
    gamma = 1, is the clean activation itself: row 0 of the batch, the unchanged run, shared by every
    layer. To read d p / d a_l at gamma = 1 for each layer l from that one row, a zero tensor that
    requires grad is added to row 0's activation at layer l: adding it changes no number, and its
    gradient is exactly the gradient at the clean activation of layer l."""

    def __init__(self, steps: int, baseline: float, device: torch.device):
        self.steps, self.baseline = steps, baseline
        self.shares_clean_row = steps >= 2  # with one step, gamma = 0 only: no row is the clean run
        self.rows_per_layer = steps - 1 if self.shares_clean_row else steps
        self.gammas = torch.linspace(0, 1, steps, device=device)[: self.rows_per_layer]
        self.path: dict[int, torch.Tensor] = {}  # layer -> the scaled activations [rows_per_layer, W]
        self.at_clean: dict[int, torch.Tensor] = {}  # layer -> the zero added to row 0 at that layer
        self.delta: dict[int, torch.Tensor] = {}  # layer -> a - baseline, the path's direction

    def write(self, x: torch.Tensor, layer: int, first_row: int, column: int) -> torch.Tensor:
        """``x``: the input of layer's MLP output projection [rows, positions, W]; its rows first_row..
        take the path, row 0 (computed just now in this batch) gives the clean activation."""
        a = x[0, column].detach()
        base = torch.full_like(a, self.baseline)
        self.delta[layer] = (a - base).float()
        self.path[layer] = (base[None] + self.gammas[:, None].to(a.dtype) * (a - base)[None]).requires_grad_(True)
        x = x.clone()
        x[first_row : first_row + self.rows_per_layer, column] = self.path[layer]
        if self.shares_clean_row:
            self.at_clean[layer] = torch.zeros_like(a).requires_grad_(True)
            x[0, column] = x[0, column] + self.at_clean[layer]
        return x

    def leaves(self, layers: list[int]) -> list[torch.Tensor]:
        return [t for l in layers for t in ([self.path[l], self.at_clean[l]] if self.shares_clean_row
                                             else [self.path[l]])]

    def scores(self, layers: list[int], grads: Sequence[torch.Tensor]) -> dict[int, np.ndarray]:
        """IG = (a - baseline) x the gradient summed over the path's points / steps (a Riemann sum),
        per layer, from the gradients of ``leaves(layers)`` in that order."""
        out, k = {}, 0
        for l in layers:
            total = grads[k].float().sum(0)
            if self.shares_clean_row:
                total = total + grads[k + 1].float()
            k += 2 if self.shares_clean_row else 1
            out[l] = (self.delta[l] * total / self.steps).cpu().numpy()
        return out


def probability_gradient(probs: torch.Tensor, target: int, skip_first: bool = False) -> torch.Tensor:
    """d/dz of sum_r p_target(r) for softmax probabilities ``probs`` [rows, V] of logits z: row r's is
    p_t (e_t - p), written over ``probs`` (row 0 zero with ``skip_first``). IG's objective, differentiated by
    hand: autograd through softmax and the probability's index would allocate, zero and read three more
    rows x 49,152 tensors on the real model, a tenth of IG's time for one small formula."""
    p_t = probs[:, target : target + 1].clone()
    if skip_first:
        p_t[0] = 0
    grad = probs.mul_(-p_t)
    grad[:, target] += p_t[:, 0]
    return grad


def _ig_one_token(lm: LM, enc, tid: int | None, steps: int, baseline: float, layers: list[int],
                  max_floats: int = IG_MEMORY_FLOATS, site: str = "activation") -> tuple[np.ndarray, torch.Tensor]:
    """IG of every layer in ``layers`` (and the clean next-token distribution) for target token ``tid``
    (None: the clean run's top token), in as few batches as memory allows.

    One batch: row 0 is the clean run, then ``steps - 1`` rows per layer, ordered by layer
    (``ScaledActivations``). A row that scales layer l equals the clean run below l, so each block
    computes only row 0 and the rows of the layers at or below it, the rest copying row 0; inside block
    l, l's rows copy the clean attention and first MLP projection too (``replay.staged_blocks``). In a
    causal model the positions before the prediction never see the change, so only the prediction
    position is run, against the keys and values of the prompt before it, computed once. Only the
    prediction position goes through the output head."""
    ids, pos = enc.input_ids, enc.position
    T, L, W = ids.shape[1], lm.n_layers, lm.ffn_width
    # the first position that is run (the ones before it from a cached prefix, where the model allows one)
    first = pos if not lm.masked and pos == T - 1 and prefix_reusable(lm, T) else 0
    column = pos - first  # the prediction position among the positions run
    scores, clean_probs = np.zeros((L, W)), None
    path = ScaledActivations(steps, baseline, lm.device)
    d = lm.model.get_input_embeddings().weight.shape[1]
    per_batch = ig_layers_per_batch(path.rows_per_layer, T - first, L, d, W, max_floats)
    order = sorted(set(layers))

    # step 1: the prompt's keys and values before the prediction position, once for every batch
    prefix = None
    if first and order:
        with torch.no_grad():
            prefix = returned_cache(lm.model.base_model(input_ids=ids[:, :first], use_cache=True))

    def prediction_only(x, _name):  # [rows, positions, ...] -> the prediction position's column
        return x if x.shape[1] == 1 else x[:, column : column + 1]

    for c in range(0, len(order), per_batch):
        batch_layers = order[c : c + per_batch]
        stages = Stages(batch_layers, [path.rows_per_layer] * len(batch_layers))
        last_batch = c + per_batch >= len(order)
        # step 2: the batch continues from the prefix (a copy unless no later batch needs it)
        kwargs = staged_cache(lm, prefix if last_batch or prefix is None else copy.deepcopy(prefix), stages)
        with contextlib.ExitStack() as stack:
            # step 3: each block computes only the rows that can differ from row 0 there
            stack.enter_context(staged_blocks(lm, stages, column))
            if lm.arch.attn_adds_residual:  # the last block is position-wise after its attention
                stack.enter_context(Trace(lm.model, lm.arch.module("attn", L - 1), retain_output=False,
                                          edit_output=prediction_only))
            # step 4: each layer's rows take its path (a one-column input: the last block, already cut)
            for g, l in enumerate(batch_layers):
                def write(x, _name, l=l, row=stages.offset(g)):
                    return path.write(x, l, row, 0 if x.shape[1] == 1 else column)
                # the activation fn between is elementwise: still one column
                stack.enter_context(site_hook(lm, l, site).trace(lm, write))
            stack.enter_context(Trace(lm.model, lm.arch.lm_head, retain_output=False, edit_input=prediction_only))
            # step 5: one forward and one backward for every layer of the batch
            with torch.enable_grad():
                logits = lm.model(input_ids=ids[:, first:].expand(stages.total, T - first), **kwargs).logits
            with torch.no_grad():
                probs = torch.softmax(logits[:, -1].float(), -1)  # [rows, V]
                if clean_probs is None:
                    clean_probs = probs[0].clone()
                t = int(clean_probs.argmax()) if tid is None else tid
                # row 0 counts only when it is the path's last point (it is then every layer's gamma = 1)
                grad_logits = probability_gradient(probs, t, skip_first=not path.shares_clean_row)
            grads = torch.autograd.grad(logits, path.leaves(batch_layers),
                                        grad_outputs=grad_logits[:, None].to(logits.dtype))
        for l, row in path.scores(batch_layers, grads).items():
            scores[l] = row
    if clean_probs is None:  # no layer asked for
        clean_probs = _activations(lm, enc, site)[1]
    return scores, clean_probs


def attribute(lm: LM, prompt: str, target: str | None = None, steps: int = IG_STEPS, method: str = "ig",
              baseline: float = 0.0, layers: list[int] | None = None, site: str = "activation") -> Attribution:
    """The [n_layers, d_ff] attribution map of ``target`` (default: the model's top prediction), at the KN
    ``site`` (``knlab.core.arch.SITES``: knlab's, after the activation function, or the seed's, before it;
    ``lm.arch.seed_site`` is the one behind the paper's figures)."""
    if method not in ("ig", "activation"):
        raise InputError(f"unknown attribution method {method!r} (ig, activation)")
    lm.arch.kn_site(site, 0)  # an unknown site is one clear message
    steps = check_count(steps, "ig_steps", "steps")
    if not np.isfinite(baseline):
        raise InputError("the baseline must be a finite number")
    enc = encode(lm, prompt)
    tids = None if target is None or not str(target).strip() else _target_ids(lm, str(target))
    layers = list(range(lm.n_layers)) if layers is None else layers
    if any(not 0 <= l < lm.n_layers for l in layers):
        raise InputError(f"layers must be between 0 and {lm.n_layers - 1}")
    with lm.autocast("ig"):  # KNLAB_DTYPE (float32: no context at all)
        return _attribute(lm, prompt, enc, tids, steps, method, baseline, layers, site)


def _attribute(lm: LM, prompt: str, enc, tids, steps: int, method: str, baseline: float, layers: list[int],
               site: str) -> Attribution:
    # multi-token targets: greedy, one token after another, maps averaged
    if method == "activation":
        first_map, probs = _activations(lm, enc, site)
    else:
        first_map, probs = _ig_one_token(lm, enc, tids[0] if tids else None, steps, baseline, layers, site=site)
    tids = tids or [int(probs.argmax())]
    maps = [first_map]
    for k in range(1, len(tids)):
        e = _extend(enc, tids[:k])
        maps.append(_activations(lm, e, site)[0] if method == "activation"
                    else _ig_one_token(lm, e, tids[k], steps, baseline, layers, site=site)[0])
    name = lm.tokenizer.decode(tids).strip()
    return Attribution(lm.spec, prompt.strip(), name, method, steps, np.mean(maps, 0), float(probs[tids[0]]),
                       lm.compute_dtype("ig"), str(lm.device))


def _extend(enc, ids: list[int]):
    """The prompt followed by the target's first tokens: the next position predicts the next token."""
    extra = torch.tensor([ids], device=enc.input_ids.device)
    x = torch.cat([enc.input_ids, extra], 1)
    return Encoded(x, torch.ones_like(x), x.shape[1] - 1, enc.tokens + [str(i) for i in ids])


def _target_ids(lm: LM, target: str) -> list[int]:
    """The tokens a target is attributed to: all its pieces, one after another, after a causal prompt; a masked
    model fills its one [MASK] with one token, so there the target must be one."""
    ids = spoken_ids(lm, target, "target")
    if lm.masked and len(ids) != 1:
        raise InputError(f"{target.strip()!r} is not a single token of {lm.spec}")
    return ids
