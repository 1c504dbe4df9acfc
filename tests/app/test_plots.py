"""Claim figures (knlab/app/plots.py): a series' 95% intervals become error bars of the right size."""

from types import SimpleNamespace

from knlab.app.plots import claim_figure, error_bars, recorded_figure
from knlab.studies.claims.common import ModelRun


def _run(model="world-gpt", intervals=True):
    figure = {"type": "bar", "title": "t", "x": ["a", "b", "c"], "ylabel": "%",
              "series": {"live": [10.0, 50.0, None], "GPT-2 XL (paper)": [20.0, 30.0, 40.0]}}
    if intervals:
        figure["intervals"] = {"live": [[2.0, 30.0], None, None]}
    return ModelRun(model, [], [], figure)


def test_intervals_become_asymmetric_error_bars():
    fig = claim_figure(SimpleNamespace(runs=[_run()], title="T", source="Fig. 8"))
    live = next(t for t in fig.data if t.name == "live")
    assert live.error_y.array == (20.0, None, None) and live.error_y.arrayminus == (8.0, None, None)
    assert live.error_y.symmetric is False
    paper = next(t for t in fig.data if t.name == "GPT-2 XL (paper)")
    assert paper.error_y.array is None  # the paper's figures have no interval here
    assert "live beside the paper" in fig.layout.title.text


def test_no_intervals_no_error_bars_and_recorded_title():
    fig = recorded_figure(SimpleNamespace(title="T", source="Fig. 8"), [_run(intervals=False), _run("smollm2-135m")])
    assert len(fig.data) == 4 and fig.data[0].error_y.array is None and fig.data[2].error_y.array == (20.0, None, None)
    assert "recorded" in fig.layout.title.text
    assert error_bars([1.0], None) is None and error_bars([None], [[0, 1]]) is None
    assert error_bars([0.0], [[0.0, 9.0]])["array"] == [9.0]  # 0 of n: the bar reaches the high end
