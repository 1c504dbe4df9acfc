"""ROME's rank-one edit, the straightforward way (Meng et al. 2022; ROME's ``compute_u.py`` /
``compute_v.py``), laid out as the original is: every optimisation step re-tokenizes every
context-template prompt (and the KL prompt "{subject} is a") and runs each one through the whole model
on its own, with a hook on the edited layer's MLP output projection adding the delta at the subject's
last token; the losses are summed and there is one backward per step.

- k*: the mean over the context templates of the projection's input at the subject's last token;
  u = C^-1 k* (C the second moment of keys, ``mom2``) or k* itself when ``mom2`` is None, normalised.
- v*: the projection's output at the subject's last token (plain template) plus a delta optimised with
  Adam: mean NLL of the target over the templates + kl_factor x KL(first step's distribution on the KL
  prompt || current) + weight decay x ||delta|| / ||v||^2; early stop when the loss is below
  early_stop_loss; ||delta|| clamped to clamp_norm_factor x ||v||.
- The right vector: (v* - v) / (key . u), the key that of the plain template; W <- W + right u^T.

Imports nothing from knlab (see __init__.py). ``params`` is any object with ROME's settings as
attributes (v_lr, v_steps, v_weight_decay, kl_factor, clamp_norm_factor, early_stop_loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .hooks import hooked

# ROME's compute_v: the prompt on which the KL term keeps the subject's distribution ("{} is a")
KL_PROMPT = "{} is a"


@dataclass
class StraightforwardEdit:
    """What knlab's ``rome()`` puts in its RomeEdit (u, and the right vector v: W <- W + v u^T), plus v*
    and the optimisation's outcome for comparison. Unpacks as ``u, v = rome_straightforward(...)``."""

    u: torch.Tensor
    v: torch.Tensor
    v_star: torch.Tensor
    k_star: torch.Tensor
    key: torch.Tensor
    steps: int
    loss: float

    def __iter__(self):
        return iter((self.u, self.v))


def template_of(prompt: str, subject: str) -> str:
    """The prompt with its last mention of the subject replaced by "{}"."""
    subject = subject.strip()
    i = prompt.rindex(subject)
    return prompt[:i] + "{}" + prompt[i + len(subject):]


def subject_last(tok, template: str, subject: str) -> int:
    """Index of the subject's last token in ``template`` filled with ``subject``: the length of the
    tokenized text up to and including the subject, minus one (special tokens counted)."""
    return len(tok(template.split("{}")[0] + subject)["input_ids"]) - 1


def _device(lm):
    return next(lm.model.parameters()).device


@torch.no_grad()
def _key(lm, layer: int, text: str, index: int) -> torch.Tensor:
    """The input of the MLP output projection at ``index``, one prompt, one forward pass."""
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]], device=_device(lm))
    with hooked(lm.model, lm.arch.module("mlp_out", layer)) as seen:
        lm.model(input_ids=ids, use_cache=False)
    return seen["input"][0, index].float()


def rome_straightforward(lm, prompt, subject, target, layer, params, contexts, mom2) -> StraightforwardEdit:
    tok, device = lm.tokenizer, _device(lm)
    module = lm.arch.module("mlp_out", layer)
    template = template_of(prompt, subject)
    subject = subject.strip()
    target_ids = tok(" " + target.strip(), add_special_tokens=False)["input_ids"]

    # k* and u: the key at the subject's last token of every context template, one prompt at a time
    keys = []
    for c in contexts:
        t = c.replace("{}", template, 1)
        keys.append(_key(lm, layer, t.replace("{}", subject), subject_last(tok, t, subject)))
    k_star = torch.stack(keys).mean(0)
    u = torch.linalg.solve(mom2.double(), k_star.double()).float() if mom2 is not None else k_star.clone()
    u = u / u.norm()

    def rewriting_prompts():
        """(token ids, subject-last index, first target position) of every template, tokenized afresh."""
        out = []
        for c in contexts:
            t = c.replace("{}", template, 1)
            ids = tok(t.replace("{}", subject))["input_ids"]
            out.append((ids + target_ids[:-1], subject_last(tok, t, subject), len(ids) - 1))
        return out

    def kl_prompt():
        return tok(KL_PROMPT.replace("{}", subject))["input_ids"], subject_last(tok, KL_PROMPT, subject)

    def run(ids, index, delta):
        """Logits [T, V] of one prompt, ``delta`` added to the MLP output at ``index`` (unless None),
        and that output at ``index``."""
        def add(out):
            out = out.clone()
            out[0, index] = out[0, index] + delta.to(out.dtype)
            return out
        with hooked(lm.model, module, edit_output=add if delta is not None else None) as seen:
            logits = lm.model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0]
        return logits, seen["output"][0, index]

    # before the edit: the MLP output at the subject of the plain ("{}") template, and the KL reference
    with torch.no_grad():
        ids, index, _ = rewriting_prompts()[0]
        _, target_init = run(ids, index, None)
        target_init = target_init.float().clone()
    kl_init = None  # the KL reference: the first step's distribution (delta = 0), as ROME's code takes it

    delta = torch.zeros(target_init.shape[0], device=device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=params.v_lr)
    max_norm = params.clamp_norm_factor * target_init.norm()
    tgt = torch.tensor(target_ids, device=device)
    step, loss_value = 0, float("nan")
    for step in range(params.v_steps):
        opt.zero_grad()
        nll = []
        for ids, index, first in rewriting_prompts():
            logits, _ = run(ids, index, delta)
            logp = torch.log_softmax(logits[first:first + len(target_ids)].float(), -1)
            nll.append(-logp[torch.arange(len(target_ids)), tgt].sum() / len(target_ids))
        ids, index = kl_prompt()
        logits, _ = run(ids, index, delta)
        kl_logp = torch.log_softmax(logits[index].float(), -1)[None]
        if kl_init is None:
            kl_init = kl_logp.detach()
        kl = torch.nn.functional.kl_div(kl_init, kl_logp, log_target=True, reduction="batchmean")
        wd = params.v_weight_decay * (delta.norm() / target_init.norm() ** 2)
        loss = torch.stack(nll).mean() + params.kl_factor * kl + wd
        loss_value = float(loss.detach())
        if loss_value < params.early_stop_loss or step == params.v_steps - 1:
            break
        loss.backward()
        opt.step()
        with torch.no_grad():
            if delta.norm() > max_norm:
                delta.mul_(max_norm / delta.norm())
    v_star = target_init + delta.detach()

    # the right vector: the edited projection maps the plain prompt's key to v*
    t = contexts[0].replace("{}", template, 1)
    key = _key(lm, layer, t.replace("{}", subject), subject_last(tok, t, subject))
    right = (v_star - target_init) / torch.dot(key, u)
    return StraightforwardEdit(u, right, v_star, k_star, key, step + 1, loss_value)
