"""How a prompt reaches the model: its tokens, which of them the subject covers, and the words the model
cannot represent (an organism's word-level vocabulary maps an unknown word to [UNK], silently; a BPE
model splits any word into pieces, so none is unknown). Shown before a method runs, so that a user sees a
subject split into pieces, or an unknown word, before reading a result built on it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.tokens import model_text
from knlab.methods.predict import check_prompt
from knlab.methods.trace import locate_subject


@dataclass
class Tokenization:
    tokens: list[str]
    subject_range: tuple[int, int] | None  # [start, end) of the subject's tokens; None: no subject given
    unknown: list[str]  # words of the prompt the model reads as its unknown token

    def to_json(self) -> dict:
        return {"tokens": self.tokens, "subject_range": list(self.subject_range) if self.subject_range else None,
                "unknown": self.unknown}

    def markdown(self) -> str:
        s0, s1 = self.subject_range or (-1, -1)
        marked = " ".join(f"**`{t}`**" if s0 <= k < s1 else f"`{t}`" for k, t in enumerate(self.tokens))
        out = f"{len(self.tokens)} tokens: {marked}" + (" (subject in bold)" if self.subject_range else "")
        if self.unknown:
            out += f"  \n⚠ not in this model's vocabulary (read as an unknown token): {', '.join(self.unknown)}"
        return out


def tokenization(lm: LM, prompt: str, subject: str | None = None) -> Tokenization:
    prompt = check_prompt(prompt)
    tok = lm.tokenizer
    ids = tok(model_text(lm, prompt))["input_ids"]
    tokens = [tok.convert_ids_to_tokens(i).replace("Ġ", "␣") for i in ids]
    unk = tok.unk_token_id
    unknown = []
    if unk is not None and unk in ids:
        words = re.findall(r"\[MASK\]|\w+|[^\w\s]", prompt)
        unknown = [w for w in dict.fromkeys(words) if w != tok.mask_token
                   and unk in tok(w, add_special_tokens=False)["input_ids"]]
    rng = None
    if subject and subject.strip():
        try:
            rng = locate_subject(lm, prompt, subject)
        except InputError:
            rng = None
    return Tokenization(tokens, rng, unknown)
