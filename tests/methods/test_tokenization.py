"""The tokens preview: the subject's tokens marked, and every word the model cannot represent named."""

from knlab.methods.tokenization import tokenization


def test_an_organism_names_its_unknown_words(gpt):
    t = tokenization(gpt, "The capital of Zorblaxia is near Canada", "Canada")
    assert t.unknown == ["Zorblaxia", "near"]
    assert t.tokens[t.subject_range[0]:t.subject_range[1]] == ["Canada"]
    assert "Zorblaxia" in t.markdown() and "**`Canada`**" in t.markdown()
    assert tokenization(gpt, "The capital of Canada is").unknown == []


def test_a_masked_prompt_and_a_bpe_subject(bert, smol):
    t = tokenization(bert, "The capital of Canada is [MASK] .", "Canada")
    assert "[MASK]" in t.tokens and not t.unknown
    t = tokenization(smol, "The Space Needle is in downtown", "Space Needle")
    s0, s1 = t.subject_range
    assert s1 - s0 >= 2 and not t.unknown  # a BPE model splits the subject, and knows every word
    assert tokenization(smol, "The capital of France is", "Atlantis").subject_range is None
