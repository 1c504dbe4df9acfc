"""The key k* (what the edited layer's MLP reads at the subject's last token, averaged over the context
templates) and the left vector u of the rank-one update."""

from __future__ import annotations

import torch

from knlab.core.models import LM
from knlab.core.nethook import Trace
from knlab.methods.rome.repr_tools import right_padded, subject_last_token, prompt_ids


@torch.no_grad()
def keys_at_subject(lm: LM, layer: int, templates: list[str], subject: str) -> torch.Tensor:
    """[len(templates), ffn_width]: the input of layer ``layer``'s MLP output projection at the subject's
    last token of each filled template, in one batch."""
    rows = [prompt_ids(lm, t.replace("{}", subject, 1)) for t in templates]
    idx = torch.tensor([subject_last_token(lm, t, subject) for t in templates], device=lm.device)
    batch = right_padded(lm, rows)
    with Trace(lm.model, lm.arch.module("mlp_out", layer), retain_output=False, retain_input=True, stop=True) as tr:
        lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    return tr.input[torch.arange(len(rows), device=lm.device), idx].float()


def compute_u(lm: LM, layer: int, template: str, subject: str, contexts: list[str],
              mom2: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, k*): k* is the mean key over ``contexts`` ("{}"-templates the prompt is put into); u is
    C^-1 k* normalised, or k* normalised when the covariance adjustment is off."""
    k_star = keys_at_subject(lm, layer, [c.replace("{}", template, 1) for c in contexts], subject).mean(0)
    if mom2 is not None:
        u = torch.linalg.solve(mom2.double(), k_star.double()).float()
    else:
        u = k_star.clone()
    return u / u.norm(), k_star
