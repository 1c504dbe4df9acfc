import numpy as np
import pytest

from knlab.core.errors import InputError
from knlab.core.tokens import target_id
from knlab.methods.predict import encode, predict


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


def test_target_tokens(gpt):
    assert gpt.tokenizer.decode([target_id(gpt, "Ottawa")]) == "Ottawa"
    with pytest.raises(InputError):
        target_id(gpt, "Ottawa Rome")
    with pytest.raises(InputError):
        target_id(gpt, "Zzyzxqv")  # not in the vocabulary


def test_prediction_position_is_last_token(gpt):
    enc = encode(gpt, "The capital of Canada is")
    assert enc.position == enc.input_ids.shape[1] - 1 and enc.tokens[-1] == "is"
