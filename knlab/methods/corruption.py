"""The subject noise of causal tracing (Meng et al. 2022): Gaussian noise added to the subject's token
embeddings, which the corrupted run starts from.

Its scale is a multiple (3 in the paper) of the standard deviation of the model's token embeddings, so
that "3 sd" corrupts a small organism and a 135M-parameter model alike. The noise is drawn from its own
seeded generator, always in the same shape and order, so that an exact trace (``trace.restored_probs``)
and its first-order preview (``patching.patch_estimate``) of the same prompt corrupt it with the very same
draws and can be compared cell by cell."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.nethook import get_module, per_model

NOISE_SDS = 3.0  # noise = 3 x the standard deviation of the model's token embeddings


def embedding_std(lm: LM, texts: Iterable[str] | None = None, chunk: int = 8192) -> float:
    """Standard deviation of the token embeddings the model actually sees (over ``texts``' tokens, or every
    row of the vocabulary), measured on the *output* of the embedding module, where the trace adds its
    noise. For most families that is the weight's rows; Gemma scales them by sqrt(hidden size) inside the
    module (``knlab.core.arch``), and "3 sd" must be 3 sd of what its first block receives, or the noise
    would be sqrt(d) times too weak to corrupt anything. The vocabulary runs through in chunks (Gemma's is
    262k rows)."""
    module = get_module(lm.model, lm.arch.embed)
    device = lm.device  # its weight's, or where a spread model computes (an offloaded weight shows as meta)
    if texts is None:
        ids = torch.arange(module.weight.shape[0], device=device)
    else:
        ids = torch.tensor(sorted({i for t in texts for i in lm.tokenizer(t, add_special_tokens=False)["input_ids"]}),
                           device=device)
    n, total, squares = 0, 0.0, 0.0
    with torch.no_grad():
        for c in range(0, len(ids), chunk):
            e = module(ids[c : c + chunk]).double()
            n, total, squares = n + e.numel(), total + e.sum().item(), squares + (e * e).sum().item()
    mean = total / n
    return float(np.sqrt(max(squares - n * mean * mean, 0.0) / (n - 1)))


def noise_level(lm: LM, sds: float = NOISE_SDS) -> float:
    """``sds`` x the model's embedding std: the reference std it carries (``lm.embedding_std``: the shipped
    models', measured over the world corpus's tokens as ROME measures it over its facts' subjects),
    otherwise over every embedding row, measured once per loaded model."""
    if lm.embedding_std is not None:
        return sds * lm.embedding_std
    memo = per_model(lm.model, "embedding_std")
    if "all rows" not in memo:
        memo["all rows"] = embedding_std(lm)
    return sds * memo["all rows"]


def parse_noise(lm: LM, noise: float | str | None) -> float:
    """``None`` / "3sd" / "2.5sd": multiples of the embedding std; a plain number: the noise std itself."""
    if noise is None:
        return noise_level(lm)
    if isinstance(noise, str):
        s = noise.strip().lower()
        try:
            if s.endswith("sd"):
                val = noise_level(lm, sds=float(s[:-2] or 3))
            else:
                val = float(s)
        except ValueError:
            raise InputError(f"noise must be a number or a multiple of the embedding std like '3sd', not {noise!r}") from None
    else:
        val = float(noise)
    if not np.isfinite(val) or val < 0 or val > 1e4:
        raise InputError("noise must be a finite, non-negative number")
    return val


def subject_noise(lm: LM, samples: int, subject_range: tuple[int, int], level: float, seed: int) -> torch.Tensor:
    """``samples`` draws of the noise for the subject's tokens, [samples, subject tokens, d], in the model's
    device and dtype. Drawn on the CPU from a generator seeded with ``seed``, so the same seed gives the
    same draws on any device and in every method that corrupts the subject."""
    s0, s1 = subject_range
    d = get_module(lm.model, lm.arch.embed).weight.shape[1]
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(samples, s1 - s0, d, generator=gen) * level).to(lm.device, lm.model.dtype)


def add_subject_noise(x: torch.Tensor, noise: torch.Tensor, subject_range: tuple[int, int],
                      offset: int = 0) -> torch.Tensor:
    """The embeddings ``x`` [rows, positions, d] with ``noise`` (one row per row of ``x``) added on the
    subject's tokens; a copy, never ``x`` itself (a hook's input may be reused). ``x`` may start at
    position ``offset`` of the prompt (a run that continues a cached prefix): only the subject tokens
    from ``offset`` on are in it, and they get the noise's matching tail."""
    s0, s1 = subject_range
    x = x.clone()
    a = max(s0, offset)
    if a < s1:
        x[:, a - offset : s1 - offset] += noise[:, a - s0 :]
    return x


CORRUPTIONS = ("noise", "replace")


def replacement_ids(lm: LM, prompt: str, subject: str, subject_range: tuple[int, int], replacement: str) -> list[int]:
    """The token ids that ``replacement`` has in place of ``subject`` (its last mention) in ``prompt``:
    symmetric token replacement (Zhang & Nanda 2024) swaps the subject for another of the same token
    length, so every other position keeps its token and its place. Refused with one line otherwise."""
    if not isinstance(replacement, str) or not replacement.strip():
        raise InputError("symmetric token replacement needs a replacement subject")
    replacement, subject = replacement.strip(), subject.strip()
    if replacement == subject:
        raise InputError("the replacement is the subject itself: nothing would be corrupted")
    a = prompt.rfind(subject)
    swapped = prompt[:a] + replacement + prompt[a + len(subject):]
    ids = lm.tokenizer(prompt)["input_ids"]
    new = lm.tokenizer(swapped)["input_ids"]
    s0, s1 = subject_range
    n = len(new) - (len(ids) - (s1 - s0))
    if len(new) != len(ids) or new[:s0] != ids[:s0] or new[s1:] != ids[s1:]:
        raise InputError(f"{replacement!r} is {n} tokens here and {subject!r} {s1 - s0}: symmetric token "
                         f"replacement needs a subject of the same token length")
    return new[s0:s1]


class SubjectCorruption:
    """What the corrupted run starts from: the subject's embeddings with Gaussian noise added (``samples``
    draws), or replaced by another subject's embeddings (one deterministic run). ``apply`` corrupts the
    embeddings [rows, positions, d] of a run that may start at position ``offset`` (a continued prefix)."""

    def __init__(self, values: torch.Tensor, subject_range: tuple[int, int], replace: bool) -> None:
        self.values, self.subject_range, self.replace = values, subject_range, replace

    @classmethod
    def noise(cls, lm: LM, samples: int, subject_range: tuple[int, int], level: float, seed: int) -> "SubjectCorruption":
        return cls(subject_noise(lm, samples, subject_range, level, seed), subject_range, False)

    @classmethod
    def replacement(cls, lm: LM, ids: list[int], subject_range: tuple[int, int]) -> "SubjectCorruption":
        emb = get_module(lm.model, lm.arch.embed).weight
        return cls(emb[torch.tensor(ids, device=emb.device)][None].detach(), subject_range, True)

    @property
    def samples(self) -> int:
        return self.values.shape[0]

    def apply(self, x: torch.Tensor, rows: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
        values = self.values if rows is None else self.values[rows]
        if not self.replace:
            return add_subject_noise(x, values, self.subject_range, offset)
        s0, s1 = self.subject_range
        x = x.clone()
        a = max(s0, offset)
        if a < s1:
            x[:, a - offset : s1 - offset] = values[:, a - s0 :].to(x.dtype)
        return x
