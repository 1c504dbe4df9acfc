"""What measuring any shipped model shares, organism or pretrained: both cards ask the world's BLiMP-style
minimal pairs the same way, so their grammar tables answer the same question."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from knlab.core.batching import equal_length_batches
from knlab.core.models import LM
from knlab.core.tokens import single_token
from knlab.methods.predict import answer_logits
from knlab.world.training_corpus import EVAL_PAIRS, evaluation_pairs


@torch.no_grad()
def sentence_logprob(lm: LM, sentences: list[str]) -> np.ndarray:
    enc = [lm.tokenizer(s)["input_ids"] for s in sentences]
    out = np.zeros(len(sentences))
    for idx in equal_length_batches([len(ids) for ids in enc]):
        ids = torch.tensor([enc[i] for i in idx], device=lm.device)
        logp = torch.log_softmax(lm.model(input_ids=ids).logits.float(), -1)
        tok_lp = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
        out[idx] = tok_lp.sum(-1).cpu().numpy()
    return out


def paradigm_accuracy(lm: LM, name: str, n: int = EVAL_PAIRS) -> tuple[float, int]:
    pairs = evaluation_pairs(name, n)
    if lm.masked:
        logits = answer_logits(lm, [p.masked_prompt for p in pairs])
        good = torch.tensor([single_token(lm, p.good_token) for p in pairs])
        bad = torch.tensor([single_token(lm, p.bad_token) for p in pairs])
        ar = torch.arange(len(pairs))
        ok = logits[ar, good] > logits[ar, bad]
        return float(ok.float().mean()), len(pairs)
    good = sentence_logprob(lm, [p.good for p in pairs])
    bad = sentence_logprob(lm, [p.bad for p in pairs])
    return float((good > bad).mean()), len(pairs)


def paradigm_accuracies(lm: LM, names: Iterable[str], log: Callable[[str], None] = print) -> dict:
    """Minimal-pair accuracy per paradigm, as both cards' grammar tables show it."""
    out = {}
    for name in names:
        acc, n = paradigm_accuracy(lm, name)
        out[name] = {"accuracy": round(acc, 4), "pairs": n}
        log(f"{name:45s} {acc:.3f}")
    return out
