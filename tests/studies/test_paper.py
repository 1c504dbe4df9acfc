"""Every claim of the paper reruns live on the shipped models it applies to and comes back well formed,
with the published figures attached (the organisms here; the real model in the slow lane)."""

import pytest

from knlab.core.errors import InputError
from knlab.studies import published as P
from knlab.studies.paper import CLAIMS, claim, rerun

IDS = ["kn-sharing", "det-agreement", "overturn", "kn-edit", "localisation", "kn-layers", "sv-agreement",
       "trace-syntax", "rome-examples", "rome-syntax", "rome-table-1"]
# the claims whose organism reruns take longest (many edits / attributions): the slow lane has them
SLOW_ON_ORGANISMS = {"rome-table-1", "localisation", "rome-examples", "kn-edit"}


def test_every_experiment_of_the_paper_is_a_claim():
    assert [c.id for c in CLAIMS] == IDS
    for c in CLAIMS:
        assert c.published and c.source and c.title
        assert set(c.applies_to()) <= {"smollm2-135m", "world-gpt", "world-bert"}
    assert claim("kn-sharing").applies_to() == ("world-bert",)
    assert claim("rome-table-1").applies_to() == ("smollm2-135m", "world-gpt")


def _run_on(gpt, bert):
    models = {"world-gpt": gpt, "world-bert": bert}

    def run_on(spec, fn, *args, **kwargs):
        return fn(models[spec], *args, **kwargs)
    return run_on


def check_well_formed(res, cid):
    c = claim(cid)
    assert res.claim == cid and res.published == c.published and res.source == c.source
    out = res.to_json()
    assert out["runs"] and "Niu et al." in out["paper"]
    for run in res.runs:
        assert run.model in c.applies_to()
        assert run.rows and all({"item", "live", "published"} <= set(r) for r in run.rows)
        assert any(r["published"] not in ("-", None, "") for r in run.rows), "no published figure beside the live"
        assert run.holds in (True, False, None) and run.finding.startswith(("Holds", "Does not hold"))
        fig = run.figure
        assert fig["type"] in ("bar", "line") and fig["series"]
        assert all(len(v) == len(fig["x"]) for v in fig["series"].values())
        assert run.seconds > 0 and run.size >= 1


@pytest.mark.parametrize("cid", [pytest.param(i, marks=pytest.mark.slow) if i in SLOW_ON_ORGANISMS else i
                                 for i in IDS])
def test_claim_reruns_on_the_organisms(cid, gpt, bert):
    progress = []
    res = rerun(cid, 3, models=["world-gpt", "world-bert"], run_on=_run_on(gpt, bert),
                progress=lambda f, d: progress.append(f))
    check_well_formed(res, cid)
    assert [r.model for r in res.runs] == [m for m in claim(cid).applies_to() if m != "smollm2-135m"]
    assert progress and 0 <= min(progress) and max(progress) <= 1


def test_a_claim_never_runs_on_a_model_it_does_not_fit(gpt, bert):
    with pytest.raises(InputError, match="runs on smollm2-135m, world-gpt"):
        rerun("rome-table-1", 2, models=["world-bert"], run_on=_run_on(gpt, bert))
    with pytest.raises(InputError, match="size"):
        rerun("overturn", 0, run_on=_run_on(gpt, bert))
    with pytest.raises(InputError, match="unknown claim"):
        rerun("no-such-claim")


def test_trace_syntax_returns_three_category_summaries(gpt, bert):
    res = rerun("trace-syntax", 2, models=["world-gpt"], run_on=_run_on(gpt, bert))
    summaries = res.runs[0].detail["summaries"]
    assert len(summaries) == 3 and sum(k.startswith("facts") for k in summaries) == 1
    for s in summaries.values():
        assert s["n"] >= 1 and {"mlp", "attn", "hidden"} <= set(s["kinds"])


