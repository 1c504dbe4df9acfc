"""The value v*: the MLP output at the subject's last token that makes the model say the new target,
found by ROME's optimisation (Adam on a delta added to that output; NLL of the target over every context
template + KL on "{subject} is a" + weight decay; early stop; norm clamp). Then the right vector of the
update.

Speed: all rows are one batch, encoded once and aligned so that every row's subject-last token sits in
the same column P. Nothing before column P depends on the delta, so it is computed once and kept as a KV
cache; nothing in the blocks below the edited layer depends on it either, so they are replayed. Each step
runs only the edited layer and above on the last few columns, and gradients are taken for the delta
alone, never for the model's weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from knlab.core.models import LM
from knlab.core.nethook import Trace, TraceDict
from knlab.core.replay import prefix_kwargs, prefix_reusable, replay_blocks, returned_cache
from knlab.methods.rome.repr_tools import aligned, subject_last_token, prompt_ids

KL_PROMPT = "{} is a"


@dataclass
class VProblem:
    """The optimisation's inputs, built once."""

    batch: object  # repr_tools.Batch, aligned: every row's subject-last token in column ``column``
    column: int
    target_pos: torch.Tensor  # [R, n_target] columns whose next token is a target token (R rewriting rows)
    target_ids: torch.Tensor  # [n_target]


def build_problem(lm: LM, template: str, subject: str, target_ids: list[int], contexts: list[str]) -> VProblem:
    rows, lookup, pos = [], [], []
    for c in contexts:
        t = c.replace("{}", template, 1)
        ids = prompt_ids(lm, t.replace("{}", subject, 1))
        n = len(ids)
        rows.append(ids + target_ids[:-1])
        lookup.append(subject_last_token(lm, t, subject))
        pos.append([n - 1 + j for j in range(len(target_ids))])
    rows.append(prompt_ids(lm, KL_PROMPT.replace("{}", subject)))
    lookup.append(subject_last_token(lm, KL_PROMPT, subject))
    dev = lm.device
    batch = aligned(lm, rows, lookup)
    pos = [[p + s for p in ps] for ps, s in zip(pos, batch.shift)]
    column = max(lookup)
    # The losses read the target positions and the KL row's subject column; attention is causal, so no
    # column after the last of those changes them: cut the batch there (the KL prompt's " is a" and a
    # template row's padding would otherwise be a third of every step's work for a one-token target).
    end = max(column, max(max(ps) for ps in pos)) + 1
    batch.input_ids, batch.attention_mask = batch.input_ids[:, :end], batch.attention_mask[:, :end]
    batch.position_ids = batch.position_ids[:, :end]
    batch.lengths = [min(n, end) for n in batch.lengths]
    return VProblem(batch, column, torch.tensor(pos, device=dev), torch.tensor(target_ids, device=dev))


@dataclass
class VResult:
    target: torch.Tensor  # v*: the wanted MLP output at the subject's last token of the plain prompt
    target_init: torch.Tensor  # that output before the edit
    delta_norm: float
    steps: int
    loss: float
    p_target: float  # mean p(new target) over the templates at the last step


@dataclass
class ReadPositions:
    """Where the losses read logits, for a forward pass whose columns start at ``first``: ``keep``, the
    columns any row reads (passed as ``logits_to_keep``); and the (row, place in ``keep``) pairs that are
    actually read, in the order ``losses`` takes them: each rewriting row's target positions, row by row,
    then the KL row's subject column. Only those pairs go through the output head (49,152 x 576 on the real
    model): the KL row reads one column of the kept ones and the template rows none of the subject's, so
    a third of the kept (row, column) cells would otherwise be computed, and differentiated, for nothing."""

    keep: torch.Tensor
    rows: torch.Tensor
    places: torch.Tensor

    def select(self, hidden: torch.Tensor, _name: str = "") -> torch.Tensor:
        """The output head's input [rows, kept columns, d] -> the read pairs only, [pairs, d]."""
        return hidden[self.rows, self.places]


