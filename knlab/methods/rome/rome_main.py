"""ROME's entry point: compute the rank-one update (u, v) for one fact and hand it back as an edit spec.

The spec holds only the layer and the two vectors (a few kilobytes); the worker applies it per request
and restores the base weights afterwards, so an edit is per user and always reversible."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from knlab.core.arch import weight_as_out_in
from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.nethook import per_model
from knlab.core.tokens import single_token, spoken_ids
from knlab.methods.corruption import noise_level
from knlab.methods.predict import check_prompt
from knlab.methods.rome.compute_u import compute_u, keys_at_subject
from knlab.methods.rome.compute_v import VResult, build_problem, compute_v, right_vector
from knlab.methods.rome.context_templates import context_templates
from knlab.methods.rome.layer_stats import layer_stats
from knlab.methods.rome.repr_tools import prompt_template
from knlab.methods.trace import default_window, grid_cells, locate_subject, restored_probs

# Published edit layers (ROME's hparams; docs/paper.md section 5 for GPT-2 XL and LLaMA-2-7B).
PUBLISHED_LAYERS = {"gpt2-medium": 8, "gpt2-large": 12, "gpt2-xl": 17, "EleutherAI/gpt-j-6B": 5,
                    "EleutherAI/gpt-neox-20b": 15, "meta-llama/Llama-2-7b-hf": 5}
# The shipped real model's layer, from the layer sweep in its model card (assets/models/smollm2-135m): its
# causal trace cannot pick one (every MLP window covering the first layers restores p(answer) equally, so
# the argmax is layer 0), and layer 5, the seed's LLaMA-2 layer, edits reliably with the best locality.
SHIPPED_LAYERS = {"smollm2-135m": 5}


@dataclass(frozen=True)
class RomeParams:
    """docs/paper.md section 5 (the GPT-2 XL configuration) unless said otherwise."""

    v_lr: float = 0.5
    v_steps: int = 20
    kl_factor: float = 0.0625
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    early_stop_loss: float = 0.05
    mom2: bool = True  # the paper's own configs turn it off; on by default here (see the issue / card)
    mom2_corpus: str | None = None  # which corpus the caller measures it on (None / "world", "english", a file)
    mom2_tokens: int | None = None  # a token budget for the covariance's texts (None: all of them)
    template_seed: int = 0


# ROME's optimiser settings per model family, as data (as rome's and EasyEdit's hparams files are): the
# GPT-2 XL configuration above unless the family has its own. LLaMA-family models as the seed edits
# LLaMA-2-7B (EasyEdit's settings: 25 steps, weight decay 1e-3; docs/paper.md section 5).
# The LLaMA lineage: the gated-MLP, RMS-normed, rotary decoders, whatever their other quirks (knlab.core.arch).
# GPT-2's lineage (gpt2, gpt_neo, gptj, gpt_neox, opt) keeps the GPT-2 XL settings. Masked families: none
# (ROME edits causal models).
_LLAMA_SETTINGS = {"v_steps": 25, "v_weight_decay": 1e-3}
LLAMA_LINEAGE = ("llama", "mistral", "qwen2", "qwen3", "smollm3", "granite", "olmo2", "gemma", "gemma2",
                 "gemma3_text", "phi3")
FAMILY_PARAMS: dict[str, dict] = {family: _LLAMA_SETTINGS for family in LLAMA_LINEAGE}
# ROME's edit layer per family as a share of the model's depth, so that one entry fits every size of a family
# (Qwen3-0.6B has 28 blocks, Qwen3-8B 36): the published layer of the family's lineage over that model's
# depth (docs/paper.md section 5; ROME's hparams): GPT-2 XL 17 of 48 (GPT-2 medium 8 of 24 and large 12 of
# 36 agree), GPT-NeoX-20B 15 of 44, GPT-J 5 of 28, LLaMA-2-7B 5 of 32. The layer a model gets is
# ``family_layer``; the causal trace over facts it can answer comes first when there are such facts
# (``default_layer``), this when there are none.
_GPT2_SHARE, _LLAMA_SHARE = 17 / 48, 5 / 32
FAMILY_LAYER_SHARE: dict[str, float] = {
    "gpt2": _GPT2_SHARE, "gpt_neo": _GPT2_SHARE, "opt": _GPT2_SHARE, "gpt_neox": 15 / 44, "gptj": 5 / 28,
    **{family: _LLAMA_SHARE for family in LLAMA_LINEAGE},
}
# Per shipped model, on top of its family's: the real model's covariance is measured over a token budget
# (its 30 layers make the whole world corpus cost minutes on 2 cores; 60k tokens take ~40 s at layer 5).
MODEL_PARAMS: dict[str, dict] = {"smollm2-135m": {"mom2_tokens": 60_000}}


def params_for(lm: LM, **overrides) -> "RomeParams":
    """The RomeParams for this model (its family's, then its own), with ``overrides`` (e.g. ``mom2=False``)
    on top; an override of None keeps the model's value."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(RomeParams(), **{**FAMILY_PARAMS.get(lm.arch.family, {}), **MODEL_PARAMS.get(lm.spec, {}),
                                    **overrides})


