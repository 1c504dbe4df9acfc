"""The knowledge-neuron and tracing claims on the Items protocol: each item measured once, checkpointed as
it comes, and a rerun over recorded items gives the same items and findings without measuring again."""

import pytest

from knlab.core.errors import InputError
from knlab.studies import published
from knlab.studies.claims import neurons, tracing
from knlab.studies.claims.common import Items


def _same(a, b):
    assert a.items == b.items and a.rows == b.rows
    assert [f.to_json() for f in a.findings] == [f.to_json() for f in b.findings]


def _never(*args, **kwargs):
    raise AssertionError("measured again although the item was recorded")


def test_kn_sharing_checkpoints_every_item_and_resumes_where_it_stopped(bert, monkeypatch):
    seen = []
    first = neurons.kn_sharing(bert, 4, None, Items(on_item=lambda k, v: seen.append(k)))
    assert list(first.items) == seen and len(seen) == len(set(seen)) == first.detail["n_pairs"] >= 4
    assert all(k.startswith("determiner_noun_agreement_2:") for k in seen)
    assert all(set(v) == {"target", "coarse"} and v["target"] in neurons.DETERMINERS for v in first.items.values())

    # a run stopped after two items, resumed from what was recorded: only the rest is attributed
    class Stop(Exception):
        pass
    recorded = {}

    def stop_after_two(key, value):
        recorded[key] = value
        if len(recorded) == 2:
            raise Stop
    with pytest.raises(Stop):
        neurons.kn_sharing(bert, 4, None, Items(on_item=stop_after_two))
    real, calls = neurons.attribute, []
    monkeypatch.setattr(neurons, "attribute", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    resumed = neurons.kn_sharing(bert, 4, None, Items(done=recorded))
    assert len(calls) == len(first.items) - 2
    _same(first, resumed)

    # everything recorded: nothing is attributed at all
    monkeypatch.setattr(neurons, "attribute", _never)
    _same(first, neurons.kn_sharing(bert, 4, None, Items(done=first.items)))


def test_det_agreement_suppression_items_and_resume(bert, monkeypatch):
    first = neurons.det_agreement(bert, 3)
    sup = {k: v for k, v in first.items.items() if k.startswith("suppress:")}
    assert len(sup) == len(first.items) - len(sup) == 3
    for v in sup.values():
        assert set(v) == {"before", "plural_kns", "singular_kns"} and "scattered" in v["before"]
        assert all(0 <= p <= 1 for p in v["before"].values())
    names = [f.name for f in first.findings]
    assert names[:4] == [f"p({d}), plural KNs suppressed" for d in neurons.DETERMINERS]
    assert [f.rule.startswith("the paper: above" if published.DET_SUPPRESSION[d] > 0 else "the paper: below")
            for f, d in zip(first.findings, neurons.DETERMINERS)] == [True] * 4
    monkeypatch.setattr(neurons, "attribute", _never)
    monkeypatch.setattr(neurons, "answer_logits", _never)
    _same(first, neurons.det_agreement(bert, 3, None, Items(done=first.items)))


def test_trace_syntax_items_are_traced_prompts_and_resume(gpt, monkeypatch):
    first = tracing.trace_syntax(gpt, 2)
    assert len(first.items) == 6 and not first.left_out
    for key, v in first.items.items():
        assert key.split(":")[0] in ("P19", "P36", *tracing.GRAMMAR.values())
        assert {"mlp", "attn", "hidden"} <= set(v["kinds"]) and isinstance(v["split"]["signature"], bool)
    assert [f.n for f in first.findings] == [2, 2, 2]
    monkeypatch.setattr(tracing, "trace", _never)
    _same(first, tracing.trace_syntax(gpt, 2, None, Items(done=first.items)))
    assert first.detail["summaries"] == tracing.trace_syntax(gpt, 2, None, Items(done=first.items)).detail["summaries"]


def test_localisation_asks_every_paradigm_and_leaves_out_what_a_causal_model_cannot_be_asked():
    class Causal:
        masked = False
    assert neurons.localisation_paradigms(Causal()) == published.PARADIGMS  # all 16: the world has each
    assert neurons.localisation_relations(Causal()) == ("P101",)


@pytest.mark.slow  # ten paradigms attributed on world-gpt (~30 s)
def test_localisation_on_a_causal_model(gpt, monkeypatch):
    first = neurons.localisation(gpt, 2)
    out = first.left_out
    assert len(out) == 6 and all(k.endswith("_2") and "comes before" in why for k, why in out.items())
    # the seed's grouping at the seed's site: each paradigm's target types (2 each), a relation's templates
    assert sum(k.startswith("pre-activation:paradigm:") for k in first.items) == 20
    assert sum(k.startswith("pre-activation:relation:P101:") for k in first.items) == 4
    names = [f.name for f in first.findings]
    assert len(names) == 3 and all("site pre-activation" in x and "by target type" in x for x in names)
    assert "per template" in names[1] and "each fact over its 4 paraphrases" in names[2]
    monkeypatch.setattr(neurons, "attribute", _never)
    monkeypatch.setattr(neurons, "_selections", lambda lm: {})  # not the memo: the items alone
    _same(first, neurons.localisation(gpt, 2, None, Items(done=first.items)))


def test_a_claim_that_cannot_run_says_why(gpt):
    with pytest.raises(InputError, match="comes after the critical one"):
        tracing._prompts(gpt, "determiner_noun_agreement_2", 2)


def test_a_paradigms_groups_are_the_seeds_and_their_r2_1_is_the_straightforward_one(gpt):
    """The seed's ``search_kns(paradigm, "sg")``: the pairs of one target type, their IG maps at the seed's
    site, R^2_1 = (s_1^2 - 1) / (n - 1) of the row-normalised stack (``cosine_sim_n``, written out here
    with torch's SVD as the seed does), |KN| and tau from the tau search; the paradigm's figure the mean
    over its groups."""
    import numpy as np
    import torch
    from knlab.methods.attribute import attribute
    from knlab.methods.neurons import select
    from knlab.studies.paradigm_analysis import usable_groups
    from knlab.world.paradigms import target_type
    name, n = "regular_plural_subject_verb_agreement_1", 3
    groups = usable_groups(gpt, name, n)
    assert set(groups) == {"sg", "pl"}
    items = Items()
    got = neurons._paradigm_groups(gpt, name, n, items, {}, None, 1.0, 0.0, "pre-activation")
    for kind, (pairs, prompts) in groups.items():
        assert len(pairs) == n and {target_type(p) for p in pairs} == {kind}
        assert {p.good_token for p in pairs} <= ({"is", "was"} if kind == "sg" else {"are", "were"})
        maps = [attribute(gpt, q, p.good_token, site="pre-activation").scores for p, q in zip(pairs, prompts)]
        Y = torch.tensor(np.stack([m.ravel() for m in maps]))
        y = Y / Y.norm(dim=1).unsqueeze(1)
        s = torch.linalg.svdvals(y)
        seed_r2 = float((s[0] ** 2 - 1) / (Y.shape[0] - 1))
        assert got[kind]["r2_1"] == pytest.approx(seed_r2, abs=1e-6)
        sel = select(maps)
        assert got[kind]["neurons"] == [list(x) for x in sel.neurons] and got[kind]["tau"] == round(sel.tau, 6)
    figures = neurons._mean_figures(list(got.values()))
    assert figures[2] == pytest.approx(np.mean([g["r2_1"] for g in got.values()]))
    assert figures[0] == np.mean([len(g["neurons"]) for g in got.values()])
