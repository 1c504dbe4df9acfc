"""The record: every item checkpointed the moment it exists, a stopped run resumed where it stopped, each
entry's provenance, the weights back after every claim, and docs/results.md generated from the records."""

import json

import pytest

from knlab.studies import record as R
from knlab.studies.claims import editing
from knlab.studies.findings import OUTCOMES


@pytest.mark.slow  # two record runs of a claim (~15 s): the full lane
def test_a_stopped_record_goes_on_where_it_stopped(gpt, tmp_path, monkeypatch):
    calls = []
    real_item = editing._syntax_item

    def counted(lm, case):
        calls.append(case[0])
        if len(calls) == 2 and not hasattr(counted, "stopped"):
            counted.stopped = True
            raise KeyboardInterrupt  # the record is stopped while measuring its second item
        return real_item(lm, case)
    monkeypatch.setattr(editing, "_syntax_item", counted)
    with pytest.raises(KeyboardInterrupt):
        R.record_claim(gpt, "rome-syntax", tmp_path, size=3, command="test", log=lambda s: None)
    entry = R.load_record("world-gpt", tmp_path)["claims"]["rome-syntax"]
    assert not entry["complete"] and len(entry["items"]) == 1  # the first item was kept the moment it existed
    first = calls[0]
    calls.clear()
    run = R.record_claim(gpt, "rome-syntax", tmp_path, resume=True, size=3, command="test", log=lambda s: None)
    assert first not in calls and len(calls) == 2  # resumed: only the two items not yet measured
    entry = R.load_record("world-gpt", tmp_path)["claims"]["rome-syntax"]
    assert entry["complete"] and list(entry["items"]) == list(run.items) and len(run.items) == 3
    assert entry["command"] == "test" and entry["weights"] and "torch" in entry["versions"] and entry["size"] == 3
    assert [f["name"] for f in entry["run"]["findings"]] == [f.name for f in run.findings]
    assert all(f["outcome"] in OUTCOMES for f in entry["run"]["findings"])
    again = R.recorded("rome-syntax", "world-gpt", tmp_path)
    assert [f.text() for f in again.findings] == [f.text() for f in run.findings]


def test_a_record_of_other_weights_is_started_again_not_resumed(gpt, tmp_path):
    R.record_claim(gpt, "kn-edit", tmp_path, size=2, log=lambda s: None)
    path = R.record_path("world-gpt", tmp_path)
    data = json.loads(path.read_text())
    data["claims"]["kn-edit"]["weights"] = "other"
    for v in data["claims"]["kn-edit"]["items"].values():
        v["reliability"] = "forged"
    path.write_text(json.dumps(data))
    run = R.record_claim(gpt, "kn-edit", tmp_path, resume=True, size=2, log=lambda s: None)
    assert all(v["reliability"] != "forged" for v in run.items.values())


def test_results_are_generated_from_the_records(gpt, tmp_path):
    run = R.record_claim(gpt, "kn-edit", tmp_path, size=2, log=lambda s: None)
    md = R.results_markdown(tmp_path)
    f = run.findings[0]
    row = next(l for l in md.splitlines() if l.startswith("| `kn-edit`"))
    assert f.name in row and f.text() in row and f.rule in row
    assert "| `rome-table-1` | - | - | not recorded yet |" in md.splitlines()
    assert "## Wall time per claim and model (minutes)" in md


def test_record_tasks_group_per_model_and_start_with_the_real_models_long_poles():
    from knlab.studies.record import _tasks
    tasks = _tasks(["world-gpt", "world-bert", "smollm2-135m"], ["kn-layers", "overturn", "localisation", "rome-table-1"])
    assert tasks[:2] == [("smollm2-135m", ["rome-table-1"]), ("world-gpt", ["rome-table-1"])]
    assert ("world-bert", ["localisation", "kn-layers"]) in tasks  # one process, in this order
    assert ("world-gpt", ["overturn"]) not in tasks and ("world-bert", ["overturn"]) in tasks  # where it applies
    assert len(tasks) == 2 + 3 + 1


def test_a_finding_under_30_items_is_flagged_and_left_out_items_are_counted_by_reason():
    from knlab.studies.findings import share
    from knlab.studies.record import MIN_ITEMS, _cell, _left_out_lines
    small, big = share("x", 3, 14, "below", 0.5, "p"), share("x", 3, MIN_ITEMS, "below", 0.5, "p")
    assert "(N < 30)" in _cell(small) and "N <" not in _cell(big)
    lines = _left_out_lines({"a": "says 'the'", "b": "says 'the'", "c": "no own fact"})
    assert lines == ["  - left out: 3 items; 2 x says 'the'; 1 x no own fact"]
    assert _left_out_lines({}) == []


