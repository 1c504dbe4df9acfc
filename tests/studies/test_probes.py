"""Scoring of the criteria on constructed distributions: what 'holds' means for each kind of probe."""

import torch

from knlab.studies.probes import Probe, criteria, neighbour_prompts, score, teacher_forced_accuracy


def test_scoring_rules(gpt):
    V = 8
    before, after = torch.full((4, V), 0.01), torch.full((4, V), 0.01)
    probes = [Probe("reliability", "p", "new", "old", expected_id=1, old_id=2),
              Probe("locality", "q", "x", None, expected_id=3),
              Probe("symmetry_old", "r", "Canada", None, expected_id=4),
              Probe("generality", "s", "new", "old", expected_id=1, old_id=2)]
    before[0, 2], after[0, 1] = 0.9, 0.9  # new beats old after: holds
    before[1, 3], after[1, 5] = 0.9, 0.9  # the neighbour's answer changed: fails
    before[2, 4], after[2, 6] = 0.9, 0.9  # the old object no longer points to the subject: holds
    after[3, 2] = 0.5  # old still beats new: fails
    res = score(gpt, probes, before, after)
    assert [r.holds for r in res] == [True, False, True, False]
    c = criteria(res)
    assert c["reliability"] == 1.0 and c["locality"] == 0.0 and c["generality"] == 0.0
    assert c["symmetry"] is None and c["synonymy"] is None


def test_neighbours(gpt):
    a = neighbour_prompts(gpt, "Canada", "P36")
    assert a == neighbour_prompts(gpt, "Canada", "P36") and len(a) == 10  # fixed by the edited fact
    assert all("Canada" not in p for p in a)


def test_teacher_forced_accuracy_is_the_share_of_target_tokens_the_model_would_say(gpt):
    assert teacher_forced_accuracy(gpt, "The capital of Canada is", "Ottawa") == 1.0
    assert teacher_forced_accuracy(gpt, "The capital of Canada is", "Rome") == 0.0
