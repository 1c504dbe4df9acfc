"""The Edit tab's parts (knlab/app/tabs/edit.py): an edit report is shown one way, wherever it appears, and
the ROME layer field reads empty as the default."""

from pathlib import Path

import gradio as gr
import pytest
import torch

from knlab.app.tabs.edit import CRITERIA_HEADER, report_views, rome_layer_choice
from knlab.app.takeaway import LEFT_OUT_HEADER, PROBE_HEADER
from knlab.studies.edit_report import edit


def test_report_views_show_the_report(gpt):
    rep = edit(gpt, "rome", "The capital of Canada is", "Canada", "Rome", generate_tokens=2)
    summary, criteria, probes, left_out = report_views(rep)
    assert summary.startswith(f"**ROME** (layer {rep.layer}, ") and "Ottawa → Rome" in summary
    assert f"{rep.after['p_new']:.4f}" in summary and f"{rep.before['p_old']:.4f}" in summary
    assert rep.generation["after"] in summary
    assert all(len(row) == len(CRITERIA_HEADER) for row in criteria)
    assert [row[0] for row in criteria] == list(rep.criteria)
    reliability = next(row for row in criteria if row[0] == "reliability")
    assert reliability[1] == f"{rep.criteria['reliability']:.0%}" and reliability[2] == "1/1"
    assert len(probes) == len(rep.probes) and all(len(row) == len(PROBE_HEADER) for row in probes)
    assert [row[-1] == "✓" for row in probes] == [p.holds for p in rep.probes]
    assert left_out == [[x["criterion"], x["prompt"], x["reason"]] for x in rep.left_out]


def test_left_out_probes_are_shown_with_their_reason(gpt):
    """A probe the model cannot answer before the edit is listed under the probes, with why, not scored."""
    rep = edit(gpt, "rome", "The capital of Canada is", "Canada", "Rome", generate_tokens=2)
    rep.left_out = [{"criterion": "locality", "prompt": "The capital of Slovakia is",
                     "reason": "the model says 'the' before the edit, not 'Bratislava'"}]
    summary, _criteria, probes, left_out = report_views(rep)
    assert left_out == [["locality", "The capital of Slovakia is",
                         "the model says 'the' before the edit, not 'Bratislava'"]]
    assert all(len(row) == len(LEFT_OUT_HEADER) for row in left_out)
    assert "The capital of Slovakia is" not in [row[1] for row in probes]
    assert "1 probe left out, not scored" in summary
    rep.left_out = []
    assert report_views(rep)[3] == [] and "left out" not in report_views(rep)[0]


def test_rome_layer_choice():
    assert rome_layer_choice(None) is None and rome_layer_choice("  ") is None
    assert rome_layer_choice("3") == 3 and rome_layer_choice(4) == 4
    with pytest.raises(gr.Error, match="layer must be a whole number"):
        rome_layer_choice("2.5")


# --- edits as a file: Download my edits / Upload edits -----------------------------------------------------

@pytest.fixture
def lab(gpt):
    """A Context on a worker serving world-gpt, and two sessions' requests, as the Edit tab's handlers get them."""
    from types import SimpleNamespace

    from knlab.app.context import Context
    from knlab.serve.worker import ModelWorker
    worker = ModelWorker(device="cpu", second_copy=False)
    worker.add_model(gpt)
    return Context(worker, None), SimpleNamespace(session_hash="alice"), SimpleNamespace(session_hash="bob")


def _entries(gpt):
    from knlab.app.takeaway import Call
    from knlab.methods.intervene import KnowledgeNeuronEdit
    from knlab.methods.rome import RomeEdit
    out, inner = gpt.model.config.hidden_size, gpt.ffn_width  # a rank-one update of layer 2's shape (made by hand)
    g = torch.Generator().manual_seed(0)
    spec = RomeEdit(2, tuple(torch.randn(inner, generator=g).tolist()), tuple(torch.randn(out, generator=g).tolist()),
                    "ROME L2: The capital of Canada is -> Rome")
    kn = KnowledgeNeuronEdit(((3, 7), (4, 9)), "Paris", "Berlin", "dai", label="KN by hand")
    return [{"model": "world-gpt", "spec": spec, "label": spec.label,
             "call": Call(edit, ("rome", "The capital of Canada is", "Canada", "Rome", 2), {"scoring": "first-token"})},
            {"model": "world-gpt", "spec": kn, "label": kn.label, "call": None}]


def test_downloaded_edits_upload_into_another_session(gpt, lab):
    from knlab.app.tabs.edit import download_edits, upload_edits
    from knlab.methods.predict import predict
    ctx, alice, bob = lab
    entries = _entries(gpt)
    ctx.set_edits(alice, entries)
    path = download_edits(ctx, "world-gpt", alice)
    assert path.endswith("knlab-edits-world-gpt.safetensors")
    history, labels, status = upload_edits(ctx, "world-gpt", path, bob)
    assert labels == [e["label"] for e in entries] and "Restored 2 edits of `world-gpt`" in status
    assert "2. `world-gpt` KN by hand" in history
    restored = ctx.edits(bob)
    assert [e["spec"] for e in restored] == [e["spec"] for e in entries]
    assert restored[0]["call"] == entries[0]["call"] and restored[1]["call"] is None  # the take-away remakes the first
    said = [ctx.serve(predict, "world-gpt", r, "The capital of Canada is", 3).to_json() for r in (alice, bob)]
    base = ctx.serve(predict, "world-gpt", bob, "The capital of Canada is", 3, base=True).to_json()
    assert said[0] == said[1] and said[1]["top"] != base["top"]  # every tab answers with them
    files, code = ctx.takeaway("predict", ctx.serve(predict, "world-gpt", bob, "The capital of Canada is", 3),
                               predict, "world-gpt", bob, "The capital of Canada is", 3)
    assert "edit(lm, 'rome', " in code and "# edit 2 came from an edits file" in code
    # a file downloaded again after an upload keeps what the first said
    from safetensors import safe_open
    again = download_edits(ctx, "world-gpt", bob)
    headers = [safe_open(p, framework="pt").metadata() for p in (path, again)]
    assert headers[0] == headers[1]  # the same metadata and digest: the same tensors


def test_a_foreign_or_damaged_upload_leaves_the_session_as_it_was(gpt, lab, tmp_path):
    from knlab.app.tabs.edit import download_edits, upload_edits
    from knlab.studies.edit_files import save_edits
    ctx, alice, bob = lab
    entries = _entries(gpt)
    ctx.set_edits(alice, entries)
    foreign = save_edits(tmp_path / "foreign.safetensors", "0" * 32, [entries[1]["spec"]], "smollm2-135m")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(Path(download_edits(ctx, "world-gpt", alice)).read_bytes()[:-9])
    for path, needle in ((foreign, "made on smollm2-135m"), (damaged, "damaged"), (None, "no edits file")):
        with pytest.raises(gr.Error, match=needle) as e:
            upload_edits(ctx, "world-gpt", str(path) if path else None, alice)
        assert "\n" not in str(e.value)
        assert ctx.edits(alice) == entries
    with pytest.raises(gr.Error, match="no edits of world-gpt to download"):
        download_edits(ctx, "world-gpt", bob)


def test_the_edit_files_are_http_endpoints(gpt):
    from knlab.app.ui import build_app
    from knlab.serve.worker import ModelWorker
    worker = ModelWorker(device="cpu", second_copy=False)
    worker.add_model(gpt)
    names = {d.get("api_name") for d in build_app(worker).config["dependencies"]}
    assert {"download_edits", "upload_edits"} <= names
