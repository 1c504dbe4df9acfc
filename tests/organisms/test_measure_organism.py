"""The organisms are what their cards say, on the weights that ship."""

import json

from knlab.core.models import SHIPPED
from knlab.organisms import measure_organism as M
from knlab.organisms.measure import paradigm_accuracy
from knlab.world import facts as F


def test_card_figures_are_the_shipped_models_own(gpt, bert):
    """Re-measure part of each card on the weights that ship: the card is not stale."""
    for lm, kind in ((gpt, "gpt"), (bert, "bert")):
        metrics = json.loads((SHIPPED[f"world-{kind}"] / "metrics.json").read_text())
        rel = F.relation("P36", corpus_only=True)  # the organism's own world, as its card measures it
        assert f"python -m knlab card world-{kind}" in (SHIPPED[f"world-{kind}"] / "README.md").read_text()
        acc, _ = M.relation_accuracy(lm, rel, rel.train_templates)
        assert round(acc, 4) == metrics["relations"]["P36"]["train"]
        assert acc >= M.REQUIRED_TRAIN_ACC  # the quality bar, on the weights that ship
        acc, _ = paradigm_accuracy(lm, "determiner_noun_agreement_2")
        assert round(acc, 4) == metrics["paradigms"]["determiner_noun_agreement_2"]["accuracy"]
        assert acc >= M.REQUIRED_PARADIGM_ACC


def test_subject_last_token_carries_the_fact(gpt):
    """The organism computes the way the methods assume: restoring the last subject token alone
    recovers most of the fact, on a fresh sample of facts and noise seeds."""
    curve = M.restore_curve(gpt, limit=15, samples=5)
    assert curve["best_share"] >= M.REQUIRED_RESTORE
