"""The trace's corruption and metric (Zhang & Nanda 2024): symmetric token replacement is the swapped
prompt's own run, restoring everything gives back the clean run, the logit difference is what it says,
and a replacement of another token length is refused in one line."""

import numpy as np
import pytest
import torch

from knlab.core.errors import InputError
from knlab.methods.predict import encode
from knlab.methods.trace import trace
from knlab.studies.known_facts import pick_replacement

PROMPT, SUBJECT = "The capital of France is", "France"


def _logits(lm, prompt):
    enc = encode(lm, prompt)
    with torch.no_grad():
        return lm.model(input_ids=enc.input_ids).logits[0, enc.position].float()


def test_replacement_is_the_swapped_prompts_run(gpt):
    r = trace(gpt, PROMPT, SUBJECT, corruption="replace", replacement="Germany", window=1)
    swapped = torch.softmax(_logits(gpt, "The capital of Germany is"), -1)[r.answer_id].item()
    assert r.samples == 1 and r.replacement == "Germany"
    assert r.corrupted == pytest.approx(swapped, rel=1e-4)
    # restoring the subject's last token's hidden state at the top layer restores the clean run exactly
    s = r.subject_range[1] - 1
    assert r.grids["hidden"][r.position, -1] == pytest.approx(r.clean, rel=1e-5)
    assert r.clean > 0.5 > r.corrupted  # the swap does take the answer away
    assert r.grids["hidden"][s, 0] == pytest.approx(r.clean, rel=1e-4)


def test_logit_difference(gpt):
    r = trace(gpt, PROMPT, SUBJECT, corruption="replace", replacement="Germany", metric="logit_diff", window=1)
    clean, swapped = _logits(gpt, PROMPT), _logits(gpt, "The capital of Germany is")
    foil = int(swapped.argmax())
    assert gpt.tokenizer.decode([foil]).strip() == r.foil == "Berlin"
    assert r.clean == pytest.approx((clean[r.answer_id] - clean[foil]).item(), abs=1e-3)
    assert r.corrupted == pytest.approx((swapped[r.answer_id] - swapped[foil]).item(), abs=1e-3)
    assert r.to_json()["metric"] == "logit_diff" and r.to_json()["foil"] == "Berlin"


def test_noise_with_logit_difference_subtracts_another_token(gpt):
    r = trace(gpt, PROMPT, SUBJECT, samples=3, metric="logit_diff", window=1, kinds=["mlp"])
    assert r.foil and r.foil != r.answer and r.clean > r.corrupted
    assert np.all(np.isfinite(r.grids["mlp"]))


def test_masked_model_replacement(bert):
    prompt = "The capital of France is [MASK] ."
    other = pick_replacement(bert, prompt, SUBJECT)
    r = trace(bert, prompt, SUBJECT, corruption="replace", replacement=other, window=1, kinds=["hidden"])
    swapped = torch.softmax(_logits(bert, prompt.replace("France", other)), -1)[r.answer_id].item()
    assert r.corrupted == pytest.approx(swapped, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(corruption="replace", replacement="United States"), "same token length"),
    (dict(corruption="replace"), "replacement"),
    (dict(corruption="replace", replacement="France"), "subject itself"),
    (dict(corruption="blur"), "corruption"),
    (dict(metric="kl"), "metric"),
])
def test_bad_choices_are_one_line(gpt, kwargs, needle):
    with pytest.raises(InputError, match=needle):
        trace(gpt, PROMPT, SUBJECT, **kwargs)


def test_picked_replacement_is_known_and_the_same_length(gpt):
    other = pick_replacement(gpt, PROMPT, SUBJECT)
    assert other != SUBJECT
    with pytest.raises(InputError, match="type a replacement"):
        pick_replacement(gpt, "My favourite city is in France", "France")


def test_the_preview_takes_the_same_choices(gpt):
    """Attribution patching with replacement and the logit difference: the same clean and corrupted runs as
    the exact trace's, and cells it estimates close to the trace's where the effect is small."""
    from knlab.methods.patching import agreement, patch_estimate
    kw = dict(window=1, corruption="replace", replacement="Germany", metric="logit_diff")
    est = patch_estimate(gpt, PROMPT, SUBJECT, **kw)
    exact = trace(gpt, PROMPT, SUBJECT, **kw)
    assert est.foil == exact.foil == "Berlin" and est.samples == 1 and est.replacement == "Germany"
    assert est.clean == pytest.approx(exact.clean, abs=1e-3) and est.corrupted == pytest.approx(exact.corrupted, abs=1e-3)
    assert agreement(est, exact)["overall"] > 0.5