@pytest.mark.slow  # three relations' edits
def test_rome_table_offers_both_scorings(gpt, bert):
    res = rerun("rome-table-1", 2, models=["world-gpt"], run_on=_run_on(gpt, bert))
    run = res.runs[0]
    assert set(run.detail["live"]) == set(run.detail["seed"]) == {"P36 reliability", "P36 symmetry",
                                                                   "P1376 reliability", "P1376 symmetry",
                                                                   "P101 reliability", "P101 synonymy"}
    assert "seed" in run.detail["scoring"] and all(" | " in r["live"] for r in run.rows)
    assert run.rows[0]["published"].startswith("GPT-2 XL 99.79")


def test_published_figures_are_the_papers():
    """Spot checks of the transcription against the paper's text (docs/paper.md)."""
    assert P.ROME_TABLE_1["GPT-2 XL"]["P1376"] == {"reliability": 96.37, "symmetry": 23.71}
    assert P.LOCALISATION["GPT-2"]["determiner_noun_agreement_irregular_1"] == (1.32, .58, .24)
    assert P.OVERTURN["determiner_noun_agreement_with_adj_irregular_2"] == (97.4, 95.4)
    assert len(P.PARADIGMS) == 16 and P.DET_SUPPRESSION["those"] == -158.0


# the smallest size each claim can measure on the real model (a paradigm needs 2 prompts)
REAL_SIZES = {"kn-edit": 1, "sv-agreement": 2}
# Measured in the suite on the real model at their smallest sizes (2 cores): rome-table-1 106 s, rome-examples
# 84 s (ROME edits of 30 layers, ~15-25 s each), trace-syntax 63 s, localisation 52 s (+ kn-layers 4 s after
# it). With them the suite took 20-23 min, against its 15-minute budget; they run on the real model in `python
# -m knlab paper --all` (the README's record) and on the organisms here. Issue #12 stays open on exactly this.
RECORD_ONLY_ON_THE_REAL_MODEL = {"rome-table-1", "rome-examples", "trace-syntax", "localisation", "kn-layers"}


def test_every_claim_for_the_real_model_is_accounted_for():
    """Every claim that applies to the real model is in the real-model test below, has its own (rome-syntax),
    or is one of the named few that only the full record runs on it: none is forgotten."""
    real = {c.id for c in CLAIMS if "smollm2-135m" in c.applies_to()}
    assert real == set(REAL_SIZES) | {"rome-syntax"} | RECORD_ONLY_ON_THE_REAL_MODEL


@pytest.mark.slow  # the real model: two claims at their smallest sizes (~35 s)
@pytest.mark.parametrize("cid", list(REAL_SIZES))
def test_claims_rerun_on_the_real_model(smol, cid):
    """A claim on smollm2-135m at its smallest size: a well-formed result beside the published figures, and
    the model left as it was (the KN edit changes it for a moment and must hand back the base weights)."""
    from knlab.core.models import weights_checksum
    base = weights_checksum(smol.model)
    res = rerun(cid, REAL_SIZES[cid], models=["smollm2-135m"], run_on=lambda spec, fn, *a, **k: fn(smol, *a, **k))
    check_well_formed(res, cid)
    assert [r.model for r in res.runs] == ["smollm2-135m"]
    assert weights_checksum(smol.model) == base


@pytest.mark.slow
def test_rome_syntax_flips_are_to_is_on_the_real_model(smol):
    from knlab.core.models import weights_checksum
    base = weights_checksum(smol.model)
    res = rerun("rome-syntax", models=["smollm2-135m"], run_on=lambda spec, fn, *a, **k: fn(smol, *a, **k))
    run = res.runs[0]
    edited = run.detail["edit"][0]
    assert edited == "The authors near the taxi drivers"  # the paper's own sentence
    assert run.detail["prompts"][edited]["before"] == "are" and run.detail["prompts"][edited]["after"] == "is"
    assert weights_checksum(smol.model) == base
