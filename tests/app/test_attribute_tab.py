"""The Attribute tab's figures: what one attribution shows (the wiring is tested through the app's API in
test_app.py and in the browser in test_browser.py)."""

import numpy as np

from knlab.app.tabs.attribute import attribution_figures
from knlab.methods.attribute import attribute


def test_attribution_figures_show_the_best_neurons_layer(gpt):
    res = attribute(gpt, "The capital of Canada is", None, 2)
    overview, layer, detail, table, chosen, scores, raw = attribution_figures(res)
    top = res.top(20)
    assert layer["value"] == top[0][0] and layer["maximum"] == gpt.n_layers - 1
    assert [r[:2] for r in table] == [[l, i] for l, i, _ in top] and len(table) == 20
    assert chosen.split() == [f"{l}:{i}" for l, i, _ in top[:5]]
    assert np.array_equal(scores, res.scores) and raw == res.to_json()
    assert overview.data and detail.data
