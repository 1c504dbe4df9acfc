"""Attention knockout (Geva et al. 2023): exact with nothing blocked, equal to the straightforward loop,
and it does cut what it says (a cut edge set changes p(answer), the same cut in no layer does not)."""

import numpy as np
import pytest

from knlab.core.errors import InputError
from knlab.methods.knockout import EDGE_SETS, knocked_probs, knockout
from knlab.methods.predict import encode, next_token_probs
from reference.knockout import knockout_straightforward

CASES = {"gpt": ("The capital of France is", "France"), "bert": ("The capital of France is [MASK].", "France")}


@pytest.mark.parametrize("which", ["gpt", "bert"])
def test_nothing_blocked_is_the_plain_forward(which, request):
    lm = request.getfixturevalue(which)
    prompt, _ = CASES[which]
    enc = encode(lm, prompt)
    plain = next_token_probs(lm, enc)
    aid = int(plain.argmax())
    p = knocked_probs(lm, enc.input_ids, enc.position, aid, [{}, {0: []}])
    assert p[0] == pytest.approx(float(plain[aid]), abs=0) and p[1] == p[0]


@pytest.mark.parametrize("which,window", [("gpt", 1), ("gpt", 3), ("bert", 2)])
def test_batched_knockout_equals_the_reference(which, window, request):
    lm = request.getfixturevalue(which)
    prompt, subject = CASES[which]
    res = knockout(lm, prompt, subject, window=window)
    clean, ref = knockout_straightforward(lm, prompt, subject, res.answer_id, window)
    assert res.clean == pytest.approx(clean, abs=1e-6)
    for e in EDGE_SETS:
        np.testing.assert_allclose(res.probs[e], ref[e], atol=2e-5)
    # the cuts do something: some layer's subject cut moves p(answer) by more than a point
    assert np.abs(res.change("subject")).max() > 0.01


def test_smollm2_sdpa_equals_the_reference(smol):
    prompt, subject = "The capital of France is", "France"
    res = knockout(smol, prompt, subject, window=6)
    clean, ref = knockout_straightforward(smol, prompt, subject, res.answer_id, 6)
    assert res.clean == pytest.approx(clean, abs=1e-6)
    for e in EDGE_SETS:
        np.testing.assert_allclose(res.probs[e], ref[e], atol=1e-4)


def test_bad_input_is_one_line(gpt):
    with pytest.raises(InputError, match="window"):
        knockout(gpt, "The capital of France is", "France", window=0)
    with pytest.raises(InputError, match="edge set"):
        knockout(gpt, "The capital of France is", "France", edge_sets=["everything"])
    with pytest.raises(InputError, match="not in the prompt"):
        knockout(gpt, "The capital of France is", "Spain")
