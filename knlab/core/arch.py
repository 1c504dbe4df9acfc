"""Where things are in each model family: the one table of architecture knowledge in knlab.

Every method addresses modules through ``Arch`` (layer i's MLP down-projection, attention output, ...),
so supporting a new family is one entry here. The FFN "activation" (the knowledge-neuron vector, ROME's
key) is always read and written as the *input of the MLP's output projection*: GPT-2's ``c_proj`` input
is GELU(c_fc(x)), BERT's ``output.dense`` input is the intermediate activation, LLaMA's ``down_proj``
input is SiLU(gate) * up — one hook point for all families.

Where integrated gradients reads a knowledge neuron is a site (``SITES``): knlab's ``activation`` (that
input) or ``pre-activation``, the output of the MLP's first projection (GPT-2's ``c_fc``, LLaMA's
``gate_proj``), before the activation function: the site of the paper's seed code (a fork of EleutherAI's
knowledge-neurons) for GPT-2 and LLaMA. For BERT the seed reads the intermediate module's output, after
GELU: knlab's own site. ``Arch.seed_site`` says which site produced the paper's figures for a family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from knlab.core.errors import InputError
from knlab.core.nethook import get_module


@dataclass(frozen=True)
class Arch:
    family: str
    layers: str  # the ModuleList of blocks
    mlp: str  # relative to a block: the whole MLP (its output is what causal tracing restores)
    mlp_in: str  # first projection (up / c_fc); for gated MLPs the gate
    mlp_out: str  # output (down) projection: its input is the FFN activation, its weight what ROME edits
    attn: str  # the attention module (its first output is what causal tracing restores)
    attn_out: str  # attention output projection
    embed: str  # token embedding (absolute)
    lm_head: str
    masked: bool = False
    # post-LN blocks (BERT): the attention module adds the residual and normalises, so the rest of the
    # block is position-wise: a block's output at one position needs only its attention output there
    attn_adds_residual: bool = False
    # the KN site of the paper's seed code for this family (BERT: after GELU; GPT-2, LLaMA: before it)
    seed_site: str = "pre-activation"

    def layer(self, i: int) -> str:
        return f"{self.layers}.{i}"

    def module(self, kind: str, i: int) -> str:
        """Full module name of ``kind`` ("mlp", "mlp_in", "mlp_out", "attn", "attn_out") in layer i;
        ``kind="hidden"`` is the block itself (its output is the residual stream)."""
        if kind in ("hidden", "layer"):
            return self.layer(i)
        return f"{self.layer(i)}.{getattr(self, kind)}"

    def kn_site(self, site: str, i: int) -> tuple[str, str]:
        """(module name, "input" | "output"): where a knowledge neuron's activation at ``site`` of layer i is
        read and written. For a gated MLP the pre-activation is the gate's (SiLU(0) = 0: zeroing it zeroes
        the neuron, as at the activation)."""
        if site == "activation":
            return self.module("mlp_out", i), "input"
        if site == "pre-activation":
            return self.module("mlp_in", i), "output"
        raise InputError(f"unknown KN site {site!r} ({', '.join(SITES)})")


SITES = ("activation", "pre-activation")


_LLAMA_LIKE = dict(layers="model.layers", mlp="mlp", mlp_in="mlp.gate_proj", mlp_out="mlp.down_proj",
                   attn="self_attn", attn_out="self_attn.o_proj", embed="model.embed_tokens", lm_head="lm_head")

ARCHITECTURES: dict[str, Arch] = {
    "gpt2": Arch("gpt2", layers="transformer.h", mlp="mlp", mlp_in="mlp.c_fc", mlp_out="mlp.c_proj",
                 attn="attn", attn_out="attn.c_proj", embed="transformer.wte", lm_head="lm_head"),
    "gpt_neo": Arch("gpt_neo", layers="transformer.h", mlp="mlp", mlp_in="mlp.c_fc", mlp_out="mlp.c_proj",
                    attn="attn", attn_out="attn.attention.out_proj", embed="transformer.wte", lm_head="lm_head"),
    "gptj": Arch("gptj", layers="transformer.h", mlp="mlp", mlp_in="mlp.fc_in", mlp_out="mlp.fc_out",
                 attn="attn", attn_out="attn.out_proj", embed="transformer.wte", lm_head="lm_head"),
    "gpt_neox": Arch("gpt_neox", layers="gpt_neox.layers", mlp="mlp", mlp_in="mlp.dense_h_to_4h",
                     mlp_out="mlp.dense_4h_to_h", attn="attention", attn_out="attention.dense",
                     embed="gpt_neox.embed_in", lm_head="lm_head"),
    "llama": Arch("llama", **_LLAMA_LIKE),
    "mistral": Arch("mistral", **_LLAMA_LIKE),
    "qwen2": Arch("qwen2", **_LLAMA_LIKE),
    "bert": Arch("bert", layers="bert.encoder.layer", mlp="output.dense", mlp_in="intermediate.dense",
                 mlp_out="output.dense", attn="attention", attn_out="attention.output.dense",
                 embed="bert.embeddings.word_embeddings", lm_head="cls.predictions",
                 masked=True, attn_adds_residual=True, seed_site="activation"),
}


class UnsupportedModel(ValueError):
    pass


def arch_for(model_type: str) -> Arch:
    if model_type not in ARCHITECTURES:
        raise UnsupportedModel(
            f"model family {model_type!r} is not supported; supported families: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


def n_layers(model: torch.nn.Module, arch: Arch) -> int:
    return len(get_module(model, arch.layers))


def weight_as_out_in(module: torch.nn.Module) -> torch.Tensor:
    """The projection's weight as [out_features, in_features], whether it is nn.Linear or GPT-2's Conv1D."""
    w = module.weight
    return w if isinstance(module, torch.nn.Linear) else w.T


def ffn_width(model: torch.nn.Module, arch: Arch) -> int:
    return weight_as_out_in(get_module(model, arch.module("mlp_out", 0))).shape[1]
