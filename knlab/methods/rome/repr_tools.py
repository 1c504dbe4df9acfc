"""Batches of (template, subject) texts and the index of the subject's last token in each: what both the
key (compute_u) and the value (compute_v) are read at."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from knlab.core import batching
from knlab.core.errors import InputError
from knlab.core.models import LM


def prompt_template(prompt: str, subject: str) -> str:
    """The prompt with its (last) mention of the subject replaced by "{}"."""
    if "{" in prompt or "}" in prompt:
        raise InputError("the prompt may not contain braces { }")
    if not isinstance(subject, str) or not subject.strip():
        raise InputError("the subject is empty")
    subject = subject.strip()
    i = prompt.rfind(subject)
    if i < 0:
        raise InputError(f"the subject {subject!r} is not in the prompt {prompt!r}")
    return prompt[:i] + "{}" + prompt[i + len(subject):]


def subject_last_token(lm: LM, template: str, subject: str) -> int:
    """Index of the subject's last token in ``template`` filled with ``subject`` (special tokens counted)."""
    prefix = template.split("{}")[0]
    return len(lm.tokenizer(prefix + subject)["input_ids"]) - 1


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor
    lengths: list[int]
    position_ids: torch.Tensor | None = None  # set when rows are shifted right (aligned)
    shift: list[int] | None = None  # left padding of each row (aligned)


def right_padded(lm: LM, rows: list[list[int]]) -> Batch:
    """Right padding whatever the tokenizer's own padding side, so positions and indices stay as computed."""
    ids, mask = batching.right_padded(rows, lm.tokenizer.pad_token_id)
    return Batch(ids.to(lm.device), mask.to(lm.device), [len(r) for r in rows])


def aligned(lm: LM, rows: list[list[int]], anchor: list[int]) -> Batch:
    """Left-pad each row so that every row's ``anchor`` token lands in the same column (then right-pad):
    the columns before it are then a prefix that can be computed once and kept as a KV cache."""
    P = max(anchor)
    shift = [P - a for a in anchor]
    b = right_padded(lm, [[0] * s + r for s, r in zip(shift, rows)])
    for i, s in enumerate(shift):
        b.attention_mask[i, :s] = 0
    b.position_ids = (b.attention_mask.cumsum(-1) - 1).clamp(min=0)
    b.shift = shift
    return b


def prompt_ids(lm: LM, text: str) -> list[int]:
    """A prompt's token ids as the model reads a prompt (with the tokenizer's special tokens, if any); a
    word the model is to say next is ``core.tokens.spoken_ids``."""
    return lm.tokenizer(text)["input_ids"]
