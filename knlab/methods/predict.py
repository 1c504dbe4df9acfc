"""Next-token (causal) or [MASK]-fill (masked) distributions: the simplest question one asks a model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from knlab.core.batching import right_padded
from knlab.core.errors import InputError
from knlab.core.limits import ENV, limits
from knlab.core.models import LM
from knlab.core.nethook import Trace
from knlab.core.tokens import model_text, token_strings

MAX_PROMPT_CHARS = 2000


@dataclass
class Encoded:
    """A tokenized prompt and the position whose distribution is the model's answer."""

    input_ids: torch.Tensor  # [1, T]
    attention_mask: torch.Tensor
    position: int  # last token (causal) or the [MASK] (masked)
    tokens: list[str]


def check_prompt(prompt: object) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"the prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}")
    if any(ord(c) < 32 and c not in "\t\n" for c in prompt):
        raise InputError("the prompt contains control characters")
    return prompt.strip()


def encode(lm: LM, prompt: str) -> Encoded:
    prompt = check_prompt(prompt)
    tok = lm.tokenizer
    enc = tok(model_text(lm, prompt), return_tensors="pt")
    ids = enc["input_ids"].to(lm.device)
    if ids.shape[1] == 0:
        raise InputError("the prompt has no tokens")
    cap = limits().prompt_tokens
    positions = getattr(lm.model.config, "max_position_embeddings", None) or getattr(lm.model.config, "n_positions", None)
    if positions:
        cap = min(cap, int(positions))
    if ids.shape[1] > cap:
        raise InputError(f"the prompt is {ids.shape[1]} tokens long; the limit is {cap} "
                         f"({ENV['prompt_tokens']} or the model's positions)")
    if lm.masked:
        mask_id = tok.mask_token_id
        where = (ids[0] == mask_id).nonzero().flatten().tolist()
        if not where:
            raise InputError(f"a masked model needs a {tok.mask_token} in the prompt, "
                             f"e.g. 'The capital of Canada is {tok.mask_token} .'")
        if len(where) > 1:
            raise InputError(f"the prompt has {len(where)} {tok.mask_token} tokens; use exactly one")
        position = where[0]
    else:
        position = ids.shape[1] - 1
    return Encoded(ids, enc["attention_mask"].to(lm.device), position, token_strings(lm, ids[0].tolist()))


def _last_logits_only(lm: LM) -> dict:
    """A causal model answers at the last position: only that one goes through the output head (49,152 x
    576 on the real model, a fifth of a forward pass's products if every position went through it)."""
    return {} if lm.masked else {"logits_to_keep": 1}


@torch.no_grad()
def next_token_probs(lm: LM, enc: Encoded) -> torch.Tensor:
    logits = lm.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **_last_logits_only(lm)).logits
    return torch.softmax(logits[0, enc.position if lm.masked else -1].float(), -1)


@dataclass
class Prediction:
    model: str
    prompt: str
    tokens: list[str]  # the prompt's tokens
    position: int
    top_tokens: list[str]
    top_probs: np.ndarray
    dtype: str = "float32"  # the weights' (a prediction runs no autocast)
    device: str = "cpu"  # where it ran

    def to_json(self) -> dict:
        return {"model": self.model, "prompt": self.prompt,
                "top": [{"token": t, "prob": float(p)} for t, p in zip(self.top_tokens, self.top_probs)],
                "dtype": self.dtype, "device": self.device}


def predict(lm: LM, prompt: str, top: int = 5) -> Prediction:
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= 100:
        raise InputError("top must be a whole number from 1 to 100")
    enc = encode(lm, prompt)
    probs = next_token_probs(lm, enc)
    p, i = probs.topk(min(top, probs.shape[0]))
    return Prediction(lm.spec, prompt.strip(), enc.tokens, enc.position,
                      token_strings(lm, i.tolist()), p.cpu().numpy(), lm.weights_dtype, str(lm.device))


ANSWER_BATCH = 256  # prompts per forward pass


@torch.no_grad()
def answer_logits(lm: LM, prompts: list[str]) -> torch.Tensor:
    """Logits at the prediction position (last token / [MASK]) for many prompts: shortest first, up to
    ``ANSWER_BATCH`` at a time, right-padded (``batching.right_padded``: each row reads what it reads alone),
    and only each row's prediction position goes through the output head."""
    enc = [lm.tokenizer(model_text(lm, p))["input_ids"] for p in prompts]
    out = torch.empty(len(prompts), lm.model.config.vocab_size)
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))  # rows of a batch pad to similar lengths
    for c in range(0, len(order), ANSWER_BATCH):
        part = order[c : c + ANSWER_BATCH]
        ids, mask = right_padded([enc[i] for i in part], lm.tokenizer.pad_token_id)
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        pos = (ids == lm.tokenizer.mask_token_id).float().argmax(-1) if lm.masked else mask.sum(-1) - 1
        rows = torch.arange(len(part), device=lm.device)
        with Trace(lm.model, lm.arch.lm_head, retain_output=False, edit_input=lambda h, _n: h[rows, pos]):
            out[part] = lm.model(input_ids=ids, attention_mask=mask).logits.float().cpu()
    return out


def top_token(lm: LM, probs: torch.Tensor) -> tuple[int, str]:
    """The model's answer in a next-token distribution: its most likely token and that token as a word."""
    i = int(probs.argmax())
    return i, lm.tokenizer.decode([i]).strip()
