import pytest

from knlab.core.errors import InputError
from knlab.core.tokens import first_token, single_token, spoken_ids


@pytest.mark.parametrize("lm_name", ["gpt", "bert"])
def test_a_word_is_spoken_as_the_model_would_say_it_next(lm_name, request):
    lm = request.getfixturevalue(lm_name)
    ids = spoken_ids(lm, " Ottawa ")
    assert lm.tokenizer.decode(ids).strip() == "Ottawa" and len(ids) == 1
    assert single_token(lm, "Ottawa") == first_token(lm, "Ottawa") == ids[0]
    two = spoken_ids(lm, "Ottawa Rome")
    assert two == ids + spoken_ids(lm, "Rome")
    assert single_token(lm, "Ottawa Rome") is None and first_token(lm, "Ottawa Rome") == ids[0]
    for bad, match in (("", "the answer is empty"), ("  ", "the answer is empty"), ("Zzyzxqv", "can say")):
        with pytest.raises(InputError, match=match):
            spoken_ids(lm, bad, "answer")
        assert single_token(lm, bad) is None and first_token(lm, bad) is None


def test_a_bpe_word_is_spoken_after_a_space_and_starts_with_its_first_piece(smol):
    ids = spoken_ids(smol, "Kabul")
    assert smol.tokenizer.decode(ids) == " Kabul"  # the leading space a word after a prompt has
    assert ids != smol.tokenizer("Kabul", add_special_tokens=False)["input_ids"]
    assert first_token(smol, "Kabul") == ids[0]
    assert single_token(smol, "Kabul") == (ids[0] if len(ids) == 1 else None)
