import numpy as np
import pytest

from knlab.core.errors import InputError
from knlab.methods.trace import locate_subject, restore_last_subject_token, restored_probs


def _answer(lm, word):
    return lm.tokenizer.convert_tokens_to_ids(word)


@pytest.mark.parametrize("prompt,subject,tokens", [
    ("Canada is a country .", "Canada", ["Canada"]),                         # subject at the start
    ("The Space Needle is in downtown", "Space Needle", ["Space", "Needle"]),  # multi-token
    ("Canada , not Canada , has its capital in", "Canada", ["Canada"]),       # twice: the last one
    ("The capital of New Zealand is", "New Zealand", ["New", "Zealand"]),
])
def test_subject_span(gpt, prompt, subject, tokens):
    a, b = locate_subject(gpt, prompt, subject)
    ids = gpt.tokenizer(prompt)["input_ids"]
    assert gpt.tokenizer.convert_ids_to_tokens(ids[a:b]) == tokens
    if prompt.startswith("Canada ,"):
        assert a == 4  # [BOS] Canada , not Canada


def test_subject_errors(gpt):
    with pytest.raises(InputError, match="not in the prompt"):
        locate_subject(gpt, "The capital of Canada is", "France")
    with pytest.raises(InputError):
        locate_subject(gpt, "The capital of Canada is", " ")


def test_restoring_everything_at_layer_0_gives_clean_and_nothing_gives_corrupted(gpt):
    prompt = "The capital of Canada is"
    rng = locate_subject(gpt, prompt, "Canada")
    T = len(gpt.tokenizer(prompt)["input_ids"])
    every = [("hidden", 0, t) for t in range(T)]
    res = restored_probs(gpt, prompt, rng, _answer(gpt, "Ottawa"), [every, []], samples=4)
    assert res.probs[0] == pytest.approx(res.clean, abs=1e-5)
    assert res.probs[1] == pytest.approx(res.corrupted, abs=1e-7)
    assert res.corrupted < res.clean


def test_deterministic_for_a_seed(gpt):
    prompt = "The capital of Canada is"
    a, _ = restore_last_subject_token(gpt, prompt, "Canada", _answer(gpt, "Ottawa"), samples=3, seed=7)
    b, _ = restore_last_subject_token(gpt, prompt, "Canada", _answer(gpt, "Ottawa"), samples=3, seed=7)
    c, _ = restore_last_subject_token(gpt, prompt, "Canada", _answer(gpt, "Ottawa"), samples=3, seed=8)
    assert np.array_equal(a.probs, b.probs) and a.corrupted == b.corrupted
    assert a.corrupted != c.corrupted


from knlab.methods.trace import grid_cells, restore_window, trace
from knlab.studies.trace_summary import CATEGORIES, token_categories, trace_relation
from knlab.world.facts import guess_subject


def test_grids_shapes_and_reference_points(gpt):
    res = trace(gpt, "The capital of Canada is", "Canada", samples=3, window=3)
    T = len(res.tokens)
    assert res.answer == "Ottawa" and res.subject_range == (4, 5)
    for k in ("hidden", "mlp", "attn"):
        assert res.grids[k].shape == (T, gpt.n_layers)
        assert np.all((res.grids[k] >= 0) & (res.grids[k] <= 1))
    # tokens before the subject are never corrupted: restoring them changes nothing
    assert np.allclose(res.grids["hidden"][:4], res.corrupted, atol=1e-6)
    # restoring the (single) subject token's hidden state at layer 0 restores the clean run
    assert res.grids["hidden"][4, 0] == pytest.approx(res.clean, abs=1e-5)
    js = res.to_json()
    assert set(js) >= {"model", "prompt", "tokens", "subject_range", "answer", "clean", "corrupted", "hidden", "mlp", "attn"}
    assert len(js["hidden"]) == T and len(js["hidden"][0]) == gpt.n_layers


def test_masked_model_traces_at_the_mask(bert):
    res = trace(bert, "The capital of Canada is [MASK] .", "Canada", samples=2, window=3, kinds=("hidden",))
    assert res.tokens[res.position] == "[MASK]" and res.answer == "Ottawa"
    assert res.clean > res.corrupted


def test_restore_window_is_centred_and_clipped():
    assert restore_window(0, 10, 48) == list(range(0, 5))
    assert restore_window(20, 10, 48) == list(range(15, 25))
    assert restore_window(47, 10, 48) == list(range(42, 48))
    assert restore_window(3, 1, 6) == [3]


