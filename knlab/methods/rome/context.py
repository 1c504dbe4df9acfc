"""ROME's context templates: "{}" plus short prefixes the model writes itself, so that the key and value
are averaged over the contexts a subject is met in rather than tied to one sentence start."""

from __future__ import annotations

import torch

from knlab.core.models import LM
from knlab.core.nethook import per_model

STARTS = ("The", "Therefore", "Because", "I", "You")
LENGTHS = ((5, 2), (10, 2))  # (tokens per prefix, prefixes per start word): 5 x (2 + 2) = 20 prefixes


def generate_prefixes(lm: LM, starts: tuple[str, ...] = STARTS, lengths=LENGTHS, seed: int = 0) -> list[str]:
    """Top-5 sampling as in the reference ``generate_fast``; ``length`` counts the start word's tokens."""
    tok = lm.tokenizer
    out: list[str] = []
    devices = [lm.device] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for length, n in lengths:
            for start in starts:
                ids = tok(start, return_tensors="pt")["input_ids"].to(lm.device)
                n_special = ids.shape[1] - len(tok(start, add_special_tokens=False)["input_ids"])
                gen = lm.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=5,
                                        max_length=length + n_special, num_return_sequences=n,
                                        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None
                                        else tok.eos_token_id)
                out += [tok.decode(g, skip_special_tokens=True) for g in gen]
    return out


def context_templates(lm: LM, seed: int = 0) -> list[str]:
    """``["{}", "<prefix>. {}", ...]``: generated once per loaded model and seed, then reused (as ROME's
    ``CONTEXT_TEMPLATES_CACHE``)."""
    memo = per_model(lm.model, "context_templates")
    if seed not in memo:
        templates = ["{}"]
        for text in generate_prefixes(lm, seed=seed):
            text = text.replace("{", " ").replace("}", " ").strip()
            templates.append(text + (" {}" if text.endswith(".") else ". {}"))
        memo[seed] = templates
    return list(memo[seed])
