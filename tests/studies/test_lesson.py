"""The lesson's six steps run live: steps 1-5 follow one fact; a single example states what it shows and
cites the record (the claim at full size) for the verdict; step 3 reports its controls beside the result."""

import json

import pytest

from knlab.core.errors import InputError
from knlab.core.models import weights_checksum
from knlab.studies import lesson, record
from knlab.studies.claims.common import ModelRun
from knlab.studies.findings import AGREES, DEPARTS, UNDECIDED, share
from knlab.studies.lesson import EDIT_LAYERS_FINDINGS, FACTS, REVERSE_FINDINGS, STEPS, lesson_model, step


def test_seven_steps_each_with_its_text_and_tab():
    assert [s.number for s in STEPS] == [1, 2, 3, 4, 5, 6, 7]
    assert all(len(s.notice) > 100 and s.tab in ("Predict", "Trace", "Attribute", "Edit", "Paper") for s in STEPS)
    assert lesson_model() in ("smollm2-135m", "world-gpt")
    with pytest.raises(InputError, match="steps 1-7"):
        step(8)
    assert step(7).claim == "edit-layers" and "Hase et al." in step(7).notice


def write_record(directory, model, claim_id, findings):
    """A complete record entry of ``claim_id`` on ``model`` with these findings, as studies.record writes one."""
    path = directory / f"{model}.json"
    data = json.loads(path.read_text()) if path.exists() else {"model": model, "claims": {}}
    run = ModelRun(model, [], findings, {"type": "bar", "title": "t", "x": [f.name for f in findings],
                                         "series": {"live": [100 * f.value for f in findings]},
                                         "intervals": {"live": [[100 * f.low, 100 * f.high] for f in findings]}},
                   size=40, seconds=60.0).to_json()
    run.pop("items")
    data["claims"][claim_id] = {"claim": claim_id, "complete": True, "size": 40, "seconds": 60.0, "items": {},
                                "commit": "abc", "command": "test", "run": run}
    path.write_text(json.dumps(data))


def test_the_verdict_is_the_records():
    agree, depart = share("a", 0, 38, "below", 0.5, "p"), share("b", 38, 38, "below", 0.5, "p")
    undecided = share("c", 1, 2, "below", 0.5, "p")
    assert (agree.outcome, depart.outcome, undecided.outcome) == (AGREES, DEPARTS, UNDECIDED)
    assert lesson._verdict([agree]) is True and lesson._verdict([agree, depart]) is False
    assert lesson._verdict([agree, undecided]) is None and lesson._verdict([]) is None
    text, found = lesson._cite(None, "rome-examples", "world-gpt", ["a"])
    assert "no full-size run of rome-examples on world-gpt yet" in text and found == []
    run = ModelRun("world-gpt", [], [agree, depart], {})
    text, found = lesson._cite(run, "rome-examples", "world-gpt", ["a"])
    assert found == [agree] and f"a: **{agree.text()}**, *{AGREES}*" in text and "b:" not in text


def test_step_3_controls_are_present_and_deterministic(gpt):
    first, second = step(3).run(gpt), step(3).run(gpt)
    d = first.detail
    assert len(d["unrelated"]) == lesson.CONTROLS and len(d["random"]) == lesson.RANDOM_DRAWS
    assert all(u["prompt"] not in FACTS["world-gpt"][0] and u["before"] == u["answer"] for u in d["unrelated"])
    layers = sorted(l for l, _ in d["neurons"])
    for r in d["random"]:  # as many neurons, from the same layers, none of them a knowledge neuron
        assert sorted(l for l, _ in r["neurons"]) == layers and not {tuple(n) for n in r["neurons"]} & \
            {tuple(n) for n in d["neurons"]}
    assert d["random"] == second.detail["random"] and d["unrelated"] == second.detail["unrelated"]  # fixed seed
    assert "unrelated facts" in first.summary and "random neurons of the same layers" in first.summary


