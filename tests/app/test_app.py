"""The HTTP API round-trip, against the real app started as a user would start it."""

import csv
import json
from pathlib import Path

import pytest
from gradio_client import Client
from helpers import run_cli_here, run_script


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_predict_endpoint_round_trip(client, gpt):
    plot, result, files, code = client.predict("world-gpt", "The capital of Canada is", 5, api_name="/predict")
    assert result["model"] == "world-gpt"
    assert result["top"][0]["token"] == "Ottawa" and len(result["top"]) == 5
    assert plot is not None
    # the take-away: the same result as files, and the Python call that reproduces it
    assert [Path(f).name for f in files] == ["predict.json", "predict-top.csv", "predict.py"]
    assert json.loads(Path(files[0]).read_text()) == result
    rows = list(csv.reader(open(files[1])))
    assert rows[0] == ["rank", "token", "prob"] and [r[1] for r in rows[1:]] == [t["token"] for t in result["top"]]
    assert "predict(lm, 'The capital of Canada is', top=5)" in code and Path(files[2]).read_text().strip() == code.strip()
    assert run_script(code, gpt).to_json() == result


def test_predict_endpoint_masked_model(client):
    _plot, result, _files, _code = client.predict("world-bert", "The capital of France is [MASK] .", 3,
                                                  api_name="/predict")
    assert result["top"][0]["token"] == "Paris"


@pytest.mark.parametrize("model,prompt,needle", [
    ("world-gpt", "   ", "empty"),
    ("world-bert", "no mask here", "MASK"),
    ("no-such-org/no-such-model", "hello", "world-gpt"),
])
def test_bad_input_is_a_message_not_a_traceback(client, model, prompt, needle):
    with pytest.raises(Exception) as info:
        client.predict(model, prompt, 5, api_name="/predict")
    assert needle in str(info.value)
    assert "Traceback" not in str(info.value)


def test_api_lists_predict(client):
    info = client.view_api(print_info=False, return_format="dict")
    assert "/predict" in info["named_endpoints"]


def test_trace_endpoint(client):
    status, plot, cats, knock, result, files, code = client.predict(
        "world-gpt", "The capital of Canada is", "Canada", "", 3, 3, "3sd", 0, True, "noise", "", "prob",
        api_name="/trace")
    assert result["answer"] == "Ottawa" and result["clean"] > result["corrupted"]
    assert len(result["hidden"]) == len(result["tokens"])
    assert "clean" in status
    assert [Path(f).name for f in files] == ["trace.json", "trace-hidden.csv", "trace-mlp.csv", "trace-attn.csv",
                                             "trace.py"]
    grid = [[float(x) for x in r[3:]] for r in list(csv.reader(open(files[1])))[1:]]
    assert grid == result["hidden"]
    assert "trace(lm, 'The capital of Canada is', subject='Canada', answer=None, samples=3, window=3" in code
    assert knock is not None and "Knockout" in status  # the fourth figure: Geva et al.'s attention knockout
    *_, result, _files, code = client.predict(
        "world-gpt", "The capital of Canada is", "Canada", "", 3, 1, "3sd", 0, False, "replace", "Germany",
        "logit_diff", api_name="/trace")
    assert result["replacement"] == "Germany" and result["foil"] == "Berlin" and "metric='logit_diff'" in code


def test_attribute_endpoint(client):
    out = client.predict("world-gpt", "The capital of Canada is", "", 4, "ig", api_name="/attribute")
    result, files, code = out[-3:]
    assert [Path(f).name for f in files] == ["attribute.json", "attribute-scores.csv", "attribute-top.csv",
                                             "attribute.py"] and "attribute(lm, " in code
    assert result["target"] == "Ottawa" and len(result["top_neurons"]) == 20
    assert result["layers"] == 6


def test_neurons_endpoint(client):
    out = client.predict("world-gpt", "The capital of Canada is\nThe capital city of Canada is", "Ottawa", 4,
                         api_name="/neurons")
    assert out["n_prompts"] == 2 and "tau" in out


