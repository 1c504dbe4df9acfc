"""The edit-layer sweep (Hase et al. 2023): each layer's rewrite score is the one the single edit at
that layer reports, and the trace beside it is the trace's own."""

import pytest

from knlab.core.errors import InputError
from knlab.core.models import weights_checksum
from knlab.studies.edit_report import edit
from knlab.studies.sweep import check_layers, rewrite_score, sweep

PROMPT, SUBJECT, TARGET = "The capital of France is", "France", "Rome"


@pytest.mark.slow  # three ROME edits and a full edit report: minutes on 2 shared cores
def test_each_layer_is_the_single_edit_at_that_layer(gpt):
    before = weights_checksum(gpt.model)
    res = sweep(gpt, PROMPT, SUBJECT, TARGET, layers="0,2", samples=3, mom2=False)
    assert weights_checksum(gpt.model) == before  # every edit undone
    assert res.layers == [0, 2] and len(res.trace_mlp) == gpt.n_layers
    for layer, score in zip(res.layers, res.rewrite):
        rep = edit(gpt, "rome", PROMPT, SUBJECT, TARGET, layer=layer, mom2=False, generate_tokens=0)
        assert score == pytest.approx(rewrite_score(rep.before["p_new"], rep.after["p_new"]), abs=1e-9)
    rows = res.to_json()["rows"]
    assert [r["layer"] for r in rows] == [0, 2] and {"rewrite_score", "trace_effect"} <= set(rows[0])
    # the organism keeps its facts at layer 0: the trace and the edit agree there
    assert res.trace_peak == 0 and res.best_layer == 0 and res.rewrite[0] > 0.5 > res.rewrite[1]


def test_rewrite_score():
    assert rewrite_score(0.2, 0.6) == pytest.approx(0.5) and rewrite_score(0.2, 0.1) < 0


@pytest.mark.parametrize("layers,needle", [("0,9", "from 0 to 5"), ("a,b", "commas"), ([], "from 0")])
def test_bad_layers(gpt, layers, needle):
    with pytest.raises(InputError, match=needle):
        check_layers(gpt, layers)


def test_refused_on_a_masked_model(bert):
    with pytest.raises(InputError, match="masked"):
        sweep(bert, "The capital of France is [MASK] .", SUBJECT, TARGET)