def test_step_7_sweeps_the_lessons_fact_and_cites_the_record(gpt, tmp_path, monkeypatch):
    """Step 7: step 4's fact edited at three layers of the record's grid, bottom to top, without the key
    covariance (said so, with the command that reruns it), beside step 2's trace; its verdict is the record's
    edit-layers findings, never this one fact's."""
    assert lesson.lesson_layers(30) == [0, 16, 28] and lesson.lesson_layers(6) == [0, 2, 5]
    assert lesson.lesson_layers(2) == [0, 1]
    monkeypatch.setattr(record, "RECORDS", tmp_path)
    peak = share(EDIT_LAYERS_FINDINGS[0], 3, 40, "below", 0.5, "p")  # agrees
    added = share(EDIT_LAYERS_FINDINGS[1], 40, 40, "below", 0.5, "p")  # departs
    write_record(tmp_path, "world-gpt", "edit-layers", [peak, added])
    base = weights_checksum(gpt.model)
    seven = step(7).run(gpt)
    res = seven.result
    assert seven.step == 7 and seven.kind == "sweep" and res.layers == [0, 2, 5]
    assert (res.prompt, res.subject, res.new) == (FACTS["world-gpt"][0], FACTS["world-gpt"][1], FACTS["world-gpt"][3])
    assert len(res.rewrite) == 3 and len(res.trace_mlp) == gpt.n_layers and res.trace_peak in range(gpt.n_layers)
    assert seven.detail["mom2"] is False and "--no-mom2" in seven.summary
    assert seven.detail["command"].endswith("--layers 0,2,5 --no-mom2 --model world-gpt")
    assert seven.agrees is False  # the record departs on one finding: the verdict is the record's
    assert all(f"{f.name}: **{f.text()}**, *{f.outcome}*" in seven.summary for f in (peak, added))
    assert [f["name"] for f in seven.detail["recorded"]] == list(EDIT_LAYERS_FINDINGS)
    assert weights_checksum(gpt.model) == base  # every edit undone


@pytest.mark.slow  # ROME edits and a causal trace
def test_every_step_runs_on_the_organism(gpt, tmp_path, monkeypatch):
    monkeypatch.setattr(record, "RECORDS", tmp_path)
    takes = share("the capital edit takes", 38, 38, "above", 0.5, "Ottawa -> Rome")
    rev = [share(REVERSE_FINDINGS[0], 0, 38, "below", 0.5, "p"), share(REVERSE_FINDINGS[1], 30, 38, "above", 0.5, "p"),
           share(REVERSE_FINDINGS[2], 1, 2, "below", 0.5, "p")]  # the last undecided
    write_record(tmp_path, "world-gpt", "rome-examples", [takes, *rev])
    base = weights_checksum(gpt.model)
    results = [s.run(gpt) for s in STEPS]
    assert [r.step for r in results] == [1, 2, 3, 4, 5, 6, 7]
    assert results[0].agrees and "Ottawa" in results[0].summary  # world-gpt knows Canada's capital
    four, five, six = results[3], results[4], results[5]
    assert four.detail["takes"] and four.result.after["p_new"] > four.result.after["p_old"]  # ROME takes
    assert four.agrees is True and f"the capital edit takes: **{takes.text()}**" in four.summary  # the record's
    # step 5 follows step 4's fact and edit, and its verdict is the record's: undecided on one finding
    assert five.detail["example"]["edit"][1:] == [four.result.subject, four.result.old, four.result.new]
    assert five.detail["example"]["edit"][0] == four.result.prompt == FACTS["world-gpt"][0]
    assert five.agrees is None and five.result is not None and "One edit is an example" in five.summary
    assert all(f"{f.name}: **{f.text()}**, *{f.outcome}*" in five.summary for f in rev)
    assert "holds" not in five.summary.lower()
    # step 6: not recorded in this directory, so no verdict, and it says so
    assert six.agrees is None and six.result is None and "no full-size run of rome-syntax" in six.summary
    # step 7: step 4's fact swept over three layers beside step 2's trace; the verdict is the record's (none here)
    seven = results[6]
    assert seven.kind == "sweep" and seven.result.layers == [0, 2, 5] and seven.result.new == FACTS["world-gpt"][3]
    assert seven.agrees is None and "no full-size run of edit-layers" in seven.summary
    for r in results:
        assert r.summary and r.agrees in (True, False, None) and r.to_json()["model"] == "world-gpt"
    assert weights_checksum(gpt.model) == base  # every edit of the lesson is undone


@pytest.mark.slow
def test_the_first_steps_on_the_real_model(smol):
    first = step(1).run(smol)
    assert first.agrees and "Paris" in first.summary
    second = step(2).run(smol)
    assert second.detail["mlp_layer"] < smol.n_layers and second.kind == "trace"