def test_a_record_is_parsed_once_per_version_of_its_file(tmp_path, monkeypatch):
    """The Paper tab reads each model's record for every claim: parsed once, and again only once written."""
    parsed = []
    real_loads = json.loads
    monkeypatch.setattr(R.json, "loads", lambda text: parsed.append(1) or real_loads(text))
    assert R.load_record("world-gpt", tmp_path) == {"model": "world-gpt", "claims": {}}  # none written yet
    with R._locked("world-gpt", tmp_path) as data:
        data["claims"]["rome-syntax"] = {"complete": False, "items": {"a": 1}}
    first = R.load_record("world-gpt", tmp_path)
    n = len(parsed)
    assert R.load_record("world-gpt", tmp_path) is first and len(parsed) == n
    with R._locked("world-gpt", tmp_path) as data:
        data["claims"]["rome-syntax"]["items"]["b"] = 2
    again = R.load_record("world-gpt", tmp_path)
    assert again["claims"]["rome-syntax"]["items"] == {"a": 1, "b": 2}
    assert first["claims"]["rome-syntax"]["items"] == {"a": 1}  # the writer changed its own copy


def test_the_committed_record_measures_each_claim_with_the_variant_behind_the_published_figure():
    """The record's kn-edit, localisation, kn-layers and sv-agreement were measured as the paper's figures
    were (docs/paper.md, sections 1-3): each finding names its variant; kn-edit's items hold both rules on
    the same neurons, each scored both ways; the neuron claims' items of a causal model are at the seed's
    KN site (pre-activation), a masked model's at its own (after GELU), and a paradigm's selections are per
    target type. The organisms' rerun (tests/studies/test_paper.py) compares these items one by one."""
    from knlab.core.arch import ARCHITECTURES
    seed_site = {"smollm2-135m": ARCHITECTURES["llama"].seed_site, "world-gpt": ARCHITECTURES["gpt2"].seed_site,
                 "world-bert": ARCHITECTURES["bert"].seed_site}
    assert seed_site == {"smollm2-135m": "pre-activation", "world-gpt": "pre-activation", "world-bert": "activation"}
    checked = 0
    for model in ("world-gpt", "world-bert", "smollm2-135m"):
        claims = R.load_record(model)["claims"]
        edit = claims.get("kn-edit", {})
        if edit.get("complete"):
            checked += 1
            names = [f["name"] for f in edit["run"]["findings"]]
            assert any("rule ekn" in n and "token-accuracy" in n for n in names), names
            assert any("rule dai" in n and "first-token" in n for n in names), names
            by_rule = {r: {k.split(":", 2)[2]: v for k, v in edit["items"].items() if k.startswith(f"kn@{r}:P36:")}
                       for r in ("ekn", "dai")}
            edited = {s: v for s, v in by_rule["ekn"].items() if "skipped" not in v}
            assert edited and set(edited) <= set(by_rule["dai"])
            for s, row in edited.items():
                assert by_rule["dai"][s]["neurons"] == row["neurons"]  # the same neurons, two rules
                assert "reliability" in row["seed"] and row["reliability"] in (0.0, 1.0)  # both scorings
                assert isinstance(row["activation"], float)
        for cid in ("localisation", "kn-layers", "sv-agreement"):
            entry = claims.get(cid, {})
            if not entry.get("complete"):
                continue
            checked += 1
            site = seed_site[model]
            assert all(f"site {site}" in f["name"] for f in entry["run"]["findings"]
                       if "knlab's" not in f["name"]), (model, cid)
            keys = [k for k in entry["items"] if not k.startswith("suppress:")]
            at_seed = [k for k in keys if k.startswith("pre-activation:")]
            if site == "activation":
                assert keys and not at_seed, (model, cid)
            elif cid == "sv-agreement":  # each pair at the seed's site, and again at knlab's for one finding
                assert len(at_seed) * 2 == len(keys), (model, cid)
            else:
                assert keys and at_seed == keys, (model, cid)
            paradigms = [k for k in keys if "paradigm:" in k]
            assert all(k.rsplit(":", 1)[1].split("@")[0] in ("sg", "pl", "f", "m") for k in paradigms), paradigms
    assert checked >= 4  # both organisms' records at least
