"""Words and token ids: one tokenisation of a word as the model would say it next, behind every helper that
turns a word (an answer, a target, a paradigm's critical word) into token ids."""

from __future__ import annotations

from knlab.core.errors import InputError
from knlab.core.models import LM


def token_strings(lm: LM, ids: list[int]) -> list[str]:
    return [lm.tokenizer.decode([i]) for i in ids]


def spoken_ids(lm: LM, word: str) -> list[int]:
    """The tokens of ``word`` as the model would say it next (with the leading space a BPE model expects):
    the one tokenisation behind every word -> token helper below."""
    return lm.tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]


def single_token(lm: LM, word: str) -> int | None:
    """The token id of ``word`` as the model would emit it next, or None when it is not one token."""
    ids = spoken_ids(lm, word)
    return ids[0] if len(ids) == 1 and ids[0] != lm.tokenizer.unk_token_id else None


def first_token(lm: LM, word: str) -> int | None:
    """The token a word starts with when the model says it next: what one prediction position can score.
    The same as ``single_token`` for one-token words (all of the organisms'); for a BPE model's longer
    words (" Kab" + "ul") the first piece. None for an empty word or one the model cannot say."""
    if not isinstance(word, str) or not word.strip():
        return None
    ids = spoken_ids(lm, word)
    return ids[0] if ids and ids[0] != lm.tokenizer.unk_token_id else None


def target_id(lm: LM, target: str) -> int:
    """The single token a target word is, with the leading space a causal BPE model expects."""
    if not isinstance(target, str) or not target.strip():
        raise InputError("the target is empty")
    i = single_token(lm, target)
    if i is None:
        raise InputError(f"{target.strip()!r} is not a single token of {lm.spec}")
    return i


def target_ids(lm: LM, target: str) -> list[int]:
    """All tokens of a (possibly multi-token) target as the model would emit it after the prompt."""
    if not isinstance(target, str) or not target.strip():
        raise InputError("the target is empty")
    ids = spoken_ids(lm, target)
    unk = lm.tokenizer.unk_token_id
    if not ids or (unk is not None and unk in ids):
        raise InputError(f"{target.strip()!r} is not something {lm.spec} can say (not in its vocabulary)")
    return ids