@dataclass(frozen=True)
class RomeEdit:
    """W <- W + v u^T on layer ``layer``'s MLP output projection ([out, in] orientation)."""

    layer: int
    u: tuple[float, ...]
    v: tuple[float, ...]
    label: str = ""

    def touched_parameters(self, lm: LM) -> list[str]:
        return [f"{lm.arch.module('mlp_out', self.layer)}.weight"]

    @contextlib.contextmanager
    def apply(self, lm: LM):
        if not 0 <= self.layer < lm.n_layers:
            raise InputError(f"layer {self.layer} is out of range (0-{lm.n_layers - 1})")
        W = weight_as_out_in(lm.model, lm.arch.module("mlp_out", self.layer), writable=True)
        u = torch.tensor(self.u, dtype=torch.float32, device=W.device)
        v = torch.tensor(self.v, dtype=torch.float32, device=W.device)
        if W.shape != (v.shape[0], u.shape[0]):
            raise InputError(f"this edit was made for another model (update {tuple(v.shape)}x{tuple(u.shape)}, "
                             f"layer {self.layer} is {tuple(W.shape)})")
        with torch.no_grad():
            W += torch.outer(v, u).to(W.dtype)
        yield

    def nbytes(self) -> int:
        return 4 * (len(self.u) + len(self.v))


def family_layer(lm: LM) -> int:
    """The family's edit layer scaled to this model's depth (``FAMILY_LAYER_SHARE``): round(share x blocks),
    below the last block, whose MLP output at the subject reaches no later position (a two-block model
    edits block 0)."""
    if lm.arch.family not in FAMILY_LAYER_SHARE:
        raise InputError(f"ROME edits causal language models; family {lm.arch.family} has no ROME layer")
    return max(0, min(lm.n_layers - 2, round(FAMILY_LAYER_SHARE[lm.arch.family] * lm.n_layers)))


def default_layer(lm: LM, probes: Sequence[tuple[str, str, str]] = ()) -> int:
    """The published layer for models ROME was published on, the shipped real model's layer; otherwise the
    model's own causal trace over ``probes`` ((prompt, subject, answer) facts; ``studies.edit_report.rome_layer``
    passes the world's P36 facts): the layer whose MLP, restored at the subject's last token, brings back
    most of p(answer), over the first 10 probes whose answer the model can say (window:
    ``trace.default_window``, a fifth of the depth, at most the published 10); where no probe is given or
    none can be said, the family's layer scaled to the depth (``family_layer``). Measured once per loaded
    model and set of probes."""
    if lm.spec in PUBLISHED_LAYERS:
        return PUBLISHED_LAYERS[lm.spec]
    if lm.spec in SHIPPED_LAYERS:
        return SHIPPED_LAYERS[lm.spec]
    if not probes:
        return family_layer(lm)
    memo = per_model(lm.model, "rome_layer")
    key = tuple(probes)
    if key not in memo:
        memo[key] = _traced_layer(lm, key)
    return memo[key]


