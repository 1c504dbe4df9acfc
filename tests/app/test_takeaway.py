"""The take-away: a result's files hold what the app showed, and its Python reproduces it."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script

from knlab.app import takeaway
from knlab.app.takeaway import Call, script, tables, write
from knlab.core.specs import applied
from knlab.methods.attribute import attribute
from knlab.methods.intervene import intervene
from knlab.methods.predict import predict
from knlab.methods.trace import trace
from knlab.studies.edit_report import edit
from knlab.studies.paper import rerun
from knlab.studies.paradigm_analysis import analyse


def test_call_source_names_every_argument_after_the_first():
    src = Call(trace, ("The capital of Canada is", "Canada", None, 3, None, "3sd", 0)).source()
    assert src == ("trace(lm, 'The capital of Canada is', subject='Canada', answer=None, samples=3, window=None, "
                   "noise='3sd', seed=0)")
    assert Call(rerun, ("kn-edit", 2), on_model=False).source() == "rerun('kn-edit', size=2)"
    assert "progress" not in Call(analyse, ("determiner_noun_agreement_1", 4, 3), {"progress": print}).source()


def test_script_reproduces_a_trace(gpt):
    args = ("The capital of Canada is", "Canada", None, 3, None, "3sd", 0)
    src = script(Call(trace, args), "world-gpt")
    assert "from knlab.methods.trace import trace" in src and "knlab.load_model('world-gpt')" in src
    res = run_script(src, gpt)
    want = trace(gpt, *args)
    for kind in want.grids:
        np.testing.assert_array_equal(res.grids[kind], want.grids[kind])


@pytest.mark.slow  # a script in a process of its own, remaking three edits (~40 s): the full lane has it
def test_script_remakes_the_session_edits_in_order(gpt):
    """Two edits, the second made on the first, then a question: the script answers as the app did."""
    first = ("rome", "The capital of Canada is", "Canada", "Rome", None)
    second = ("rome", "The capital of Spain is", "Spain", "Vienna", None)
    spec1 = edit(gpt, *first).spec
    with applied(gpt, [spec1]):
        spec2 = edit(gpt, *second).spec
    with applied(gpt, [spec1, spec2]):
        want = predict(gpt, "The capital of Spain is", 3)
    src = script(Call(predict, ("The capital of Spain is", 3)), "world-gpt", [Call(edit, first), Call(edit, second)])
    assert src.count("specs.append(edit(lm, 'rome'") == 2
    res = run_script(src, gpt)
    assert res.top_tokens == want.top_tokens == ["Vienna", *want.top_tokens[1:]]
    np.testing.assert_allclose(res.top_probs, want.top_probs, rtol=1e-5)
    assert predict(gpt, "The capital of Spain is", 1).top_tokens == ["Madrid"]  # and the model is left as it was


def test_files_hold_the_result(gpt, tmp_path):
    res = trace(gpt, "The capital of Canada is", "Canada", None, 2)
    paths = [Path(p) for p in write("trace", res, "print('hi')\n", home=tmp_path)]
    assert [p.name for p in paths] == ["trace.json", "trace-hidden.csv", "trace-mlp.csv", "trace-attn.csv", "trace.py"]
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(res.to_json()))
    rows = list(csv.reader(paths[1].open()))
    assert rows[0][:3] == ["position", "token", "subject"] and len(rows[0]) == 3 + gpt.n_layers
    assert [r[1] for r in rows[1:]] == res.tokens
    assert [int(r[2]) for r in rows[1:]] == [int(res.subject_range[0] <= t < res.subject_range[1])
                                             for t in range(len(res.tokens))]
    np.testing.assert_allclose(np.array([[float(x) for x in r[3:]] for r in rows[1:]]), res.grids["hidden"], rtol=1e-6)
    assert paths[-1].read_text() == "print('hi')\n"


def test_every_result_of_the_app_has_tables(gpt):
    """The kinds of result the tabs show, each with at least one non-empty table of the right width."""
    att = attribute(gpt, "The capital of Canada is", None, 2)
    results = [predict(gpt, "The capital of Canada is", 3), att,
               intervene(gpt, "The capital of Canada is", tuple((l, i) for l, i, _ in att.top(3))),
               analyse(gpt, "determiner_noun_agreement_1", 4, 2),
               edit(gpt, "kn", "The capital of Canada is", "Canada", "Rome")]
    for res in results:
        tab = tables(res)
        assert tab, type(res).__name__
        for name, (header, rows) in tab.items():
            assert rows and all(len(r) == len(header) for r in rows), (type(res).__name__, name)
    scores = tables(att)["scores"]
    assert len(scores[1]) == gpt.n_layers and len(scores[0]) == 1 + att.scores.shape[1]


def test_old_download_folders_are_pruned(tmp_path, monkeypatch):
    old = tmp_path / "old"
    old.mkdir()
    import os
    os.utime(old, (0, 0))
    monkeypatch.setattr(takeaway, "KEEP_SECONDS", 10)

    class R:
        def to_json(self):
            return {"x": np.float32(1.5), "a": np.arange(2)}

    paths = write("odd name/../x", R(), "", home=tmp_path)
    assert not old.exists()
    assert Path(paths[0]).name == "odd_name_x.json" and json.loads(Path(paths[0]).read_text()) == {"x": 1.5, "a": [0, 1]}


def test_a_claim_run_has_its_findings_table():
    from knlab.studies.claims.common import ModelRun
    from knlab.studies.findings import AGREES, share
    from knlab.studies.paper import ClaimResult
    f = share("the reverse follows", 0, 38, "below", 0.5, "GPT-2 XL 25%")
    run = ModelRun("world-gpt", [{"item": "a", "live": 1, "published": 2}], [f], {})
    header, rows = tables(run)["findings"]
    assert header[:2] == ["finding", "figure"] and header[-2:] == ["outcome", "the paper's rule"]
    assert rows == [["the reverse follows", "0% of 38 (0-9%)", 0.0, 0.0, f.high, 38, AGREES, f.rule]]
    res = ClaimResult("rome-examples", "t", "s", "p", [run], {}, 1.0)
    assert list(tables(res)) == ["rows", "findings"] and tables(res)["findings"][1][0][:2] == ["world-gpt", f.name]


def test_an_edit_report_lists_its_left_out_probes(gpt):
    rep = edit(gpt, "rome", "The capital of Canada is", "Canada", "Rome")
    rep.left_out = [{"criterion": "symmetry", "prompt": "Rome is the capital of", "reason": "no fact of its own"}]
    assert tables(rep)["left-out"] == (["criterion", "prompt", "reason"],
                                       [["symmetry", "Rome is the capital of", "no fact of its own"]])
    rep.left_out = []
    assert "left-out" not in tables(rep)