def test_paradigm_endpoint(client):
    _plot, out, files, code = client.predict("world-bert", "determiner_noun_agreement_2", 4, 3, api_name="/paradigm")
    assert "analyse(lm, 'determiner_noun_agreement_2', n=4, steps=3)" in code and len(files) == 5  # JSON, 3 CSV, script
    assert [g["target"] for g in out["groups"]] == ["pl", "sg"] and out["n_prompts"] == 8
    assert all(len(g["tokens"]) == 24 for g in out["groups"]) and 0 <= out["overturned"] <= 1


def _top(client, prompt="The capital of Canada is"):
    return client.predict("world-gpt", prompt, 3, api_name="/predict")[1]["top"][0]["token"]


def test_edits_are_per_session_with_undo_and_reset(app_url):
    alice, bob = Client(app_url, verbose=False), Client(app_url, verbose=False)
    out = alice.predict("world-gpt", "rome", "The capital of Canada is", "Canada", "Rome", None, api_name="/edit")
    report, left_out = out[6], out[5]
    assert [r[2] for r in left_out["data"]] == [x["reason"] for x in report["left_out"]]
    assert report["method"] == "rome" and report["criteria"]["reliability"] == 1.0
    assert report["after"]["p_new"] > report["after"]["p_old"] and report["history"]
    assert _top(alice) == "Rome"  # alice's later requests see her edit ...
    assert _top(bob) == "Ottawa"  # ... bob's never do
    out = bob.predict("world-gpt", "kn", "The capital of France is", "France", "Berlin", None, api_name="/edit")
    assert out[6]["method"] == "kn" and out[6]["neurons"]
    assert "specs.append" not in out[-1]  # bob's first edit: made on the base model
    assert _top(alice, "The capital of France is") == "Paris"
    _hist, remaining = alice.predict(api_name="/undo")
    assert remaining == [] and _top(alice) == "Ottawa"
    alice.predict("world-gpt", "rome", "The capital of Canada is", "Canada", "Rome", None, api_name="/edit")
    code = alice.predict("world-gpt", "rome", "The capital of Spain is", "Spain", "Vienna", None, api_name="/edit")[-1]
    assert code.count("specs.append(edit(lm, 'rome', prompt='The capital of Canada is'") == 1  # made on her first edit
    assert _top(alice) == "Rome" and _top(alice, "The capital of Spain is") == "Vienna"
    code = alice.predict("world-gpt", "The capital of Spain is", 3, api_name="/predict")[-1]
    assert code.count("specs.append(edit(lm, 'rome'") == 2 and "Vienna" in code  # her edits, then her question
    _hist, remaining = alice.predict(api_name="/reset")
    assert remaining == [] and _top(alice) == "Ottawa" and _top(alice, "The capital of Spain is") == "Madrid"
    bob.predict(api_name="/reset")
    assert _top(bob, "The capital of France is") == "Paris"


@pytest.mark.parametrize("args,needle", [
    (("rome", "The capital of Canada is", "Canda", "Rome", None), "not in the prompt"),
    (("rome", "The capital of Canada is", "Canada", "Ottawa", None), "already answers"),
    (("rome", "The capital of Canada is", "Canada", "Rome", 40), "layer"),
    (("rome", "The capital of Canada is", "Canada", "", None), "empty"),
])
def test_edit_bad_input_is_a_message(client, args, needle):
    with pytest.raises(Exception) as info:
        client.predict("world-gpt", *args, api_name="/edit")
    assert needle in str(info.value) and "Traceback" not in str(info.value)


def test_evaluate_endpoint(client):
    _status, _table, _plot, out, files, code = client.predict("world-gpt", "rome", "P1376", 2, api_name="/evaluate")
    assert "evaluate_relation(lm, 'rome', relation='P1376', limit=2)" in code and "specs" not in code  # base model
    assert out["n"] == 2 and out["relation"] == "P1376" and out["reliability"] == 1.0
    assert "symmetry" in out and out["published"]["GPT-2 XL"]["symmetry"] == 23.71


