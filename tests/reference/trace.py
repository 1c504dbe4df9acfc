"""Causal tracing, the straightforward way (Meng et al. 2022; ROME's ``causal_trace.py``).

Clean run; corrupted runs with Gaussian noise added to the subject tokens' embeddings; for every
(token, layer) cell and kind, one forward pass (the noise samples as one batch) with the clean state
restored at that token: the block output ("hidden") of that one layer, or the MLP / attention outputs of
a window of layers centred on it. Imports nothing from knlab (see __init__.py).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .hooks import hooked

KINDS = ("hidden", "mlp", "attn")
# which of the model's own module kinds each traced state is the output of: "hidden" the block itself
# (the residual stream after the layer), "mlp" the whole MLP module, "attn" the attention module
ARCH_KIND = {"hidden": "hidden", "mlp": "mlp", "attn": "attn"}


def module_of(lm, kind: str, layer: int) -> str:
    return lm.arch.module(ARCH_KIND[kind], layer)


def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """ROME's window: ``window`` consecutive layers centred on ``layer`` (for an even window, one more
    below than above), clipped to [0, n_layers)."""
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


def encode(lm, prompt: str) -> tuple[torch.Tensor, int]:
    """Token ids [1, T] and the prediction position: the single mask token of a masked model, the last
    token of a causal one."""
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"].to(next(lm.model.parameters()).device)
    if lm.masked:
        where = (ids[0] == lm.tokenizer.mask_token_id).nonzero().flatten().tolist()
        assert len(where) == 1, f"a masked model needs exactly one mask token in {prompt!r}"
        return ids, where[0]
    return ids, ids.shape[1] - 1


def subject_span(lm, prompt: str, subject: str) -> tuple[int, int]:
    """Token range [s0, s1) of the subject's last mention: where the subject's own token ids occur in the
    prompt's token ids (tokenized on its own, with and without the leading space a BPE model gives a
    word inside a sentence)."""
    ids = lm.tokenizer(prompt)["input_ids"]
    subject = subject.strip()
    found = []
    for text in (subject, " " + subject):
        sub = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        found += [(i, i + len(sub)) for i in range(len(ids) - len(sub) + 1) if sub and ids[i:i + len(sub)] == sub]
    assert found, f"the tokens of {subject!r} do not occur in the tokens of {prompt!r}"
    return max(found)


@torch.no_grad()
def trace_straightforward(lm, prompt, subject, answer_id, samples, window, noise, seed):
    """{kind: [tokens, layers] grid of p(answer)}, each cell the mean over ``samples`` noise draws."""
    ids, pos = encode(lm, prompt)
    T, L = ids.shape[1], lm.n_layers
    s0, s1 = subject_span(lm, prompt, subject)
    d = lm.model.get_input_embeddings().weight.shape[1]
    gen = torch.Generator().manual_seed(seed)
    noise_t = torch.randn(samples, s1 - s0, d, generator=gen) * noise
    # clean states of every module, one forward each
    clean = {}
    for k in KINDS:
        for l in range(L):
            name = module_of(lm, k, l)
            with hooked(lm.model, name) as seen:
                lm.model(input_ids=ids)
            clean[name] = seen["output"][0]

    def corrupt(x):
        x = x.clone()
        x[:, s0:s1] += noise_t.to(x.device)
        return x

    grids = {k: np.zeros((T, L)) for k in KINDS}
    for k in KINDS:
        for t in range(T):
            for l in range(L):
                layers = [l] if k == "hidden" else window_layers(l, window, L)
                with contextlib.ExitStack() as stack:
                    stack.enter_context(hooked(lm.model, lm.arch.embed, edit_output=corrupt))
                    for j in layers:
                        name = module_of(lm, k, j)

                        def restore(x, n=name, t=t):
                            x = x.clone()
                            x[:, t] = clean[n][t]
                            return x
                        stack.enter_context(hooked(lm.model, name, edit_output=restore))
                    logits = lm.model(input_ids=ids.expand(samples, T)).logits
                grids[k][t, l] = torch.softmax(logits[:, pos].float(), -1)[:, answer_id].mean().item()
    return grids
