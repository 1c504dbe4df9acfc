"""Every claim of the paper reruns live on the shipped models it applies to and comes back well formed,
with the published figures attached (the organisms here; the real model in the slow lane)."""

import json

import pytest
import torch

from knlab.core.errors import InputError
from knlab.studies import published
from helpers import check_reproduces_the_record
from knlab.studies.findings import OUTCOMES, Finding
from knlab.studies.paper import CLAIMS, _tasks, claim, rerun, rerun_many

IDS = [c.id for c in CLAIMS]
# the claims whose organism reruns take longest (many edits / attributions): the slow lane has them
SLOW_ON_ORGANISMS = {"rome-table-1", "localisation", "rome-examples", "kn-edit", "rome-syntax", "edit-layers"}


def test_every_experiment_of_the_paper_is_a_claim():
    assert IDS == ["kn-sharing", "det-agreement", "overturn", "kn-edit", "localisation", "kn-layers",
                   "sv-agreement", "trace-syntax", "rome-examples", "rome-syntax", "rome-table-1",
                   "edit-layers", "knockout", "trace-corruption"]  # the last three: after the paper
    assert [c.id for c in CLAIMS if c.by] == ["edit-layers", "knockout", "trace-corruption"]
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
    assert out["runs"] and ((published.FOLLOW_UPS[c.by] == out["paper"]) if c.by else "Niu et al." in out["paper"])
    for run in res.runs:
        assert run.model in c.applies_to()
        assert run.rows and all({"item", "live", "published"} <= set(r) for r in run.rows)
        assert any(r["published"] not in ("-", None, "") for r in run.rows), "no published figure beside the live"
        assert run.items, "a run measures items"
        check_findings(run)
        fig = run.figure
        assert fig["type"] in ("bar", "line") and fig["series"]
        assert all(len(v) == len(fig["x"]) for v in fig["series"].values())
        assert run.seconds > 0 and run.size >= 1
        if cid == "rome-table-1":
            check_both_scorings(run)


def check_findings(run):
    """Every statement measured: items counted, the value inside its interval, one of the three outcomes,
    a rule naming the paper's side and figure; JSON round trip."""
    assert run.findings, "no finding"
    for f in run.findings:
        assert f.outcome in OUTCOMES and f.rule.startswith("the paper: "), f
        if f.n == 0:  # nothing could be asked (e.g. no reverse question the model answers): said, undecided
            assert run.left_out and f.outcome == OUTCOMES[2], (f, run.left_out)
            continue
        assert f.low <= f.value <= f.high, f
        if f.unit == "share":
            assert 0 <= f.low and f.high <= 1 and f.k is not None and 0 <= f.k <= f.n
        assert Finding.from_json(f.to_json()).outcome == f.outcome
    assert len({f.name for f in run.findings}) == len(run.findings), "two findings of one name"
    out = run.to_json()
    json.dumps(out)
    assert out["findings"] and json.loads(json.dumps(out["items"])) == out["items"]  # plain JSON results


def check_both_scorings(run):
    """rome-table-1 offers the paper's scoring and the seed's, says which decides, and keeps one finding per
    relation and criterion: reliability and symmetry / synonymy are never folded into one verdict."""
    names = ["P36 reliability", "P36 symmetry", "P1376 reliability", "P1376 symmetry", "P101 reliability",
             "P101 synonymy"]
    assert [f.name for f in run.findings] == names and set(run.detail["seed"]) == set(names)
    assert "seed" in run.detail["scoring"]
    assert run.rows[0]["published"] == "the paper: above 80% (GPT-2 XL 99.79%, LLaMA-2-7B 100.0%)"


# Each finding's outcome on the organisms at size 3 (first word: agrees / departs / undecided). Three items
# decide little: most are undecided; world-bert's p(this) falls and p(scattered) rises when its plural KNs
# are suppressed, against BERT's, and world-gpt's singular subject-verb KNs lower singular verbs as GPT-2's do
# (at the seed's site and at knlab's alike), while its plural KNs, at the seed's site, act less strongly.
U, A, D = "undecided", "agrees", "departs"
PINNED = {("kn-sharing", "world-bert"): [U, U, U, U],
          ("det-agreement", "world-bert"): [D, U, U, U, U, U, D],
          ("overturn", "world-bert"): [U, U, U, U],
          ("kn-layers", "world-gpt"): [D], ("kn-layers", "world-bert"): [U],
          ("sv-agreement", "world-gpt"): [A, A, D, A],
          ("trace-syntax", "world-gpt"): [U, U, U],
          ("localisation", "world-gpt"): [A, D, D], ("localisation", "world-bert"): [A, D, D]}


@pytest.mark.parametrize("cid", [pytest.param(i, marks=pytest.mark.slow) if i in SLOW_ON_ORGANISMS else i
                                 for i in IDS])
