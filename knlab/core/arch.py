"""Where things are in each model family: the one table of architecture knowledge in knlab.

Every method addresses modules through ``Arch`` (layer i's MLP down-projection, attention output, ...),
so supporting a new family is one entry here. The FFN "activation" (the knowledge-neuron vector, ROME's
key) is always read and written as the *input of the MLP's output projection*: GPT-2's ``c_proj`` input
is GELU(c_fc(x)), BERT's ``output.dense`` input is the intermediate activation, LLaMA's ``down_proj``
input is SiLU(gate) * up, Phi-3's ``down_proj`` input is up * SiLU(gate) from its fused ``gate_up_proj`` — one
hook point for all families.

Family quirks live here, in the entry's fields, and nowhere else:
- Gemma (gemma, gemma2, gemma3_text) multiplies its token embeddings by sqrt(hidden size) *inside* the
  embedding module, so the embedding module's output, where the causal trace adds its noise, is
  sqrt(d) x the weight rows. The trace's "3 sd of the embeddings" is measured on that output
  (``knlab.methods.corruption.embedding_std``), never on the raw weight, so it corrupts Gemma as much as any
  other family. Granite's ``embedding_multiplier`` is applied by the model *after* the module: noise and
  embeddings are scaled together, so the module's output is again the right thing to measure.
- OLMo-2, Gemma-2 and Gemma-3 normalise each MLP's and attention's output before adding it to the residual
  stream (post-block norms, ``mlp_post_norm``). The modules the methods address (``mlp``, ``attn``,
  ``mlp_out``) are the ones before that norm; restoring or editing them passes through the norm as the
  model itself does. One consequence the table records because it changes what IG means there: the down
  projection has no bias, so the MLP's output is linear in the FFN activation and its RMS norm undoes
  any scaling of it. IG's path gamma * a (gamma > 0) then leaves the output unchanged, all of a layer's
  effect sits at gamma -> 0, and the Riemann sum's scores no longer add up to what the layer carries.
- Phi-3 (``gate_up_proj``) and ModernBERT (``Wi``) fuse the MLP's two input projections into one
  (``mlp_in_fused``): the first half of its output is the pre-activation, the second the factor it
  multiplies. The knowledge-neuron activation (the down projection's input) needs nothing special; the
  pre-activation site (``kn_site``; ``knlab.methods.attribute.site_hook``) reads and writes the first half only.
- OPT's blocks flatten the batch to [batch x positions, d] before their MLP, and its MLP is two linears of
  the block itself (``fc1``, ``fc2``: ``mlp`` is ``fc2``). ``mlp_flat`` declares it; the one hook utility
  (``nethook.declare_flattened``, done when a model is wrapped: ``knlab.core.models.LM``) shows hooks the
  usual [batch, positions, width], and ``knlab.core.replay.staged_blocks`` leaves those two modules whole.
- BERT and RoBERTa add the residual inside their attention module (``attn_adds_residual``); DistilBERT,
  the same post-LN design, adds it in the block, so its entry leaves the flag off.
- DistilBERT's and ModernBERT's masked-LM heads are not one module: ``lm_head`` names the first one
  (``vocab_transform`` / ``head``), whose input is the last hidden state.

Families knlab refuses are in ``REFUSED`` with the reason: a mixture-of-experts MLP (qwen3_moe, mixtral)
has no one FFN activation per layer for knowledge neurons or ROME's key, only one per expert.

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

from knlab.core.errors import InputError, KnlabError
from knlab.core.nethook import declare_flattened, get_module, module_weight


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
    # a fused gated MLP (Phi-3's gate_up_proj, ModernBERT's Wi): mlp_in's output is [pre-activation | factor],
    # the activation function applied to its first half (see the module docstring)
    mlp_in_fused: bool = False
    # the block RMS-normalises the MLP's output before the residual add (OLMo-2, Gemma-2/3; module docstring)
    mlp_post_norm: bool = False
    # the block runs its MLP on the batch flattened to [batch x positions, d] (OPT; see the module docstring)
    mlp_flat: bool = False
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
_BERT_LIKE = dict(mlp="output.dense", mlp_in="intermediate.dense", mlp_out="output.dense", attn="attention",
                  attn_out="attention.output.dense", masked=True, attn_adds_residual=True,
                  seed_site="activation")  # the seed reads BERT after GELU

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
    # OPT's MLP is two linears in the block itself: fc2's output is the MLP's
    "opt": Arch("opt", layers="model.decoder.layers", mlp="fc2", mlp_in="fc1", mlp_out="fc2", attn="self_attn",
                attn_out="self_attn.out_proj", embed="model.decoder.embed_tokens", lm_head="lm_head", mlp_flat=True),
    "llama": Arch("llama", **_LLAMA_LIKE),
    "mistral": Arch("mistral", **_LLAMA_LIKE),
    "qwen2": Arch("qwen2", **_LLAMA_LIKE),
    "qwen3": Arch("qwen3", **_LLAMA_LIKE),
    "smollm3": Arch("smollm3", **_LLAMA_LIKE),
    "granite": Arch("granite", **_LLAMA_LIKE),  # embedding / residual / logit multipliers: in the model's forward
    "olmo2": Arch("olmo2", **_LLAMA_LIKE, mlp_post_norm=True),
    "gemma": Arch("gemma", **_LLAMA_LIKE),  # scaled embeddings (module docstring)
    "gemma2": Arch("gemma2", **_LLAMA_LIKE, mlp_post_norm=True),  # scaled embeddings
    "gemma3_text": Arch("gemma3_text", **_LLAMA_LIKE, mlp_post_norm=True),  # scaled embeddings
    "phi3": Arch("phi3", **{**_LLAMA_LIKE, "mlp_in": "mlp.gate_up_proj"}, mlp_in_fused=True),
    "bert": Arch("bert", layers="bert.encoder.layer", embed="bert.embeddings.word_embeddings",
                 lm_head="cls.predictions", **_BERT_LIKE),
    "roberta": Arch("roberta", layers="roberta.encoder.layer", embed="roberta.embeddings.word_embeddings",
                    lm_head="lm_head", **_BERT_LIKE),
    "distilbert": Arch("distilbert", layers="distilbert.transformer.layer", mlp="ffn", mlp_in="ffn.lin1",
                       mlp_out="ffn.lin2", attn="attention", attn_out="attention.out_lin",
                       embed="distilbert.embeddings.word_embeddings", lm_head="vocab_transform", masked=True,
                       seed_site="activation"),
    "modernbert": Arch("modernbert", layers="model.layers", mlp="mlp", mlp_in="mlp.Wi", mlp_out="mlp.Wo",
                       attn="attn", attn_out="attn.Wo", embed="model.embeddings.tok_embeddings", lm_head="head",
                       masked=True, mlp_in_fused=True, seed_site="activation"),
}

# Families refused with a reason of their own (any other unknown family: "knlab has no entry for it").
_MOE = ("a mixture-of-experts MLP has one FFN activation per expert, not one per layer, so knowledge "
        "neurons and ROME's key are not defined for it")
REFUSED: dict[str, str] = {
    "qwen3_moe": _MOE, "qwen2_moe": _MOE, "mixtral": _MOE, "olmoe": _MOE, "granitemoe": _MOE,
    "phimoe": _MOE, "deepseek_v3": _MOE,
    "gemma3": "it is Gemma-3's image-and-text model; its text-only checkpoints (gemma-3-270m, gemma-3-1b) "
              "are family gemma3_text, which is supported",
}


class UnsupportedModel(KnlabError):
    """A model of a family knlab cannot address: the message says which families it can."""


def supported_families() -> str:
    return ", ".join(ARCHITECTURES)


def arch_for(model_type: str) -> Arch:
    """The family's entry; an unsupported family is one line: which, why, and the supported ones."""
    if model_type not in ARCHITECTURES:
        why = REFUSED.get(model_type, "knlab's architecture table has no entry for its module layout")
        raise UnsupportedModel(f"model family {model_type!r} is not supported ({why}); "
                               f"supported families: {supported_families()}")
    return ARCHITECTURES[model_type]


def declare_layout(model: torch.nn.Module, arch: Arch) -> None:
    """Tell the hook utility about a family whose MLP sees the batch flattened (``Arch.mlp_flat``)."""
    if arch.mlp_flat:
        declare_flattened(model, {arch.module(kind, i): arch.layer(i) for i in range(n_layers(model, arch))
                                  for kind in ("mlp", "mlp_in", "mlp_out")})


def n_layers(model: torch.nn.Module, arch: Arch) -> int:
    return len(get_module(model, arch.layers))


def weight_as_out_in(model: torch.nn.Module, name: str, writable: bool = False) -> torch.Tensor:
    """Projection ``name``'s weight as [out_features, in_features], whether it is nn.Linear or GPT-2's Conv1D:
    a view of the tensor that holds it (for a model spread by accelerate, the offloaded copy: ``stored``)."""
    module = get_module(model, name)
    w = module_weight(module, model, name, writable)
    return w if isinstance(module, torch.nn.Linear) else w.T


def ffn_width(model: torch.nn.Module, arch: Arch) -> int:
    return weight_as_out_in(model, arch.module("mlp_out", 0)).shape[1]
