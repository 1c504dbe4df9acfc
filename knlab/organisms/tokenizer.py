"""The shipped models' tokenizer: one word (or punctuation mark) per token.

A word-level vocabulary keeps every entity of the world a short, readable token sequence (Canada is
one token, "the Space Needle" three), which is what makes heatmaps and traces legible in a classroom.
Words outside the world's vocabulary become [UNK]: the card says so.
"""

from __future__ import annotations

from collections import Counter

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "[MASK]"]


def build_tokenizer(texts: list[str]) -> Tokenizer:
    pre = pre_tokenizers.Whitespace()
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(t))
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for w in sorted(counts):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    tok.add_special_tokens(SPECIALS)
    return tok


def causal_tokenizer(base: Tokenizer) -> PreTrainedTokenizerFast:
    """[BOS] in front of every prompt, as in training: the first real token then has context to attend to."""
    tok = Tokenizer.from_str(base.to_str())
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", pair="[BOS] $A $B",
                                                       special_tokens=[("[BOS]", SPECIALS.index("[BOS]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]",
                                   unk_token="[UNK]", pad_token="[PAD]")


def masked_tokenizer(base: Tokenizer) -> PreTrainedTokenizerFast:
    tok = Tokenizer.from_str(base.to_str())
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", SPECIALS.index("[CLS]")), ("[SEP]", SPECIALS.index("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]",
                                   mask_token="[MASK]", unk_token="[UNK]", pad_token="[PAD]")
