"""The second moment C = E[k k^T] of a layer's keys (the input of its MLP output projection) over a text
corpus: ROME's "mom2". With it the update u = C^-1 k* is the least-squares change that moves k* while
disturbing the keys the model usually sees as little as possible; without it a rank-one edit of a small
model breaks many unrelated facts. Measuring it is the slow, one-off part of an edit, so the result is
cached on disk per model, layer and corpus."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from knlab.errors import InputError
from knlab.models import LM, tensor_checksum
from knlab.nethook import Trace, get_module
from knlab.rome.repr_tools import right_padded

MOM2_SAMPLES = 20000  # texts (ROME: 100,000 Wikipedia texts; the world corpus has ~11,600 documents)
BATCH = 64


def cache_dir() -> Path:
    from knlab.packaged import cache_root  # the one place that knows where knlab's cache is
    return cache_root() / "mom2"


_MEMORY: dict[str, torch.Tensor] = {}  # path -> mom2, so a warm worker never reads the disk twice


@lru_cache(maxsize=1)
def _world_texts() -> tuple[str, ...]:
    from knlab.world.corpus import build_documents
    return tuple(d.text for d in build_documents())


CORPORA = ("world", "english")  # named corpora; anything else is a text file, one text per line


def corpus_texts(lm: LM, corpus: str | None = None, samples: int = MOM2_SAMPLES,
                 tokens: int | None = None) -> tuple[list[str], str]:
    """The texts and a short name that identifies them. ``corpus``: None or "world" (the shipped world
    corpus), "english" (general English prose, ``knlab.corpora``), or a text file (one text per non-empty
    line), as for a hub model. At most ``samples`` texts, and with ``tokens`` only as many as fit that
    many tokens: the budget that keeps a 30-layer model's covariance to seconds on a CPU."""
    if corpus in (None, "", "world"):
        texts = list(_world_texts())
        name = "world"
    elif corpus == "english":
        from knlab.corpora import english_texts
        texts = english_texts()
        name = "english"
    else:
        path = Path(corpus)
        if not path.is_file():
            raise InputError(f"covariance corpus {corpus!r} is neither {' nor '.join(CORPORA)} nor a file")
        texts = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        name = f"{path.name}-{hashlib.blake2b(path.read_bytes(), digest_size=6).hexdigest()}"
    if not texts:
        raise InputError("the covariance corpus has no text")
    texts = texts[:samples]
    if tokens is not None:
        kept, used = [], 0
        for t in texts:
            used += len(lm.tokenizer(t, truncation=True, max_length=256)["input_ids"])
            if used > tokens and kept:
                break
            kept.append(t)
        texts = kept
    return texts, name


def _key(lm: LM, layer: int, corpus_name: str, n: int) -> str:
    """Everything the statistic depends on: the corpus, and the weights that shape the layer's keys. Edits
    only ever touch MLP output projections, so those of the layers below stand in for "the model as it is"
    (an earlier edit of this session at a lower layer gives a different key, never a stale file)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{lm.spec}|{layer}|{corpus_name}|{n}|{lm.arch.family}|right-padded".encode())  # not older files
    for l in range(layer):
        h.update(tensor_checksum(get_module(lm.model, lm.arch.module("mlp_out", l)).weight).encode())
    h.update(tensor_checksum(get_module(lm.model, lm.arch.module("mlp_in", layer)).weight).encode())
    return h.hexdigest()


@torch.no_grad()
def measure_mom2(lm: LM, layer: int, texts: list[str], progress: Callable[[float], None] | None = None,
                 max_tokens: int = 256) -> torch.Tensor:
    """E[k k^T] over every non-padding token of ``texts`` (float64 accumulation). The texts run sorted by
    length, so a batch pads little (the statistic is a sum: the order does not change it)."""
    tok = lm.tokenizer
    width = lm.ffn_width
    total = torch.zeros(width, width, dtype=torch.float64, device=lm.device)
    count = 0
    module = lm.arch.module("mlp_out", layer)
    texts = sorted(texts, key=len)
    for b in range(0, len(texts), BATCH):
        # right padding whatever the tokenizer's side: left padding would shift the positions of every
        # shorter text (the models number positions from the first column, not from the mask)
        batch = right_padded(lm, tok(texts[b:b + BATCH], truncation=True, max_length=max_tokens)["input_ids"])
        with Trace(lm.model, module, retain_output=False, retain_input=True, stop=True) as tr:
            lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        keys = tr.input[batch.attention_mask.bool()].double()
        total += keys.T @ keys
        count += keys.shape[0]
        if progress:
            progress(min(1.0, (b + BATCH) / len(texts)))
    return (total / max(count, 1)).float()


def layer_stats(lm: LM, layer: int, corpus: str | None = None, samples: int = MOM2_SAMPLES,
                progress: Callable[[float], None] | None = None, tokens: int | None = None) -> torch.Tensor:
    """The key second moment of ``layer`` [ffn_width, ffn_width], from the disk cache when it is there."""
    texts, name = corpus_texts(lm, corpus, samples, tokens)
    path = cache_dir() / lm.spec.replace("/", "--") / f"layer{layer}-{_key(lm, layer, name, len(texts))}.safetensors"
    if str(path) in _MEMORY:
        return _MEMORY[str(path)]
    if path.exists():
        try:
            _MEMORY[str(path)] = load_file(str(path))["mom2"].to(lm.device)
            return _MEMORY[str(path)]
        except Exception:
            path.unlink(missing_ok=True)  # a torn write: measure again
    mom2 = measure_mom2(lm, layer, texts, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"mom2": mom2.cpu().contiguous()}, str(tmp))
    os.replace(tmp, path)
    _MEMORY[str(path)] = mom2
    return mom2
