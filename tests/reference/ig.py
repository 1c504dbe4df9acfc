"""Knowledge-neuron attribution by integrated gradients, the straightforward way (Dai et al. 2022, and
the EleutherAI knowledge-neurons code the paper's seed forks).

For each layer on its own: read the FFN activation a (the input of the MLP's output projection) at the
prediction position in a clean run; then one forward/backward of ``steps`` copies of the prompt with
that activation replaced by gamma * a, gamma = linspace(0, 1, steps), the whole network recomputed; the
score is a * (sum over steps of d p(target) / d(gamma a)) / steps. Baseline zero. ``site="pre-activation"``:
the seed's site instead, the output of the MLP's first projection before the activation function, named
here as the seed names it (``SEED_MODULES``: GPT-2's ``mlp.c_fc``, LLaMA's ``mlp.gate_proj``), not through
knlab's architecture table. Where that projection is fused (``arch.mlp_in_fused``: Phi-3, ModernBERT), the
first half of its output.
Imports nothing from knlab (see __init__.py).
"""

from __future__ import annotations

import numpy as np
import torch

from .hooks import hooked
from .trace import encode


# the seed's KN module per family (kn_code/knowledge_neurons.py: GPT-2's c_fc, LLaMA's gate_proj), with the
# ModuleList of blocks it sits in
SEED_MODULES = {"gpt2": "transformer.h.{}.mlp.c_fc", "llama": "model.layers.{}.mlp.gate_proj",
                "qwen2": "model.layers.{}.mlp.gate_proj"}


def ig_straightforward(lm, prompt, target_id, steps, site="activation", module=None):
    """[n_layers, d_ff] IG scores of the target token's probability at the prediction position.
    ``module``: for the pre-activation site of a family the seed never ran, the architecture entry whose
    output to read (e.g. "mlp_in")."""
    read = "input" if site == "activation" else "output"
    ids, pos = encode(lm, prompt)
    T = ids.shape[1]
    scores = []
    for l in range(lm.n_layers):
        # the FFN activation is the output projection's input; the pre-activation, the seed's module's output
        name = (lm.arch.module("mlp_out", l) if site == "activation" else lm.arch.module(module, l) if module
                else SEED_MODULES[lm.model.config.model_type].format(l))
        with torch.no_grad(), hooked(lm.model, name) as seen:
            lm.model(input_ids=ids)
        half = site != "activation" and lm.arch.mlp_in_fused
        width = seen[read].shape[-1] // 2 if half else seen[read].shape[-1]
        act = seen[read][0, pos, :width].float()
        scaled = (torch.linspace(0, 1, steps)[:, None] * act[None]).requires_grad_(True)

        def put(x):
            x = x.clone()
            x[:, pos, :width] = scaled.to(x.dtype)
            return x

        with torch.enable_grad(), hooked(lm.model, name, **{f"edit_{read}": put}):
            probs = torch.softmax(lm.model(input_ids=ids.expand(steps, T)).logits[:, pos].float(), -1)[:, target_id]
            (grad,) = torch.autograd.grad(probs.sum(), [scaled])
        scores.append((act * grad.sum(0) / steps).numpy())
    return np.stack(scores)
