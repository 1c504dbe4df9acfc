import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, run_cli_here


def run(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "knlab", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow  # `python -m knlab` in a fresh process (~10 s); the other CLI tests call it in-process
def test_predict_json():
    r = run("predict", "The capital of Canada is", "--top", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "world-gpt" and out["prompt"] == "The capital of Canada is"
    assert [t["token"] for t in out["top"]][0] == "Ottawa" and len(out["top"]) == 3
    assert all(0 <= t["prob"] <= 1 for t in out["top"])


def test_predict_masked_model_text_output():
    r = run_cli_here("predict", "The capital of Canada is [MASK] .", "--model", "world-bert")
    assert r.returncode == 0, r.stderr
    assert "Ottawa" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["predict", ""], "empty"),
    (["predict", "The capital of Canada is", "--model", "world-bert"], "[MASK]"),
    (["predict", "hello", "--model", "no-such-org/no-such-model"], "world-gpt"),
    (["predict", "hello", "--top", "0"], "top"),
    (["predict"], "prompt"),
])
def test_bad_input_is_one_clear_line(args, needle):
    r = run_cli_here(*args)
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0]


def test_trace_json_contract():
    r = run_cli_here("trace", "The capital of Canada is", "--subject", "Canada", "--samples", "2", "--window", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["answer"] == "Ottawa" and out["subject_range"] == [4, 5]
    assert out["clean"] > out["corrupted"]
    assert len(out["hidden"]) == len(out["tokens"]) == len(out["mlp"]) == len(out["attn"])


def test_trace_relation_summary():
    r = run_cli_here("trace", "--relation", "P36", "--limit", "2", "--samples", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 2 and "last subject token" in out["kinds"]["hidden"]


@pytest.mark.parametrize("args,needle", [
    (["trace", "The capital of Canada is", "--subject", "France"], "not in the prompt"),
    (["trace", "The capital of Canada is"], "--subject"),
    (["trace", "--relation", "P999"], "unknown relation"),
    (["trace", "The capital of Canada is", "--subject", "Canada", "--noise", "loud"], "noise"),
])
def test_trace_bad_input(args, needle):
    r = run_cli_here(*args)
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_attribute_json_contract(tmp_path):
    out_npy = tmp_path / "map.npy"
    r = run_cli_here("attribute", "The capital of Canada is", "--steps", "4", "--save", str(out_npy), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["target"] == "Ottawa" and out["model"] == "world-gpt"
    assert len(out["top_neurons"]) == 20 and set(out["top_neurons"][0]) == {"layer", "neuron", "score"}
    import numpy as np
    assert np.load(out_npy).shape == (out["layers"], out["width"])


def test_neurons_json_contract():
    r = run_cli_here("neurons", "--target", "Ottawa", "--steps", "4", "The capital of Canada is",
            "The capital city of Canada is", "Canada has its capital in", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n_prompts"] == 3 and 0 <= out["tau"] <= 1 and all(len(n) == 2 for n in out["neurons"])


def test_attribute_bad_target():
    r = run_cli_here("attribute", "The capital of Canada is", "--target", "Zzyzxqv")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "Zzyzxqv" in r.stderr


def test_intervene_json_contract():
    r = run_cli_here("intervene", "The capital of France is", "--neurons", "5:1", "4:7", "--mode", "suppress",
            "--target", "Paris", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"before", "after"} and 0 <= out["after"]["target_prob"] <= 1
    assert out["before"]["top"][0]["token"] == "Paris"


def test_intervene_out_of_range():
    r = run_cli_here("intervene", "The capital of France is", "--neurons", "99:1")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "out of range" in r.stderr


def test_paradigm_list_and_json():
    r = run_cli_here("paradigm", "--list", "--json")
    assert r.returncode == 0 and "determiner_noun_agreement_2" in json.loads(r.stdout)
    r = run_cli_here("paradigm", "determiner_noun_agreement_2", "--prompts", "6", "--steps", "4", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"groups", "kn", "tau", "r2_1", "overturned"} and [g["target"] for g in out["groups"]] == ["pl", "sg"]
    assert len(out["groups"][0]["tokens"]) == 24
    assert set(out["groups"][0]["tokens"][0]) >= {"token", "pre", "post", "rel_change", "p_value"}
    r = run_cli_here("paradigm", "nope")
    assert r.returncode != 0 and "unknown paradigm" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_examples_refuses_a_model_that_cannot_load_in_one_line():
    r = run_cli_here("examples", "--model", "nope")
    assert r.returncode != 0 and "cannot load model 'nope'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_neurons_for_a_fact_and_a_relation():
    r = run_cli_here("neurons", "--fact", "P36:Canada", "--steps", "3", "--model", "world-bert", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_prompts"] == 4
    r = run_cli_here("neurons", "--relation", "P101", "--limit", "2", "--steps", "3", "--model", "world-bert", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 2 and set(out) >= {"kn", "tau", "r2_1"}


def test_edit_json_contract():
    r = run_cli_here("edit", "rome", "The capital of Canada is", "--subject", "Canada", "--target", "Rome", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["method"] == "rome" and isinstance(out["layer"], int) and out["seconds"] > 0
    assert out["before"]["p_old"] > out["before"]["p_new"] and out["after"]["p_new"] > out["after"]["p_old"]
    assert set(out["criteria"]) >= {"reliability", "generality", "locality", "symmetry", "synonymy"}
    assert out["criteria"]["reliability"] == 1.0 and out["criteria"]["synonymy"] is None
    assert out["criteria"]["symmetry"] is not None  # P36 has a reverse relation
    crit = {p["criterion"] for p in out["probes"]}
    assert {"reliability", "generality", "locality", "symmetry"} <= crit
    assert all({"criterion", "prompt", "expected", "p_before", "p_after"} <= set(p) for p in out["probes"])


def test_evaluate_json_contract():
    r = run_cli_here("evaluate", "--method", "rome", "--relation", "P101", "--limit", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["method"] == "rome" and out["relation"] == "P101" and out["n"] == 2
    assert {"reliability", "generality", "locality", "synonymy"} <= set(out) and "symmetry" not in out
    assert all(0 <= out[c] <= 1 for c in ("reliability", "generality", "locality", "synonymy"))


@pytest.mark.parametrize("args,needle", [
    (["edit", "rome", "The capital of Canada is", "--subject", "Canda", "--target", "Rome"], "not in the prompt"),
    (["edit", "rome", "The capital of Canada is", "--subject", "Canada", "--target", ""], "empty"),
    (["edit", "rome", "The capital of Canada is", "--subject", "Canada", "--target", "Ottawa"], "already answers"),
    (["edit", "rome", "The capital of Canada is", "--subject", "Canada", "--target", "Rome", "--layer", "6"], "layer"),
    (["edit", "kn", "The capital of Canada is", "--subject", "Canada", "--target", "Rome", "--layer", "2"], "layer"),
    (["edit", "rome", "The capital of Canada is [MASK] .", "--subject", "Canada", "--target", "Rome",
      "--model", "world-bert"], "masked"),
    (["evaluate", "--relation", "P999"], "unknown relation"),
    (["evaluate", "--relation", "P36", "--limit", "0"], "limit"),
])
def test_edit_bad_input(args, needle):
    r = run_cli_here(*args)
    assert r.returncode != 0 and needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_cli_names_the_methods_parameters_as_the_methods_do():
    """The CLI names sites, KN rules and scorings without importing torch; they are the methods' own."""
    from knlab.app import cli
    from knlab.core.arch import SITES
    from knlab.methods.intervene import KN_RULES
    from knlab.studies.probes import SCORINGS
    assert cli.KN_SITES == SITES and cli.KN_RULES == tuple(KN_RULES) and cli.SCORINGS == SCORINGS


def test_kn_edit_takes_the_rule_and_the_scoring():
    """``knlab edit kn ... --rule ekn --scoring token-accuracy``: EKN's rule, criteria as token accuracies."""
    r = run_cli_here("edit", "kn", "The capital of Canada is", "--subject", "Canada", "--target", "Rome",
                     "--rule", "ekn", "--scoring", "token-accuracy", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rule"] == "ekn" and out["scoring"] == "token-accuracy" and out["neurons"]
    acc = [p["accuracy"] for p in out["probes"] if p["criterion"] == "reliability"]
    assert acc and out["criteria"]["reliability"] == sum(acc) / len(acc)
    r = run_cli_here("edit", "rome", "The capital of Canada is", "--subject", "Canada", "--target", "Rome",
                     "--rule", "ekn")
    assert r.returncode != 0 and "ROME has none" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_edit_without_the_covariance():
    r = run_cli_here("edit", "rome", "The capital of Canada is", "--subject", "Canada", "--target", "Rome", "--no-mom2",
                 "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["criteria"]["reliability"] == 1.0 and out["timing"]["mom2"] < 0.05  # no covariance used


def test_a_reader_that_stops_reading_is_no_error(monkeypatch):
    """`python -m knlab paradigm ... --json | head -c 100`: the closed pipe ends the command quietly."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from knlab.app import cli

    class ClosedPipe(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    redirected = []
    monkeypatch.setattr(cli.os, "dup2", lambda fd, to: redirected.append(to))
    err = io.StringIO()
    with redirect_stdout(ClosedPipe()), redirect_stderr(err):
        code = cli.main(["paradigm", "--list"])
    assert code == 0 and err.getvalue() == ""


def test_paper_list_run_and_a_model_that_does_not_fit():
    r = run_cli_here("paper", "overturn", "--size", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["claim"] == "overturn" and out["runs"][0]["model"] == "world-bert" and out["runs"][0]["rows"]
    r = run_cli_here("paper", "rome-table-1", "--model", "world-bert")
    assert r.returncode == 2 and "runs on smollm2-135m, world-gpt" in r.stderr
    r = run_cli_here("paper")
    assert r.returncode == 2 and "--all" in r.stderr
    r = run_cli_here("paper", "--all", "--jobs", "0")
    assert r.returncode == 2 and "--jobs must be a whole number from 1 to 16" in r.stderr


@pytest.mark.slow  # two spawned processes
def test_paper_all_side_by_side_reports_a_claim_that_cannot_run_as_one_line(monkeypatch):
    """``paper --all --jobs 2``: the claims run in processes of their own; one that cannot run on the model
    asked for fails there, and the command still ends with its one clear line (status 2), not a traceback.
    (The side-by-side run itself: tests/studies/test_paper.py's real-model test.)"""
    import knlab.studies.paper as paper
    monkeypatch.setattr(paper, "CLAIMS", [paper.claim("rome-table-1"), paper.claim("overturn")])
    r = run_cli_here("paper", "--all", "--size", "2", "--jobs", "2", "--model", "world-bert", "--json")
    assert r.returncode == 2 and "rome-table-1 runs on smollm2-135m, world-gpt" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""

# The organisms' commands: the corpus, training and the model cards share the one command line.

def test_corpus_writes_the_world_documents_deterministically(tmp_path):
    from knlab.world.training_corpus import build_documents
    r = run_cli_here("corpus", "--out", str(tmp_path / "a.jsonl"))
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()
    assert r.stdout.startswith(f"wrote {len(lines)} documents to ")
    assert [json.loads(l)["text"] for l in lines] == [d.text for d in build_documents(0)]
    assert run_cli_here("corpus", "--out", str(tmp_path / "b.jsonl")).returncode == 0
    assert (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()


@pytest.mark.parametrize("args, message", [
    (("train", "smollm2-135m"), "invalid choice"),  # only the organisms are trained here
    (("train", "world-gpt", "--steps", "0"), "--steps must be at least 1"),
    (("card", "world-gpt", "--size", "3"), "--size and --only are for a real model"),
    (("card", "smollm2-135m", "--weights", "assets/models/world-gpt"), "--weights is for an organism"),
])
def test_organism_commands_refuse_bad_input_in_one_line(args, message):
    r = run_cli_here(*args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # trains and measures: ./run_tests.sh --fast leaves it out
def test_train_then_card_writes_a_loadable_organism_and_its_card(tmp_path):
    """Two steps of world-bert's training into a folder of its own, then its card measured there: the
    shipped weights are not touched, and the card names the command that rewrites it."""
    from knlab.core.models import SHIPPED, load_model, weights_checksum
    shipped = weights_checksum(load_model("world-bert", device="cpu").model)
    out = tmp_path / "world-bert"
    r = run_cli_here("train", "world-bert", "--steps", "2", "--out", str(out), "--no-card")
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").exists() and not (out / "README.md").exists()
    lm = load_model(str(out), device="cpu")
    assert lm.model.config.vocab_size == load_model("world-bert", device="cpu").model.config.vocab_size
    r = run_cli_here("card", "world-bert", "--weights", str(out))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"] == "python -m knlab card world-bert"
    assert "python -m knlab train world-bert" in (out / "README.md").read_text()
    assert weights_checksum(load_model("world-bert", device="cpu").model) == shipped
    assert (SHIPPED["world-bert"] / "metrics.json").read_text() != (out / "metrics.json").read_text()


def test_paper_record_refuses_what_it_does_not_take_in_one_line():
    """The record runs each claim at its record size: a --size or --all with it is a mistake said in one line,
    and --resume means nothing without --record."""
    for args, needle in ((("--record", "--size", "3"), "no --size, no --all"), (("--resume", "overturn"),
                         "--resume goes with --record"), (("--record", "no-such-claim"), "unknown claim")):
        r = run_cli_here("paper", *args)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_knockout_json_contract():
    r = run_cli_here("knockout", "The capital of Canada is [MASK] .", "--subject", "Canada", "--model", "world-bert",
                     "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["answer"] == "Ottawa" and set(out["change"]) == {"subject", "non-subject", "last"}
    assert all(len(v) == 6 for v in out["change"].values()) and 0 < out["clean"] <= 1
    r = run_cli_here("knockout", "The capital of Canada is", "--subject", "Canada", "--window", "99")
    assert r.returncode == 2 and "window" in r.stderr and "Traceback" not in r.stderr


def test_sweep_without_the_covariance_is_edit_rome_without_it():
    """The Lesson's step 7 reruns as `sweep --no-mom2`: each row is `edit rome --layer L --no-mom2`'s."""
    prompt, fact = "The capital of Canada is", ("--subject", "Canada", "--target", "Rome")
    r = run_cli_here("sweep", prompt, *fact, "--layers", "0,2", "--no-mom2", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert [row["layer"] for row in rows] == [0, 2]
    for row in rows:
        e = run_cli_here("edit", "rome", prompt, *fact, "--layer", str(row["layer"]), "--no-mom2", "--json")
        assert e.returncode == 0, e.stderr
        assert abs(json.loads(e.stdout)["after"]["p_new"] - row["p_new_after"]) < 1e-5


def test_trace_replacement_and_logit_difference():
    r = run_cli_here("trace", "The capital of Canada is", "--subject", "Canada", "--window", "1", "--corruption",
                     "replace", "--replacement", "Germany", "--metric", "logit_diff", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["corruption"] == "replace" and out["replacement"] == "Germany" and out["foil"] == "Berlin"
    assert out["clean"] > 0 > out["corrupted"] and out["samples"] == 1
    r = run_cli_here("trace", "The capital of Canada is", "--subject", "Canada", "--corruption", "replace",
                     "--replacement", "United States")
    assert r.returncode == 2 and "same token length" in r.stderr and "Traceback" not in r.stderr


def test_edit_save_then_edits_round_trip(tmp_path):
    """edit --save writes the edit; --edits runs any command with it; a second --save carries the file on."""
    from knlab.studies.edit_files import load_edits
    from knlab.serve.worker import default_worker
    saved = tmp_path / "mine.safetensors"
    r = run_cli_here("edit", "rome", "The capital of Canada is", "--subject", "Canada", "--target", "Rome", "--no-mom2",
                     "--save", str(saved), "--json")
    assert r.returncode == 0, r.stderr
    assert f"saved 1 edit of world-gpt to {saved}" in r.stderr
    spec = json.loads(r.stdout)
    base = json.loads(run_cli_here("predict", "The capital of Canada is", "--json").stdout)
    edited = run_cli_here("predict", "The capital of Canada is", "--edits", str(saved), "--json")
    assert edited.returncode == 0, edited.stderr
    assert json.loads(edited.stdout)["top"] != base["top"]
    assert json.loads(edited.stdout)["top"][0]["token"].strip() == spec["new"] == "Rome"
    r = run_cli_here("edit", "rome", "The capital of France is", "--subject", "France", "--target", "Berlin",
                     "--no-mom2", "--save", str(saved), "--json")
    assert r.returncode == 0, r.stderr
    records = load_edits(saved, default_worker().base_checksums["world-gpt"])
    assert [x.prompt for x in records] == ["The capital of Canada is", "The capital of France is"]
    assert records[0].settings["mom2"] is False and records[1].target == "Berlin"
    assert "saved 2 edits" in r.stderr


def test_an_edits_file_of_another_model_is_one_line(tmp_path):
    from knlab.methods.rome import RomeEdit
    from knlab.studies.edit_files import save_edits
    foreign = save_edits(tmp_path / "f.safetensors", "0" * 32, [RomeEdit(1, (1.0,), (1.0,))], "other-model")
    r = run_cli_here("predict", "The capital of Canada is", "--edits", str(foreign))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "made on other-model" in r.stderr
    r = run_cli_here("trace", "The capital of Canada is", "--subject", "Canada", "--edits", str(tmp_path / "no"))
    assert r.returncode == 2 and "no edits file at" in r.stderr
