"""Scoring of the criteria on constructed distributions: what 'holds' means for each kind of probe."""

import torch

from knlab.studies.probes import (Probe, criteria, neighbour_prompts, probe_probs, resolve, score,
                                  teacher_forced_accuracy)


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
    assert all("Canada" not in p for p, _ in a)


def test_a_probe_the_model_cannot_answer_before_the_edit_is_left_out_with_its_reason(gpt):
    """Only probes whose own fact the model states before the edit are scored: a neighbour that the model
    gets wrong, or a reverse question whose new object has no fact of its own, would count as 'not
    followed' while measuring nothing."""
    probes = [Probe("locality", "The capital of Canada is", "", None, known="Ottawa"),
              Probe("locality", "The capital of Canada is", "", None, known="Rome"),
              Probe("symmetry", "Rome is the capital of", "Canada", None, known="")]
    before = probe_probs(gpt, [p.prompt for p in probes])
    kept, left_out = resolve(gpt, probes, before)
    assert kept == [0]
    assert [x["criterion"] for x in left_out] == ["locality", "symmetry"]
    assert "not 'Rome'" in left_out[0]["reason"] and "no fact of its own" in left_out[1]["reason"]


def test_teacher_forced_accuracy_is_the_share_of_target_tokens_the_model_would_say(gpt):
    assert teacher_forced_accuracy(gpt, "The capital of Canada is", "Ottawa") == 1.0
    assert teacher_forced_accuracy(gpt, "The capital of Canada is", "Rome") == 0.0
