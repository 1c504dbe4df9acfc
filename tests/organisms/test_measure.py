"""What both cards measure the same way: minimal pairs scored by total log-probability or the masked token."""

import numpy as np
import torch

from knlab.organisms.measure import paradigm_accuracies, paradigm_accuracy, sentence_logprob


def test_sentence_logprob_is_the_same_batched_or_alone(gpt):
    """Sentences are batched by length; each one's score is its own (the sum of its next-token log-probs)."""
    sentences = ["The capital of Canada is Ottawa .", "The capital of France is Paris .", "these dogs run ."]
    together = sentence_logprob(gpt, sentences)
    alone = np.array([sentence_logprob(gpt, [s])[0] for s in sentences])
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    ids = torch.tensor([gpt.tokenizer(sentences[2])["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(gpt.model(input_ids=ids).logits.float(), -1)[0]
    by_hand = sum(logp[i, ids[0, i + 1]].item() for i in range(ids.shape[1] - 1))
    assert abs(together[2] - by_hand) < 1e-4
    assert (together < 0).all()


def test_paradigm_accuracies_are_each_paradigms_accuracy(bert):
    names = ["determiner_noun_agreement_2"]
    lines = []
    out = paradigm_accuracies(bert, names, lines.append)
    assert list(out) == names and len(lines) == len(names)
    for name in names:
        acc, n = paradigm_accuracy(bert, name)
        assert out[name] == {"accuracy": round(acc, 4), "pairs": n} and 0 < n and 0 <= acc <= 1
