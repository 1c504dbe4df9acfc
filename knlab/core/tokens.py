"""Words and token ids. ``spoken_ids`` is the one way knlab turns a word (an answer, a target, a paradigm's
critical word) into token ids: the word as the model would say it next, after a prompt. The two queries
below it are what one prediction position can score: the word's first piece, and the word when it is a
single token. Neither tokenises anything itself.

Different concepts, named for what they do: ``token_strings`` (ids back to text, for display),
``methods.tokenization`` (how a whole prompt reaches the model, shown before a method runs) and
``methods.rome.repr_tools.prompt_ids`` (a prompt's ids, with the tokenizer's special tokens)."""

from __future__ import annotations

from knlab.core.errors import InputError
from knlab.core.models import LM


MASK_AS_WRITTEN = "[MASK]"  # how knlab's prompts, the world's facts and paradigms, and its users write a mask


def model_text(lm: LM, text: str) -> str:
    """``text`` as this model's tokenizer must read it: a masked model whose own mask token is not
    "[MASK]" (RoBERTa's "<mask>") reads every "[MASK]" as its own; anything else is unchanged. The one
    place a family's mask spelling is handled: prompts are tokenized through it (``predict.encode``,
    ``predict.answer_logits``, ``trace.locate_subject``, ``tokenization``)."""
    mask = getattr(lm.tokenizer, "mask_token", None)
    if lm.masked and mask and mask != MASK_AS_WRITTEN:
        return text.replace(MASK_AS_WRITTEN, mask)
    return text


def token_strings(lm: LM, ids: list[int]) -> list[str]:
    return [lm.tokenizer.decode([i]) for i in ids]


def spoken_ids(lm: LM, word: str, role: str = "word") -> list[int]:
    """The token ids of ``word`` as the model would say it next: with the leading space a BPE model expects
    after a prompt (" Kabul", not "Kabul", which is other tokens), without special tokens. A clear error
    (naming the word by its ``role``: "target", "answer", ...) when the word is empty or the model cannot
    say it (a word-level organism reads a word outside its vocabulary as its unknown token)."""
    if not isinstance(word, str) or not word.strip():
        raise InputError(f"the {role} is empty")
    ids = lm.tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]
    unk = lm.tokenizer.unk_token_id
    if not ids or (unk is not None and unk in ids):
        raise InputError(f"{word.strip()!r} is not something {lm.spec} can say (not in its vocabulary)")
    return ids


def first_token(lm: LM, word: str) -> int | None:
    """The token a word starts with when the model says it next: what one prediction position decides.
    The word itself for one-token words (all of the organisms'); for a BPE model's longer words (" Kab" +
    "ul") the first piece. None for an empty word or one the model cannot say."""
    try:
        return spoken_ids(lm, word)[0]
    except InputError:
        return None


def single_token(lm: LM, word: str) -> int | None:
    """The token id of ``word`` when the model says it as exactly one token, else None: for what needs the
    whole word at one position (a masked model's one [MASK], a paradigm's critical word)."""
    try:
        ids = spoken_ids(lm, word)
    except InputError:
        return None
    return ids[0] if len(ids) == 1 else None