def _traced_layer(lm: LM, probes: tuple[tuple[str, str, str], ...], n_facts: int = 10) -> int:
    L = lm.n_layers
    window = default_window(L)
    effect = np.zeros(L)
    used = 0
    for prompt, subject, answer in probes:
        aid = single_token(lm, answer)
        try:
            rng = locate_subject(lm, prompt, subject)
        except InputError:
            continue
        if aid is None:
            continue
        t = rng[1] - 1
        configs = [grid_cells("mlp", t, l, window, L) for l in range(L)]
        res = restored_probs(lm, prompt, rng, aid, configs, 10, noise_level(lm), 0)
        effect += np.asarray(res.probs) - res.corrupted
        used += 1
        if used == n_facts:
            break
    return int(effect.argmax()) if used else family_layer(lm)


@dataclass
class RomeResult:
    edit: RomeEdit
    layer: int
    k_star: np.ndarray
    v_star: np.ndarray
    key: np.ndarray  # the plain prompt's key, which the edited layer maps to v*
    steps: int
    loss: float
    p_target: float
    seconds: dict = field(default_factory=dict)  # "templates", "mom2", "edit"
    dtype: str = "float32"  # the v* optimisation's compute dtype (LM.compute_dtype)
    device: str = "cpu"  # where it ran


def check_layer(lm: LM, layer: int | None) -> int:
    if layer is None:
        return default_layer(lm)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < lm.n_layers:
        raise InputError(f"layer must be a whole number from 0 to {lm.n_layers - 1}")
    return int(layer)


def rome(lm: LM, prompt: str, subject: str, target: str, layer: int | None = None,
         params: RomeParams | None = None, progress: Callable[[float, str], None] | None = None,
         corpus: tuple[str, Sequence[str]] | None = None) -> RomeResult:
    """Compute ROME's update making ``prompt`` (which mentions ``subject``) continue with ``target``
    (``params``: the model family's settings, ``params_for``, unless given). ``corpus``: (name, texts) of
    the key covariance (``world.covariance_texts.covariance_corpus(params.mom2_corpus)``), needed unless
    ``params.mom2`` is off; ``layer``: ``default_layer`` unless given."""
    if lm.masked:
        raise InputError(f"ROME edits causal language models; {lm.spec} is a masked model (use the KN edit)")
    prompt = check_prompt(prompt)
    template = prompt_template(prompt, subject)
    subject = subject.strip()
    if not isinstance(target, str) or not target.strip():
        raise InputError("the new target is empty")
    tids = spoken_ids(lm, target, "target")
    layer = check_layer(lm, layer)
    params = params or params_for(lm)
    seconds = {}
    t0 = time.perf_counter()
    contexts = context_templates(lm, params.template_seed)
    seconds["templates"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mom2 = None
    if params.mom2:
        if corpus is None:
            raise InputError("ROME's key covariance needs a corpus (or params.mom2=False)")
        mom2 = layer_stats(lm, layer, corpus, tokens=params.mom2_tokens,
                           progress=(lambda f: progress(f, "key covariance (once per model and layer)"))
                           if progress else None)
    seconds["mom2"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    u, k_star = compute_u(lm, layer, template, subject, contexts, mom2)
    prob = build_problem(lm, template, subject, tids, contexts)
    with lm.autocast("rome"):  # the v* optimisation's forward passes (KNLAB_DTYPE; float32: no context)
        v: VResult = compute_v(lm, layer, prob, params)
    key = keys_at_subject(lm, layer, [template], subject)[0]
    right = right_vector(v, key, u, v.target_init)
    seconds["edit"] = time.perf_counter() - t0
    label = f"ROME L{layer}: {prompt} -> {target.strip()}"
    spec = RomeEdit(layer, tuple(u.cpu().tolist()), tuple(right.cpu().tolist()), label)
    return RomeResult(spec, layer, k_star.cpu().numpy(), v.target.cpu().numpy(), key.cpu().numpy(), v.steps,
                      v.loss, v.p_target, seconds, lm.compute_dtype("rome"), str(lm.device))
