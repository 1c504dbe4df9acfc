"""One edit end to end on the shipped model: its report and spec, the KN edit through the same path, edits
in sequence, the side-by-side comparison, bad input refused, and the base weights restored."""

import pytest

from knlab.studies.edit_report import describe, edit
from knlab.studies.relation_evaluation import counterfactual
from knlab.core.errors import InputError
from knlab.core.models import weights_checksum
from knlab.serve.worker import ModelWorker, applied
from knlab.world import facts as F


def test_report_and_spec(gpt):
    rep = edit(gpt, "rome", "The capital of Canada is", "Canada", "Rome")
    assert (rep.old, rep.new, rep.relation) == ("Ottawa", "Rome", "P36")
    assert rep.before["p_old"] > rep.before["p_new"] and rep.after["p_new"] > rep.after["p_old"]
    crits = {p.criterion for p in rep.probes}
    assert {"reliability", "generality", "locality", "symmetry", "symmetry_old"} <= crits
    sym = [p for p in rep.probes if p.criterion == "symmetry"][0]
    assert sym.prompt == "Rome is the capital of" and sym.expected == "Canada" and sym.old == "Italy"
    assert "Rome" in rep.generation["after"] and "Ottawa" in rep.generation["before"]
    assert describe(rep.spec).startswith("ROME L")
    with applied(gpt, [rep.spec]):  # the spec alone reproduces the edit
        from knlab.methods.predict import predict
        assert predict(gpt, "The capital of Canada is", 1).top_tokens[0].strip() == "Rome"


def test_synonymy_probe_uses_the_occupation_table(gpt):
    rel = F.relation("P101")
    fact = rel.facts[0]
    new = counterfactual(rel, fact, set())
    rep = edit(gpt, "rome", F.causal_prompt(rel.train_templates[0], fact.subject), fact.subject, new)
    syn = [p for p in rep.probes if p.criterion == "synonymy"]
    assert len(syn) == 1 and syn[0].expected == F.occupations()[new] and syn[0].old == F.occupations()[fact.object]
    assert rep.criteria["symmetry"] is None and rep.criteria["synonymy"] in (0.0, 1.0)


def test_kn_edit_through_the_worker_and_sequenced_edits(gpt):
    worker = ModelWorker()
    worker.add_model(gpt)
    rep = worker.run("world-gpt", [], edit, "kn", "The capital of France is", "France", "Berlin")
    assert rep.neurons and rep.layer is None and rep.criteria["reliability"] is not None
    first = worker.run("world-gpt", [], edit, "rome", "The capital of Canada is", "Canada", "Rome")
    # a second edit is computed on the model with the first applied, and both hold together
    second = worker.run("world-gpt", [first.spec], edit, "rome", "The capital of Spain is", "Spain", "Vienna")
    from knlab.methods.predict import predict
    tops = worker.run("world-gpt", [first.spec, second.spec],
                      lambda lm: [predict(lm, p, 1).top_tokens[0].strip()
                                  for p in ("The capital of Canada is", "The capital of Spain is")])
    assert tops == ["Rome", "Vienna"]
    assert worker.status()["models"]["world-gpt"]["unchanged"]


@pytest.mark.parametrize("args,needle", [
    (("rome", "The capital of Canada is", "Canda", "Rome"), "not in the prompt"),
    (("rome", "The capital of Canada is", "Canada", "Ottawa"), "already answers"),
    (("rome", "The capital of Canada is", "Canada", "Zorblaxia"), "not something .* can say"),
    (("memit", "The capital of Canada is", "Canada", "Rome"), "unknown edit method"),
    (("rome", "   ", "Canada", "Rome"), "empty"),
])
def test_bad_input(gpt, args, needle):
    with pytest.raises(InputError, match=needle):
        edit(gpt, *args)


def test_compare_makes_each_edit_on_its_own(gpt, bert):
    from knlab.core.models import weights_checksum
    from knlab.studies.edit_report import compare
    base = weights_checksum(gpt.model)
    res = compare(gpt, "The capital of Canada is", "Canada", "Rome", generate_tokens=3)
    assert set(res.reports) == {"kn", "rome"}
    rome, kn = res.reports["rome"], res.reports["kn"]
    assert rome is not None and rome.criteria["reliability"] == 1.0 and rome.layer is not None
    assert kn is None or (kn.neurons and kn.layer is None)  # a KN edit needs neurons; if none, it says why
    assert kn is not None or "neurons" in res.errors["kn"]
    # the same probes for both, so that the columns compare like for like
    if kn is not None:
        assert [p.prompt for p in kn.probes] == [p.prompt for p in rome.probes]
    assert weights_checksum(gpt.model) == base
    out = res.to_json()
    assert out["rome"]["method"] == "rome"
    with pytest.raises(InputError, match="masked"):
        compare(bert, "The capital of Canada is [MASK] .", "Canada", "Rome")
    with pytest.raises(InputError, match="not in the prompt"):
        compare(gpt, "The capital of Canada is", "France", "Rome")
