"""The real model's measures: object recall is greedy decoding, read off one teacher-forced pass."""

import numpy as np
import pytest
import torch

from knlab.core.tokens import spoken_ids
from knlab.organisms.measure_pretrained import object_recall
from knlab.world import facts as F


def test_object_recall_is_greedy_decoding(smol):
    """Per prompt, top-1 says whether greedy decoding produces every object token, and p(object) is the
    product of those tokens' probabilities: checked against decoding token by token."""
    rel = F.relation("P36")
    facts = rel.facts[:6]
    prompts = [F.causal_prompt(rel.train_templates[0], f.subject) for f in facts]
    objects = [f.object for f in facts]
    top1, prob = object_recall(smol, prompts, objects, batch=2)
    for prompt, obj, said, p in zip(prompts, objects, top1, prob):
        ids = smol.tokenizer(prompt)["input_ids"]
        greedy, expected = True, 1.0
        for tok in spoken_ids(smol, obj, "object"):
            with torch.no_grad():
                probs = torch.softmax(smol.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
            greedy &= int(probs.argmax()) == tok
            expected *= float(probs[tok])
            ids = ids + [tok]
        assert bool(said) == greedy
        assert np.isclose(p, expected, rtol=1e-3)
    assert top1.any()  # the real model knows some capitals


def test_object_recall_batched_by_length_is_each_facts_own(gpt):
    """Prompts and objects of several lengths (two-word objects: two tokens), batched or one at a time:
    p(object) is the teacher-forced product of its tokens' probabilities, recalled when each is the argmax."""
    prompts = ["The capital of Canada is", "The capital of Austria is", "The capital of the country Canada is",
               "The capital of Canada is"]
    objects = ["Ottawa", "Vienna", "Ottawa", "Ottawa Rome"]
    top1, prob = object_recall(gpt, prompts, objects, batch=2)
    top1_one, prob_one = object_recall(gpt, prompts, objects, batch=1)
    assert (top1 == top1_one).all() and np.allclose(prob, prob_one, atol=1e-6)
    for p, o, t, pr in zip(prompts, objects, top1, prob):
        ids, oid = gpt.tokenizer(p)["input_ids"], spoken_ids(gpt, o, "object")
        with torch.no_grad():
            logits = gpt.model(input_ids=torch.tensor([ids + oid])).logits[0].float()
        steps = logits[len(ids) - 1 : len(ids) - 1 + len(oid)]
        assert pr == pytest.approx(float(torch.softmax(steps, -1)[range(len(oid)), oid].prod()), rel=1e-4)
        assert t == bool((steps.argmax(-1) == torch.tensor(oid)).all())
    assert top1[0] and not top1[3]  # the fact is recalled; the fact followed by a wrong word is not
