"""The Edit tab's parts (knlab/app/tabs/edit.py): an edit report is shown one way, wherever it appears, and
the ROME layer field reads empty as the default."""

import gradio as gr
import pytest

from knlab.app.tabs.edit import CRITERIA_HEADER, report_views, rome_layer_choice
from knlab.app.takeaway import LEFT_OUT_HEADER, PROBE_HEADER
from knlab.studies.edit_report import edit


def test_report_views_show_the_report(gpt):
    rep = edit(gpt, "rome", "The capital of Canada is", "Canada", "Rome", generate_tokens=2)
    summary, criteria, probes, left_out = report_views(rep)
    assert summary.startswith(f"**ROME** (layer {rep.layer}, ") and "Ottawa → Rome" in summary
    assert f"{rep.after['p_new']:.4f}" in summary and f"{rep.before['p_old']:.4f}" in summary
    assert rep.generation["after"] in summary
    assert all(len(row) == len(CRITERIA_HEADER) for row in criteria)
    assert [row[0] for row in criteria] == list(rep.criteria)
    reliability = next(row for row in criteria if row[0] == "reliability")
    assert reliability[1] == f"{rep.criteria['reliability']:.0%}" and reliability[2] == "1/1"
    assert len(probes) == len(rep.probes) and all(len(row) == len(PROBE_HEADER) for row in probes)
    assert [row[-1] == "✓" for row in probes] == [p.holds for p in rep.probes]
    assert left_out == [[x["criterion"], x["prompt"], x["reason"]] for x in rep.left_out]


def test_left_out_probes_are_shown_with_their_reason(gpt):
    """A probe the model cannot answer before the edit is listed under the probes, with why, not scored."""
    rep = edit(gpt, "rome", "The capital of Canada is", "Canada", "Rome", generate_tokens=2)
    rep.left_out = [{"criterion": "locality", "prompt": "The capital of Slovakia is",
                     "reason": "the model says 'the' before the edit, not 'Bratislava'"}]
    summary, _criteria, probes, left_out = report_views(rep)
    assert left_out == [["locality", "The capital of Slovakia is",
                         "the model says 'the' before the edit, not 'Bratislava'"]]
    assert all(len(row) == len(LEFT_OUT_HEADER) for row in left_out)
    assert "The capital of Slovakia is" not in [row[1] for row in probes]
    assert "1 probe left out, not scored" in summary
    rep.left_out = []
    assert report_views(rep)[3] == [] and "left out" not in report_views(rep)[0]


def test_rome_layer_choice():
    assert rome_layer_choice(None) is None and rome_layer_choice("  ") is None
    assert rome_layer_choice("3") == 3 and rome_layer_choice(4) == 4
    with pytest.raises(gr.Error, match="layer must be a whole number"):
        rome_layer_choice("2.5")
