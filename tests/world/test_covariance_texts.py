"""General English text for the real model's key covariance: natural prose, deterministic, and wired
into ROME's covariance as the corpus "english"."""

import re

import pytest

from knlab.world.covariance_texts import ENGLISH_SOURCE, english_texts
from knlab.core.errors import InputError


def test_english_texts_are_many_paragraphs_of_prose():
    texts = english_texts()
    assert len(texts) > 5000
    words = [len(t.split()) for t in texts]
    assert sum(words) > 500_000 and min(words) >= 3 and sorted(words)[len(words) // 2] >= 15
    assert all("\n" not in t and t == " ".join(t.split()) for t in texts)
    # ordinary English: the commonest words are function words, and no markup or licence boilerplate
    text = " ".join(texts[:2000]).lower()
    for w in (" the ", " and ", " of ", " to ", " her "):
        assert text.count(w) > 500
    assert "gutenberg" not in text and not re.search(r"_\w+_", text)


def test_english_texts_are_deterministic_and_limit_is_a_prefix():
    assert english_texts(50) == english_texts()[:50]
    assert ENGLISH_SOURCE["install"].startswith("apt-get install")


def test_missing_corpus_is_one_clear_line(monkeypatch, tmp_path):
    import knlab.world.covariance_texts as C
    monkeypatch.setenv("KNLAB_JANEAUSTENR", str(tmp_path))
    C._all_texts.cache_clear()
    try:
        with pytest.raises(InputError, match="apt-get install"):
            english_texts()
    finally:
        monkeypatch.delenv("KNLAB_JANEAUSTENR")
        C._all_texts.cache_clear()


def test_covariance_corpora_by_name_and_token_budget(gpt):
    from knlab.methods.rome.layer_stats import within_budget
    from knlab.world.covariance_texts import covariance_corpus
    name, english = covariance_corpus("english")
    assert name == "english" and within_budget(gpt, english, samples=100) == english_texts(100)
    name, world = covariance_corpus(None)
    assert name == "world" and len(world) > 1000
    budget = within_budget(gpt, world, tokens=2000)
    used = sum(len(gpt.tokenizer(t)["input_ids"]) for t in budget)
    assert 0 < len(budget) < len(world) and used <= 2000
    assert used + len(gpt.tokenizer(world[len(budget)])["input_ids"]) > 2000  # as many as fit, no fewer
    with pytest.raises(InputError, match="neither world nor english"):
        covariance_corpus("no-such-corpus-file.txt")
