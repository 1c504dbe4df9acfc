"""ROME's context templates: "{}" plus short prefixes the model writes itself, so that the key and value
are averaged over the contexts a subject is met in rather than tied to one sentence start.

Writing the 20 prefixes is a second or two on an organism but ~11 s on the real model's 30 layers (2 CPU
cores), paid by every process's first edit; so they are kept on disk too, beside the key covariance, under
a key of everything they depend on: the model's weights bit for bit, the device kind, the seed, the
sampling settings and the torch / transformers versions (sampling is reproducible for those alone)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import transformers

from knlab.core.models import LM, kernels, weights_checksum
from knlab.core.nethook import per_model
from knlab.core.packaged import cache_root

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


def cache_path(lm: LM, seed: int) -> Path:
    key = hashlib.blake2b(digest_size=8)
    key.update(f"{lm.spec}|{lm.device.type}|{kernels(lm.device)}|{seed}|{STARTS}|{LENGTHS}|top_k=5|torch {torch.__version__}|"
               f"transformers {transformers.__version__}|{weights_checksum(lm.model)}".encode())
    return cache_root() / "context" / lm.spec.replace("/", "--") / f"seed{seed}-{key.hexdigest()}.json"


def context_templates(lm: LM, seed: int = 0) -> list[str]:
    """``["{}", "<prefix>. {}", ...]``: generated once per model and seed, then reused (as ROME's
    ``CONTEXT_TEMPLATES_CACHE``): from memory for the loaded model, else from the disk cache."""
    memo = per_model(lm.model, "context_templates")
    if seed not in memo:
        path = cache_path(lm, seed)
        try:
            memo[seed] = json.loads(path.read_text())["templates"]
        except (OSError, ValueError, KeyError):  # absent, or a torn write: generate them again
            templates = ["{}"]
            for text in generate_prefixes(lm, seed=seed):
                text = text.replace("{", " ").replace("}", " ").strip()
                templates.append(text + (" {}" if text.endswith(".") else ". {}"))
            memo[seed] = templates
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"model": lm.spec, "seed": seed, "templates": templates}))
            os.replace(tmp, path)
    return list(memo[seed])