def test_grid_cell_restores_its_hidden_state_or_a_window_of_module_outputs():
    assert grid_cells("hidden", 4, 2, 3, 6) == [("hidden", 2, 4)]  # the window does not apply to a state
    assert grid_cells("mlp", 4, 2, 3, 6) == [("mlp", j, 4) for j in (1, 2, 3)]
    assert grid_cells("attn", 0, 5, 3, 6) == [("attn", 4, 0), ("attn", 5, 0)]  # clipped at the top


@pytest.mark.parametrize("kw", [dict(samples=0), dict(samples=1000), dict(window=0), dict(kinds=("nope",))])
def test_bad_parameters(gpt, kw):
    with pytest.raises(InputError):
        trace(gpt, "The capital of Canada is", "Canada", **kw)


def test_token_categories():
    # [BOS] The Space Needle is in downtown : subject 2..4, position 6
    cats = token_categories(7, (2, 4), 6)
    assert cats == [None, None, "first subject token", "last subject token", "first subsequent token",
                    "further tokens", "last token"]
    cats = token_categories(8, (1, 4), 7)
    assert cats[1:4] == ["first subject token", "middle subject tokens", "last subject token"]


def test_relation_summary(gpt):
    s = trace_relation(gpt, "P36", limit=3, samples=2, window=3)
    assert s.n_prompts == 3 and set(s.kinds) == {"hidden", "mlp", "attn"}
    assert set(s.kinds["hidden"]) <= set(CATEGORIES)
    # the organism: the last subject token carries the fact in early layers
    assert s.kinds["hidden"]["last subject token"][0] > 0.3
    js = s.to_json()
    assert js["n"] == 3 and "last token" in js["kinds"]["hidden"]


def test_guess_subject():
    assert guess_subject("The capital of Canada is") == "Canada"
    assert guess_subject("The Space Needle is in downtown") == "Space Needle"
    assert guess_subject("Yesterday Bob Smith went to") == "Bob Smith"


def test_fast_grids_equal_the_straightforward_ones_on_every_family(tiny_lm):
    """Skipped cells and replayed blocks change no number: the batched trace equals the reference
    loop (one forward per cell) on a random model of each family."""
    from reference.trace import trace_straightforward
    prompt = "The capital of New Zealand is" + (" [MASK] ." if tiny_lm.masked else "")
    res = trace(tiny_lm, prompt, "New Zealand", samples=3, window=2, noise=0.5, seed=3)
    ref = trace_straightforward(tiny_lm, prompt, "New Zealand", res.answer_id, 3, 2, 0.5, 3)
    for k in ("hidden", "mlp", "attn"):
        assert np.abs(res.grids[k] - ref[k]).max() < 1e-5, k


def test_paradigm_summary(bert, gpt):
    from knlab.studies.trace_summary import trace_paradigm
    s = trace_paradigm(bert, "determiner_noun_agreement_2", limit=3, samples=2, window=3, kinds=("hidden",))
    assert s.n_prompts == 3 and "last token" in s.kinds["hidden"]
    s = trace_paradigm(gpt, "anaphor_gender_agreement", limit=3, samples=2, window=3, kinds=("hidden",))
    assert s.n_prompts == 3
    with pytest.raises(InputError, match="masked model"):
        trace_paradigm(gpt, "determiner_noun_agreement_2", limit=2, samples=2)


@pytest.mark.parametrize("lm_name,prompt", [("gpt", "The Space Needle is in downtown"),
                                            ("bert", "The Space Needle is in downtown [MASK] .")])
def test_rows_staged_by_start_block_in_any_chunking_give_the_same_probabilities(lm_name, prompt, request):
    """Rows of one pass start at different blocks (ordered by start); cutting the pass into chunks that
    begin at any start changes no probability."""
    from knlab.methods.predict import encode
    lm = request.getfixturevalue(lm_name)
    rng = locate_subject(lm, prompt, "Space Needle")
    answer = lm.tokenizer.convert_tokens_to_ids("Seattle")
    T, L = len(encode(lm, prompt).tokens), lm.n_layers
    configs = [[("hidden", l, t)] for t in range(T) for l in range(L)]
    configs += [grid_cells("mlp", t, l, 3, L) for t in range(T) for l in range(L)]
    whole = restored_probs(lm, prompt, rng, answer, configs, samples=2, noise=0.5, seed=1)
    chunked = restored_probs(lm, prompt, rng, answer, configs, samples=2, noise=0.5, seed=1, max_batch=1)
    assert np.abs(whole.probs - chunked.probs).max() < 1e-5
    assert np.ptp(whole.probs) > 1e-3  # restores at different blocks do differ
