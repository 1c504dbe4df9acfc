import numpy as np
import pytest
import torch

from knlab.core.errors import InputError
from knlab.methods.predict import answer_logits, encode, next_token_probs, predict


@pytest.mark.parametrize("lm_name", ["gpt", "bert"])
def test_answer_logits_batched_by_length_are_each_prompts_own(lm_name, request):
    """Prompts of several lengths, batched: each row is the logits its prompt gets alone, at its prediction
    position (the last token, or a masked model's [MASK] wherever it sits)."""
    lm = request.getfixturevalue(lm_name)
    prompts = ["The capital of Canada is", "Canada is a country and its capital is", "The capital of Peru is",
               "The capital of the country Canada is", "The capital of France is"]
    if lm.masked:
        prompts = [p + " [MASK] ." for p in prompts] + ["[MASK] is the capital of Canada ."]
    batched = answer_logits(lm, prompts)
    assert batched.shape == (len(prompts), lm.model.config.vocab_size)
    for p, row in zip(prompts, batched):
        alone = next_token_probs(lm, encode(lm, p))
        assert torch.allclose(torch.softmax(row, -1), alone.cpu(), atol=1e-5), p


def test_answer_logits_send_one_position_per_prompt_through_the_head(smol):
    """Prompts of five lengths in one right-padded pass, and the 49,152-row head sees one row per prompt."""
    prompts = ["Paris is", "The capital of Peru is", "Lima is the capital of", "The capital of the country Peru is",
               "Vienna is the capital of", "Its capital is"]
    head_rows = []
    head = smol.model.get_submodule(smol.arch.lm_head)
    handle = head.register_forward_hook(lambda m, args, out: head_rows.append(args[0].shape[0]))
    try:
        batched = answer_logits(smol, prompts)
    finally:
        handle.remove()
    assert head_rows == [len(prompts)]
    for p, row in zip(prompts, batched):
        assert int(row.argmax()) == int(next_token_probs(smol, encode(smol, p)).argmax()), p


def test_causal_prediction_is_the_fact(gpt):
    pred = predict(gpt, "The capital of Canada is", top=5)
    assert pred.top_tokens[0] == "Ottawa"
    assert np.all(np.diff(pred.top_probs) <= 0) and 0 < pred.top_probs.sum() <= 1 + 1e-6
    js = pred.to_json()
    assert js["model"] == "world-gpt" and js["top"][0]["token"] == "Ottawa" and len(js["top"]) == 5


def test_masked_prediction_fills_the_mask(bert):
    pred = predict(bert, "The capital of Canada is [MASK] .", top=3)
    assert pred.top_tokens[0] == "Ottawa"
    assert pred.tokens[pred.position] == "[MASK]"


@pytest.mark.parametrize("prompt", ["", "   ", "\x00abc", "x" * 5000])
def test_bad_prompts_are_clear_errors(gpt, prompt):
    with pytest.raises(InputError):
        predict(gpt, prompt)


def test_masked_model_needs_exactly_one_mask(bert):
    with pytest.raises(InputError, match=r"\[MASK\]"):
        predict(bert, "The capital of Canada is")
    with pytest.raises(InputError, match="exactly one"):
        predict(bert, "[MASK] is the capital of [MASK] .")


@pytest.mark.parametrize("top", [0, 101, -3])
def test_top_range(gpt, top):
    with pytest.raises(InputError):
        predict(gpt, "The capital of Canada is", top=top)


def test_prediction_position_is_last_token(gpt):
    enc = encode(gpt, "The capital of Canada is")
    assert enc.position == enc.input_ids.shape[1] - 1 and enc.tokens[-1] == "is"
