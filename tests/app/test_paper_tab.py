"""The Paper tab opens on the record (knlab/app/tabs/paper.py): each claim shows its recorded full-size
findings (figure with N and interval, outcome, the paper's rule) and figure with error bars, or says that a
model is not recorded yet; the live rerun is labelled as one, at a small size."""

import json
from types import SimpleNamespace

import gradio as gr

from knlab.app.tabs import paper as tab
from knlab.studies import record
from knlab.studies.claims.common import ModelRun
from knlab.studies.findings import AGREES, UNDECIDED, share
from knlab.studies.paper import claim


def _write_record(directory, model="world-gpt"):
    f = share("the new capital's reverse question names the edited country", 0, 38, "below", 0.5, "Rome -> Italy")
    run = ModelRun(model, [{"item": "x", "live": "0% of 38", "published": "Italy"}], [f],
                   {"type": "bar", "title": "t", "x": [f.name], "ylabel": "%", "series": {"live": [0.0]},
                    "intervals": {"live": [[100 * f.low, 100 * f.high]]}}, size=40, seconds=600.0,
                   left_out={"symmetry:Peru (reverse of the new object)": "the model does not say Lima's country"})
    entry = {"claim": "rome-examples", "size": 40, "complete": True, "commit": "0123456789abcdef",
             "command": "python -m knlab paper --record", "seconds": 600.0, "items": {f"symmetry:{i}": {} for i in range(38)},
             "run": run.to_json(), "finished": "2025-01-01 10:00"}
    entry["run"].pop("items")
    partial = {"claim": "rome-syntax", "complete": False, "items": {"syntax:a": {}}}
    (directory / f"{model}.json").write_text(json.dumps({"model": model, "claims": {"rome-examples": entry,
                                                                                      "rome-syntax": partial}}))
    return f


def test_a_claim_opens_on_its_record(tmp_path, monkeypatch):
    f = _write_record(tmp_path)
    monkeypatch.setattr(record, "RECORDS", tmp_path)
    text, rows, figure, runs = tab.record_views(claim("rome-examples"))
    assert rows == [["world-gpt", f.name, "0% of 38 (0-9%)", AGREES, f.rule]]
    assert "Recorded: 38 items (1 left out), size 40, 10.0 minutes, commit 01234567" in text
    assert "`python -m knlab paper --record`" in text
    assert "*smollm2-135m*: not recorded yet" in text  # the real model: nothing recorded in this directory
    live = next(t for t in figure.data if t.name == "live")
    assert live.error_y.arrayminus == (0.0,) and round(live.error_y.array[0]) == 9  # 0 of 38: 0-9%
    text, rows, figure, _ = tab.record_views(claim("rome-syntax"))
    assert rows == [] and figure is None and "world-gpt*: not recorded yet: in progress, 1 items so far" in text


def test_no_record_at_all_says_not_recorded_yet(tmp_path):
    text, rows, figure, runs = tab.record_views(claim("overturn"), tmp_path)
    assert "*world-bert*: not recorded yet" in text and rows == [] and figure is None and runs == []


def test_the_tab_builds_with_the_record_shown_on_open(tmp_path, monkeypatch):
    _write_record(tmp_path)
    monkeypatch.setattr(record, "RECORDS", tmp_path)
    ctx = SimpleNamespace(fields={})
    with gr.Blocks() as demo:
        with gr.Tabs():
            tab.build_paper_tab(ctx)
    comps = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    table = comps["paper-rome-examples-record-table"]
    assert table.value["headers"] == tab.FINDINGS_HEADER and table.value["data"][0][2] == "0% of 38 (0-9%)"
    assert "paper-rome-examples-record-plot" in comps and "paper-overturn-record-plot" not in comps
    assert "not recorded yet" in comps["paper-overturn-record"].value
    assert comps["paper-rome-examples-button"].value == "Rerun live (small size)"


def test_the_live_summary_is_labelled_a_small_live_rerun():
    f = share("x", 1, 2, "above", 0.5, "p")
    res = SimpleNamespace(runs=[ModelRun("world-gpt", [], [f], {}, size=2, seconds=3.0)], absent={"smollm2-135m": "not installed"})
    text = tab.live_summary(claim("rome-examples"), res)
    assert text.startswith("**Live rerun at a small size**") and f"x: {f.text()}, *{UNDECIDED}*" in text
    assert "smollm2-135m*: not installed" in text
