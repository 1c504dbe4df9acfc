"""The real model, SmolLM2-135M, through every instrument: properties, not snapshots."""

import numpy as np
import pytest

from knlab.methods.predict import predict

PROMPT, SUBJECT = "The capital of France is", "France"


def test_it_answers_paris(smol):
    pred = predict(smol, PROMPT, top=3)
    assert pred.top_tokens[0] == " Paris" and pred.top_probs[0] > 0.5


def test_trace_shows_the_early_and_the_late_site(smol):
    """Meng et al.'s two sites: the last subject token's state carries the fact through the early layers,
    the last token's from the late ones on; in between neither does (the fact moves between them)."""
    from knlab.methods.trace import trace
    res = trace(smol, PROMPT, SUBJECT, kinds=("hidden",), samples=5)
    grid, L = res.grids["hidden"], smol.n_layers
    assert res.clean > 0.5 and res.corrupted < 0.1 * res.clean
    subj_last, last = res.subject_range[1] - 1, res.position
    early, late = slice(0, L // 3), slice(2 * L // 3, L)
    assert grid[subj_last, early].mean() > 0.7 * res.clean  # early site: the subject's last token
    assert grid[subj_last, late].mean() < 0.3 * res.clean
    assert grid[last, late].mean() > 0.7 * res.clean  # late site: the prediction position
    assert grid[last, early].mean() < 0.3 * res.clean


def test_attribution_covers_every_layer(smol):
    from knlab.methods.attribute import attribute
    res = attribute(smol, PROMPT, steps=5)
    assert res.scores.shape == (30, 1536) and res.target.strip() == "Paris"
    assert np.isfinite(res.scores).all() and np.abs(res.scores).max() > 0


@pytest.mark.parametrize("argv, needle", [
    (["predict", "   "], "the prompt is empty"),
    (["trace", PROMPT, "--subject", "Germany"], "not in the prompt"),
    pytest.param(["edit", "rome", PROMPT, "--subject", SUBJECT, "--target", "Paris"], "already answers",
                 marks=pytest.mark.slow),
    pytest.param(["trace", PROMPT, "--subject", SUBJECT, "--window", "0"], "window", marks=pytest.mark.slow),
])
def test_bad_input_on_it_is_one_clear_line(smol, argv, needle, capsys):
    from knlab.app.cli import main
    from knlab.serve.worker import default_worker
    if "smollm2-135m" not in default_worker().status()["models"]:
        default_worker().add_model(smol)
    code = main(argv + ["--model", "smollm2-135m"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and needle in err, err
    assert default_worker().status()["models"]["smollm2-135m"]["unchanged"]