def read_positions(prob: VProblem, first: int) -> ReadPositions:
    R, n_target = prob.target_pos.shape
    dev = prob.target_pos.device
    cols = torch.cat([(prob.target_pos - first).flatten(), torch.tensor([prob.column - first], device=dev)])
    rows = torch.cat([torch.arange(R, device=dev).repeat_interleave(n_target), torch.tensor([R], device=dev)])
    keep = torch.unique(cols)  # sorted
    return ReadPositions(keep, rows, torch.searchsorted(keep, cols))


def losses(logits: torch.Tensor, prob: VProblem, kl_init: torch.Tensor | None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(nll per rewriting row, KL log-probs at the KL prompt, KL term before its factor), from the logits
    of the pairs ``read_positions`` lists, in its order: [R x n_target + 1, V]."""
    R, n_target = prob.target_pos.shape
    logp = torch.log_softmax(logits[: R * n_target].float(), -1).view(R, n_target, -1)
    picked = logp.gather(-1, prob.target_ids[None, :, None].expand(R, -1, 1))[..., 0]
    nll_each = -picked.sum(1) / n_target
    kl_logp = torch.log_softmax(logits[R * n_target].float(), -1)[None]
    kl = (torch.nn.functional.kl_div(kl_init, kl_logp, log_target=True, reduction="batchmean")
          if kl_init is not None else torch.zeros((), device=logits.device))
    return nll_each, kl_logp, kl


def compute_v(lm: LM, layer: int, prob: VProblem, params) -> VResult:
    module = lm.arch.module("mlp_out", layer)
    b = prob.batch
    B, T = b.input_ids.shape
    P = prob.column
    all_rows = torch.arange(B, device=lm.device)
    blocks = [lm.arch.layer(i) for i in range(layer)]
    with torch.no_grad(), TraceDict(lm.model, blocks + [module], retain_output=True) as rec:
        # the recorded blocks and cache are what this pass is for: one column through the head is enough
        out = lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                       use_cache=prefix_reusable(lm, T), logits_to_keep=1)
    cache = returned_cache(out)
    target_init = rec[module].output[0, P].float().clone()
    kl_init = None  # taken from the first step (delta = 0), as the reference code does
    hidden = target_init.shape[0]
    delta = torch.zeros(hidden, device=lm.device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=params.v_lr)
    max_norm = params.clamp_norm_factor * target_init.norm()

    first = P if cache is not None else 0  # columns before P come from the cache
    read = read_positions(prob, first)

    def add_delta(out, _name):
        out = out.clone()
        out[:, P - first] = out[:, P - first] + delta.to(out.dtype)
        return out

    step, loss_value, p_target = 0, float("nan"), float("nan")
    with torch.enable_grad(), replay_blocks(lm, rec, layer, all_rows, first), \
            Trace(lm.model, module, retain_output=False, edit_output=add_delta), \
            Trace(lm.model, lm.arch.lm_head, retain_output=False, edit_input=read.select):
        for step in range(params.v_steps):
            logits = lm.model(input_ids=b.input_ids[:, first:], attention_mask=b.attention_mask,
                              position_ids=b.position_ids[:, first:],
                              logits_to_keep=read.keep, **prefix_kwargs(lm, cache, first, T, all_rows)).logits
            nll_each, kl_logp, kl = losses(logits, prob, kl_init)
            if kl_init is None:
                kl_init = kl_logp.detach()
            wd = params.v_weight_decay * (delta.norm() / target_init.norm() ** 2)
            loss = nll_each.mean() + params.kl_factor * kl + wd
            loss_value, p_target = float(loss.detach()), float(torch.exp(-nll_each.detach()).mean())
            if loss_value < params.early_stop_loss or step == params.v_steps - 1:
                break
            (delta.grad,) = torch.autograd.grad(loss, [delta])
            opt.step()
            with torch.no_grad():
                if delta.norm() > max_norm:
                    delta.mul_(max_norm / delta.norm())
    d = delta.detach()
    return VResult(target_init + d, target_init, float(d.norm()), step + 1, loss_value, p_target)


def right_vector(v: VResult, key: torch.Tensor, u: torch.Tensor, current_output: torch.Tensor) -> torch.Tensor:
    """The update's right vector, so that the edited projection maps ``key`` to v*:
    W' key = W key + right (u . key) = current_output + (v* - current_output)."""
    return (v.target - current_output) / torch.dot(key, u)
