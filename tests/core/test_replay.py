"""knlab.core.replay: a staged batch gives every row what running that row alone gives."""

import contextlib

import pytest
import torch

from knlab.core.nethook import Trace
from knlab.methods.predict import encode
from knlab.core.replay import Stages, returned_cache, staged_blocks, staged_cache


def test_stages_count_rows_by_start_block():
    s = Stages([1, 1, 3], [2, 3, 4])
    assert s.total == 10  # row 0 (the unchanged run) and 9 changed rows
    assert [s.computed_at(j) for j in range(5)] == [1, 6, 6, 10, 10]
    assert [s.changed_below(j) for j in range(5)] == [1, 1, 6, 6, 10]
    assert [s.offset(g) for g in range(3)] == [1, 3, 6]
    with pytest.raises(ValueError):
        Stages([2, 1], [1, 1])


def test_staged_batch_equals_each_row_run_alone(tiny_lm):
    """Rows that each change the FFN activation at the prediction position of one layer: in the staged
    batch a row copies row 0 below its layer (and, in a causal model, only the prediction position is
    run, on the prompt's keys and values), yet its logits are those of a whole forward pass with that
    one change, and row 0's are the unchanged run's."""
    lm = tiny_lm
    prompt = "The capital of Canada is [MASK] ." if lm.masked else "The capital of Canada is"
    enc = encode(lm, prompt)
    ids, pos, T = enc.input_ids, enc.position, enc.input_ids.shape[1]
    layers, per = [0, lm.n_layers - 1], 2
    torch.manual_seed(1)
    deltas = {l: torch.randn(per, lm.ffn_width) for l in layers}

    with torch.no_grad():
        clean = lm.model(input_ids=ids).logits[0, pos]
    alone = []
    for l in layers:
        for r in range(per):
            def add(x, _, d=deltas[l][r]):
                x = x.clone()
                x[:, pos] += d
                return x
            with torch.no_grad(), Trace(lm.model, lm.arch.module("mlp_out", l), retain_output=False, edit_input=add):
                alone.append(lm.model(input_ids=ids).logits[0, pos])

    first = 0 if lm.masked else pos
    stages = Stages(layers, [per] * len(layers))
    with torch.no_grad(), contextlib.ExitStack() as stack:
        kwargs = {"use_cache": False}
        if first:
            prefix = lm.model.base_model(input_ids=ids[:, :first], use_cache=True)
            kwargs = staged_cache(lm, returned_cache(prefix), stages)
        stack.enter_context(staged_blocks(lm, stages, pos - first))
        for g, l in enumerate(layers):
            def shift(x, _, l=l, row=stages.offset(g)):
                x = x.clone()
                x[row : row + per, pos - first] += deltas[l]
                return x
            stack.enter_context(Trace(lm.model, lm.arch.module("mlp_out", l), retain_output=False, edit_input=shift))
        staged = lm.model(input_ids=ids[:, first:].expand(stages.total, T - first), **kwargs).logits[:, pos - first]
    assert torch.allclose(staged[0], clean, atol=1e-5)
    assert torch.allclose(staged[1:], torch.stack(alone), atol=1e-4)
    assert not torch.allclose(staged[1], staged[per + 1], atol=1e-4)  # the changes did change something
