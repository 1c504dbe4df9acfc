"""Train the shipped models on the world corpus, deterministically from a seed, on a few CPU cores.

``world-gpt`` is a GPT-Neo whose first layers attend only to their own position (local attention with
window 1). That is the design decision the model card explains: without global attention early, the
prediction position cannot copy the subject's raw embedding and look the fact up itself, so the
subject's own position has to build up what is known about the subject, as causal tracing and ROME
assume of real LMs. ``world-bert`` is a plain BertForMaskedLM.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from knlab.organisms.tokenizer import build_tokenizer, causal_tokenizer, masked_tokenizer
from knlab.world import training_corpus as C
from knlab.world import facts as F

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "assets" / "models"
BUILD_DIR = REPO / "build" / "world"


@dataclass
class Recipe:
    kind: str  # "gpt" | "bert"
    hidden: int = 192
    layers: int = 6
    heads: int = 6
    ffn: int = 768
    local_layers: int = 2  # gpt only: the first layers attend within a window
    window: int = 1
    steps: int = 4000
    batch: int = 128
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.01
    focus_mask_prob: float = 0.5  # bert only: how often the fact's object / critical word is masked
    mlm_prob: float = 0.15
    seed: int = 0
    threads: int = 2
    residual_scale: float = 1.0  # gpt only: see rescale_residual
    extra: dict = field(default_factory=dict)


RECIPES = {
    "gpt": Recipe("gpt", steps=3000, lr=2e-3, residual_scale=0.125),
    "bert": Recipe("bert", steps=3000, lr=1e-3, focus_mask_prob=0.7),
}


@torch.no_grad()
def rescale_residual(model: torch.nn.Module, scale: float) -> None:
    """Multiply the residual stream of a trained GPT-Neo by ``scale`` without changing any output.

    Everything that writes into the residual stream (token and position embeddings, attention and MLP
    output projections, biases included) is scaled, every LayerNorm's epsilon by scale^2, and the output
    head is untied and keeps the unscaled embedding: LayerNorm(s x; s^2 eps) = LayerNorm(x; eps), so every
    prediction is the same. Why: trained at this size, the residual stream grows to ~16 per coordinate,
    and ROME's published optimiser takes absolute steps (Adam, lr 0.5 per coordinate, 20 steps), too
    small to move a value of that size. At the trained scale a ROME edit reached the new target on 17 of
    the first 30 P36 facts, after it on all 30 (the model card re-measures both).
    """
    m = model.transformer
    head = model.lm_head.weight.detach().clone()
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "tie_embeddings"):
        model.config.tie_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(head)
    m.wte.weight = torch.nn.Parameter(m.wte.weight.detach() * scale)
    m.wpe.weight.mul_(scale)
    for block in m.h:
        for proj in (block.attn.attention.out_proj, block.mlp.c_proj):
            proj.weight.mul_(scale)
            if proj.bias is not None:
                proj.bias.mul_(scale)
    for mod in model.modules():
        if isinstance(mod, torch.nn.LayerNorm):
            mod.eps = mod.eps * scale ** 2
    model.config.layer_norm_epsilon = model.config.layer_norm_epsilon * scale ** 2


def model_name(kind: str) -> str:
    return f"world-{kind}"


def make_model(r: Recipe, vocab_size: int, special: dict[str, int]) -> torch.nn.Module:
    if r.kind == "gpt":
        from transformers import GPTNeoConfig, GPTNeoForCausalLM
        cfg = GPTNeoConfig(
            vocab_size=vocab_size, hidden_size=r.hidden, num_layers=r.layers, num_heads=r.heads,
            intermediate_size=r.ffn, max_position_embeddings=128, window_size=r.window,
            attention_types=[[["local"], r.local_layers], [["global"], r.layers - r.local_layers]],
            bos_token_id=special["[BOS]"], eos_token_id=special["[EOS]"], pad_token_id=special["[PAD]"],
            embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0, tie_word_embeddings=True)
        return GPTNeoForCausalLM(cfg)
    from transformers import BertConfig, BertForMaskedLM
    cfg = BertConfig(
        vocab_size=vocab_size, hidden_size=r.hidden, num_hidden_layers=r.layers, num_attention_heads=r.heads,
        intermediate_size=r.ffn, max_position_embeddings=128, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, pad_token_id=special["[PAD]"], type_vocab_size=1)
    return BertForMaskedLM(cfg)


def _encode(tok, docs: list[C.Document], kind: str) -> tuple[list[list[int]], list[list[int]]]:
    enc = tok([d.text for d in docs], return_offsets_mapping=True, add_special_tokens=True)
    ids_all, focus_all = [], []
    eos = tok.convert_tokens_to_ids("[EOS]")
    for d, ids, offs in zip(docs, enc["input_ids"], enc["offset_mapping"]):
        ids = list(ids)
        focus = []
        if d.focus:
            a, b = d.focus
            focus = [i for i, (s, e) in enumerate(offs) if e > s and s >= a and e <= b]
        if kind == "gpt":
            ids.append(eos)
        ids_all.append(ids)
        focus_all.append(focus)
    return ids_all, focus_all


def _batches(lengths: list[int], batch: int, rng: random.Random):
    """Endless stream of index batches of similar length (little padding), reshuffled every epoch."""
    idx = list(range(len(lengths)))
    while True:
        rng.shuffle(idx)
        chunk = batch * 32
        out = []
        for c in range(0, len(idx), chunk):
            part = sorted(idx[c : c + chunk], key=lambda i: lengths[i])
            out.extend(part[j : j + batch] for j in range(0, len(part), batch))
        rng.shuffle(out)
        yield from out


def _collate(ids_all, focus_all, batch_idx, kind: str, r: Recipe, special: dict[str, int],
             vocab_size: int, gen: torch.Generator):
    L = max(len(ids_all[i]) for i in batch_idx)
    pad = special["[PAD]"]
    x = torch.full((len(batch_idx), L), pad, dtype=torch.long)
    att = torch.zeros((len(batch_idx), L), dtype=torch.long)
    for row, i in enumerate(batch_idx):
        x[row, : len(ids_all[i])] = torch.tensor(ids_all[i])
        att[row, : len(ids_all[i])] = 1
    if kind == "gpt":
        labels = x.clone()
        labels[att == 0] = -100
        return x, att, labels
    # masked LM: the focus word with probability focus_mask_prob, else the usual 15% (80/10/10)
    special_ids = torch.tensor([special[s] for s in ("[PAD]", "[CLS]", "[SEP]")])
    candidates = (att == 1) & ~torch.isin(x, special_ids)
    chosen = (torch.rand(x.shape, generator=gen) < r.mlm_prob) & candidates
    for row, i in enumerate(batch_idx):
        if focus_all[i] and torch.rand((), generator=gen).item() < r.focus_mask_prob:
            chosen[row] = False
            chosen[row, focus_all[i]] = True
    labels = torch.where(chosen, x, torch.full_like(x, -100))
    inputs = x.clone()
    roll = torch.rand(x.shape, generator=gen)
    inputs[chosen & (roll < 0.8)] = special["[MASK]"]
    rand_tok = torch.randint(len(special), vocab_size, x.shape, generator=gen)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = rand_tok[swap]
    return inputs, att, labels


@torch.no_grad()
def _probe_accuracy(model, tok, kind: str, probe) -> float:
    model.eval()
    if kind == "gpt":
        prompts = [F.causal_prompt(t, f.subject) for t, f in probe]
    else:
        prompts = [F.masked_prompt(t, f.subject) for t, f in probe]
    tok.padding_side = "left" if kind == "gpt" else "right"
    enc = tok(prompts, return_tensors="pt", padding=True)
    kwargs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if kind == "gpt":  # left padding: positions must start at the first real token
        kwargs["position_ids"] = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    logits = model(**kwargs).logits
    if kind == "gpt":
        pred = logits[:, -1].argmax(-1)
    else:
        pred = logits[enc["input_ids"] == tok.mask_token_id].argmax(-1)
    gold = torch.tensor([tok.convert_tokens_to_ids(f.object) for _, f in probe])
    return (pred == gold).float().mean().item()


def train(kind: str, out_dir: Path | None = None, steps: int | None = None, log=print) -> Path:
    r = RECIPES[kind]
    if steps is not None:
        r = Recipe(**{**r.__dict__, "steps": steps})
    torch.manual_seed(r.seed)
    torch.set_num_threads(r.threads)
    rng = random.Random(r.seed)
    gen = torch.Generator().manual_seed(r.seed)

    docs = C.build_documents(seed=r.seed)
    base = build_tokenizer(C.vocabulary_words(docs))
    tok = causal_tokenizer(base) if kind == "gpt" else masked_tokenizer(base)
    special = {s: tok.convert_tokens_to_ids(s) for s in ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "[MASK]")}
    ids_all, focus_all = _encode(tok, docs, kind)
    vocab_size = len(tok)
    model = make_model(r, vocab_size, special)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[train {kind}] docs={len(docs)} tokens/epoch={sum(map(len, ids_all))} vocab={vocab_size} params={n_params}")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=r.lr, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < r.warmup:
            return r.lr * (step + 1) / r.warmup
        prog = (step - r.warmup) / max(1, r.steps - r.warmup)
        return r.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * prog)))

    probe_rng = random.Random(1)
    probe = probe_rng.sample([(rel.train_templates[probe_rng.randrange(len(rel.train_templates))], f)
                              for rel in F.relations(corpus_only=True).values() for f in rel.facts], 300)
    stream = _batches([len(x) for x in ids_all], r.batch, rng)
    model.train()
    t0 = time.time()
    ema = None
    for step in range(r.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, att, labels = _collate(ids_all, focus_all, next(stream), kind, r, special, vocab_size, gen)
        out = model(input_ids=x, attention_mask=att, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema = out.loss.item() if ema is None else 0.98 * ema + 0.02 * out.loss.item()
        if (step + 1) % 600 == 0:
            log(f"[train {kind}] step {step + 1} probe: top-1 on 300 training-template facts = "
                f"{_probe_accuracy(model, tok, kind, probe):.3f}")
            model.train()
        if step % 100 == 0 or step == r.steps - 1:
            el = time.time() - t0
            log(f"[train {kind}] step {step}/{r.steps} loss {ema:.4f} lr {lr_at(step):.2e} "
                f"elapsed {el / 60:.1f} min eta {el / (step + 1) * (r.steps - step - 1) / 60:.1f} min")
    model.eval()
    if kind == "gpt" and r.residual_scale != 1.0:
        rescale_residual(model, r.residual_scale)
    out_dir = out_dir or MODELS_DIR / model_name(kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    (out_dir / "recipe.json").write_text(json.dumps({**r.__dict__, "train_seconds": round(time.time() - t0),
                                                     "params": n_params}, indent=2))
    log(f"[train {kind}] saved to {out_dir} after {(time.time() - t0) / 60:.1f} min")
    return out_dir