def test_paper_claim_reruns_live_beside_the_published(client):
    """A claim runs on the models that fit it, whatever the header says: overturn is BERT's, so world-bert."""
    summary, table, _plot, out, files, code = client.predict(2, api_name="/paper_overturn")
    assert "rerun('overturn', size=2)" in code and "load_model" not in code
    assert [Path(f).name for f in files] == ["paper_overturn.json", "paper_overturn-rows.csv",
                                             "paper_overturn-findings.csv", "paper_overturn.py"]
    assert out["claim"] == "overturn" and [r["model"] for r in out["runs"]] == ["world-bert"]
    rows = out["runs"][0]["rows"]
    assert len(rows) == 4 and rows[0]["published"] == "100.0 -> 94.8" and " -> " in rows[0]["live"]
    assert "world-bert" in summary and len(table["data"]) == 4
    assert summary.startswith("**Live rerun at a small size**") and "undecided" in summary
    with pytest.raises(Exception) as info:  # a bad size: one clear message
        client.predict(-3, api_name="/paper_overturn")
    assert "size" in str(info.value) and "Traceback" not in str(info.value)


def test_the_claims_are_the_same_list_in_the_app_the_cli_and_the_api(client):
    import json

    from knlab.studies.paper import CLAIMS
    api = {e for e in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
           if e.startswith("/paper_")}
    cli = [json.loads(line)["id"] for line in run_cli_here("paper", "--list", "--json").stdout.splitlines()]
    assert cli == [c.id for c in CLAIMS]
    assert api == {"/paper_" + c.replace("-", "_") for c in cli}


def test_compare_shows_kn_and_rome_side_by_side_and_keeps_neither(client):
    out = client.predict("world-gpt", "The capital of Canada is", "Canada", "Rome", None, api_name="/compare")
    (kn_status, kn_criteria, _kn_probes, _kn_left, rome_status, rome_criteria, _rome_probes, rome_left, data, files,
     code) = out
    assert ("compare(lm, 'The capital of Canada is', subject='Canada', target='Rome', layer=None, rule='dai', "
            "scoring='first-token')") in code
    probes = list(csv.reader(open(files[1])))
    assert Path(files[1]).name == "compare-probes.csv" and {r[0] for r in probes[1:]} <= {"kn", "rome"}
    assert "rome" in {r[0] for r in probes[1:]}
    assert "layer" in rome_status and "→" in rome_status and rome_criteria["data"]
    assert rome_status.startswith("**ROME** (layer ")  # formatted as an applied edit's report
    assert len(_rome_probes["headers"]) == 7 and all(len(r) == 7 for r in _rome_probes["data"])
    assert rome_left["headers"] == ["criterion", "prompt", "reason"]  # the probes left out, and why
    assert [r[1] for r in rome_left["data"]] == [x["prompt"] for x in data["rome"]["left_out"]]
    assert data["rome"]["new"] == "Rome" and ("neurons" in data["kn"] or "error" in data["kn"])
    _plot, pred, _files, _code = client.predict("world-gpt", "The capital of Canada is", 3, api_name="/predict")
    assert pred["top"][0]["token"] == "Ottawa"  # compare keeps no edit in the session


@pytest.mark.slow  # the lesson runs on the real model when it is installed (its first load in the app)
def test_the_lesson_steps_are_endpoints(client):
    from knlab.studies.lesson import lesson_model
    status, _plot, out, files, code = client.predict(api_name="/lesson_1")
    assert "from knlab.studies.lesson import knows" in code and "res = knows(lm)" in code
    assert json.loads(Path(files[0]).read_text()) == out
    assert out["step"] == 1 and out["model"] == lesson_model() and out["agrees"] is True
    assert "Live" in status