def test_claim_reruns_on_the_organisms(cid, gpt, bert):
    progress = []
    res = rerun(cid, 3, models=["world-gpt", "world-bert"], run_on=_run_on(gpt, bert),
                progress=lambda f, d: progress.append(f))
    check_well_formed(res, cid)
    assert [r.model for r in res.runs] == [m for m in claim(cid).applies_to() if m != "smollm2-135m"]
    for run in res.runs:  # the organisms' outcomes at this size are deterministic: any change shows here
        if (cid, run.model) in PINNED:
            assert [f.outcome.split()[0] for f in run.findings] == PINNED[cid, run.model], run.summary()
    assert progress and 0 <= min(progress) and max(progress) <= 1
    for run in res.runs:  # the rerun's items are the record's, one by one (fixed seeds, the same weights)
        assert check_reproduces_the_record(cid, run) >= 1, f"{cid} on {run.model}: no item in common with the record"


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


def test_published_figures_are_the_papers():
    """Spot checks of the transcription against the paper's text (docs/paper.md)."""
    assert published.ROME_TABLE_1["GPT-2 XL"]["P1376"] == {"reliability": 96.37, "symmetry": 23.71}
    assert published.LOCALISATION["GPT-2"]["determiner_noun_agreement_irregular_1"] == (1.32, .58, .24)
    assert published.OVERTURN["determiner_noun_agreement_with_adj_irregular_2"] == (97.4, 95.4)
    assert len(published.PARADIGMS) == 16 and published.DET_SUPPRESSION["those"] == -158.0


# Every claim that applies to the real model, at the smallest size it can measure (a paradigm or a traced
# category needs 2 prompts).
REAL_SIZES = {"kn-edit": 1, "sv-agreement": 2, "localisation": 2, "kn-layers": 2, "trace-syntax": 2,
              "rome-examples": 1, "rome-syntax": 1, "rome-table-1": 1,
              "edit-layers": 2, "knockout": 1, "trace-corruption": 1}


def test_every_claim_for_the_real_model_is_rerun_on_it():
    real = {c.id for c in CLAIMS if "smollm2-135m" in c.applies_to()}
    assert real == set(REAL_SIZES)


@pytest.mark.slow  # the real model: eight claims, two processes side by side (~4 min on 2 cores)
def test_claims_rerun_on_the_real_model():
    """Every claim on smollm2-135m at its smallest size, as ``python -m knlab paper --all --jobs 2`` runs
    them: each a well-formed result beside the published figures; each process checks after every claim
    that the model's weights are back bit for bit, and raises if not (the edits change it for a moment).
    rome-syntax flips "are" to "is" for the paper's own sentence."""
    requests = list(REAL_SIZES.items())
    results = rerun_many(requests, models=["smollm2-135m"], jobs=2)
    assert [r.claim for r in results] == list(REAL_SIZES)
    compared = {}
    for (cid, n), res in zip(requests, results):
        check_well_formed(res, cid)
        assert [(r.model, r.size) for r in res.runs] == [("smollm2-135m", n)]
        compared[cid] = check_reproduces_the_record(cid, res.runs[0])
    # every claim the record has begun on the real model reproduces item by item
    from knlab.studies.record import load_record
    begun = [c for c, e in load_record("smollm2-135m")["claims"].items() if c in REAL_SIZES and e.get("items")]
    assert begun and all(compared[c] >= 1 for c in begun), compared
    rel = [f.value for f in results[list(REAL_SIZES).index("rome-table-1")].runs[0].findings
           if f.name.endswith("reliability")]
    assert rel == [1.0] * 3, rel  # ROME takes on known facts
    ex = results[list(REAL_SIZES).index("rome-syntax")].runs[0].detail["example"]
    assert ex["edited"] == "The authors near the taxi drivers"  # the paper's own sentence
    seen = ex["prompts"][ex["edited"]]
    assert seen["before"]["prefers"] == "are" and seen["after"]["prefers"] == "is"


def test_claims_that_share_work_share_a_process_and_the_long_poles_start_first():
    tasks = _tasks([("kn-layers", 2), ("kn-edit", 1), ("localisation", 2), ("rome-table-1", 1), ("sv-agreement", 2)])
    assert tasks[0] == [("rome-table-1", 1)]
    assert [("localisation", 2), ("kn-layers", 2)] in tasks  # in this order, whatever the order asked
    assert sorted(c for t in tasks for c, _ in t) == ["kn-edit", "kn-layers", "localisation", "rome-table-1",
                                                       "sv-agreement"]
    with pytest.raises(InputError, match="unknown claim"):
        rerun_many([("overturn", 2), ("no-such-claim", 1)], jobs=2)


def test_a_run_that_leaves_the_weights_changed_is_caught(gpt, monkeypatch):
    """The check each process of ``rerun_many`` makes after every claim."""
    import knlab.studies.paper as paper
    monkeypatch.setattr(paper, "load_model", lambda spec: gpt)
    run_on = paper._loaded(check_weights=True)
    assert run_on("world-gpt", lambda lm, x: x + 1, 1) == 2
    w = next(gpt.model.parameters())
    saved = w.detach().clone()

    def careless(lm):
        with torch.no_grad():
            w[0] += 1.0
    try:
        with pytest.raises(RuntimeError, match="not undone"):
            run_on("world-gpt", careless)
    finally:
        with torch.no_grad():
            w.copy_(saved)
