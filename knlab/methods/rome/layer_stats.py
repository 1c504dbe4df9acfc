"""The second moment C = E[k k^T] of a layer's keys (the input of its MLP output projection) over a text
corpus: ROME's "mom2". With it the update u = C^-1 k* is the least-squares change that moves k* while
disturbing the keys the model usually sees as little as possible; without it a rank-one edit of a small
model breaks many unrelated facts. Measuring it is the slow, one-off part of an edit, so the result is
cached on disk per model, layer and corpus."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file

from knlab.core.errors import InputError
from knlab.core.models import LM, kernels, tensor_checksum
from knlab.core.nethook import TraceDict, get_module, module_weight
from knlab.core.packaged import cache_root  # the one place that knows where knlab's cache is
from knlab.methods.rome.repr_tools import right_padded

MOM2_SAMPLES = 20000  # texts (ROME: 100,000 Wikipedia texts; the world corpus has ~11,600 documents)
BATCH = 64


def cache_dir() -> Path:
    return cache_root() / "mom2"


_MEMORY: dict[str, torch.Tensor] = {}  # path -> mom2, so a warm worker never reads the disk twice
_BUDGETED: dict[tuple, list[str]] = {}  # (model, corpus name, texts, samples, tokens) -> the texts within budget


def within_budget(lm: LM, texts: Sequence[str], samples: int = MOM2_SAMPLES, tokens: int | None = None) -> list[str]:
    """At most ``samples`` texts, and with ``tokens`` only as many as fit that many tokens: the budget that
    keeps a 30-layer model's covariance to seconds on a CPU."""
    texts = list(texts[:samples])
    if not texts:
        raise InputError("the covariance corpus has no text")
    if tokens is not None:
        kept, used = [], 0
        for t in texts:
            used += len(lm.tokenizer(t, truncation=True, max_length=256)["input_ids"])
            if used > tokens and kept:
                break
            kept.append(t)
        texts = kept
    return texts


def _key(lm: LM, layer: int, corpus_name: str, n: int) -> str:
    """Everything the statistic depends on: the corpus, and the weights that shape the layer's keys. Edits
    only ever touch MLP output projections, so those of the layers below stand in for "the model as it is"
    (an earlier edit of this session at a lower layer gives a different key, never a stale file)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{lm.spec}|{layer}|{corpus_name}|{n}|{lm.arch.family}|right-padded|{kernels(lm.device)}".encode())
    for l in range(layer):
        h.update(tensor_checksum(_weight(lm, lm.arch.module("mlp_out", l))).encode())
    h.update(tensor_checksum(_weight(lm, lm.arch.module("mlp_in", layer))).encode())
    return h.hexdigest()


@torch.no_grad()
def measure_mom2(lm: LM, layer: int, texts: list[str], progress: Callable[[float], None] | None = None,
                 max_tokens: int = 256) -> torch.Tensor:
    """E[k k^T] over every non-padding token of ``texts`` (float64 accumulation). The texts run sorted by
    length, so a batch pads little (the statistic is a sum: the order does not change it)."""
    return measure_mom2_layers(lm, [layer], texts, progress, max_tokens)[layer]


@torch.no_grad()
def measure_mom2_layers(lm: LM, layers: Sequence[int], texts: list[str],
                        progress: Callable[[float], None] | None = None, max_tokens: int = 256) -> dict[int, torch.Tensor]:
    """``measure_mom2`` of several layers in one pass over the corpus (an edit-layer sweep needs every
    layer's: one pass that stops above the highest, instead of one pass per layer). Each layer's sum runs
    in the same order as on its own, so it is the same statistic, bit for bit."""
    tok = lm.tokenizer
    width = lm.ffn_width
    layers = sorted(set(layers))
    totals = {l: torch.zeros(width, width, dtype=torch.float64, device=lm.device) for l in layers}
    count = 0
    modules = {l: lm.arch.module("mlp_out", l) for l in layers}
    texts = sorted(texts, key=len)
    for b in range(0, len(texts), BATCH):
        # right padding whatever the tokenizer's side: left padding would shift the positions of every
        # shorter text (the models number positions from the first column, not from the mask)
        batch = right_padded(lm, tok(texts[b:b + BATCH], truncation=True, max_length=max_tokens)["input_ids"])
        with TraceDict(lm.model, modules.values(), retain_output=False, retain_input=True, stop=True) as td:
            lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        keep = batch.attention_mask.bool()
        for l, name in modules.items():
            keys = td[name].input[keep].double()
            totals[l] += keys.T @ keys
        count += int(keep.sum())
        if progress:
            progress(min(1.0, (b + BATCH) / len(texts)))
    return {l: (t / max(count, 1)).float() for l, t in totals.items()}


def layer_stats(lm: LM, layer: int, corpus: tuple[str, Sequence[str]], samples: int = MOM2_SAMPLES,
                progress: Callable[[float], None] | None = None, tokens: int | None = None) -> torch.Tensor:
    """The key second moment of ``layer`` [ffn_width, ffn_width] over ``corpus`` ((a name that identifies
    the texts, the texts): ``world.covariance_texts.covariance_corpus``), from the disk cache when it is there."""
    return layers_stats(lm, [layer], corpus, samples, progress, tokens)[layer]


def _cached(path: Path) -> torch.Tensor | None:
    if str(path) in _MEMORY:
        return _MEMORY[str(path)]
    if path.exists():
        try:
            _MEMORY[str(path)] = load_file(str(path))["mom2"]
            return _MEMORY[str(path)]
        except Exception:
            path.unlink(missing_ok=True)  # a torn write: measure again
    return None


def layers_stats(lm: LM, layers: Sequence[int], corpus: tuple[str, Sequence[str]], samples: int = MOM2_SAMPLES,
                 progress: Callable[[float], None] | None = None, tokens: int | None = None) -> dict[int, torch.Tensor]:
    """``layer_stats`` of several layers: those in the cache read from it, the others measured together in
    one pass over the corpus (``measure_mom2_layers``) and cached one file per layer, as ``layer_stats``
    would have cached each."""
    name, texts = corpus
    budget = (lm.spec, name, len(texts), samples, tokens)  # the name identifies the texts
    if budget not in _BUDGETED:  # counting the tokens of 60k takes ~1 s: once per process, not per edit
        _BUDGETED[budget] = within_budget(lm, texts, samples, tokens)
    texts = _BUDGETED[budget]
    paths = {l: cache_dir() / lm.spec.replace("/", "--") / f"layer{l}-{_key(lm, l, name, len(texts))}.safetensors"
             for l in layers}
    out = {l: _cached(p) for l, p in paths.items()}
    missing = [l for l, v in out.items() if v is None]
    if missing:
        for l, mom2 in measure_mom2_layers(lm, missing, texts, progress).items():
            path = paths[l]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            save_file({"mom2": mom2.cpu().contiguous()}, str(tmp))
            os.replace(tmp, path)
            _MEMORY[str(path)] = out[l] = mom2
    return {l: v.to(lm.device) for l, v in out.items()}


def _weight(lm: LM, name: str):
    """A projection's weight as stored (an offloaded one through accelerate's hook): its bytes key the cache."""
    return module_weight(get_module(lm.model, name), lm.model, name)
