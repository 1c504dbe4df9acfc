"""Edit files (knlab/studies/edit_files.py): a saved edit comes back as the same edit, bit for bit, only on the
weights it was made on; a damaged, altered or foreign file is one clear line and no edit."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from knlab.core.errors import InputError
from knlab.core.models import weights_checksum
from knlab.core.nethook import get_parameter
from knlab.core.specs import applied
from knlab.methods.intervene import KnowledgeNeuronEdit
from knlab.methods.rome import params_for, rome
from knlab.studies import edit_files as EF
from knlab.studies.edit_files import EditRecord, check_fits, from_call, load_edits, save_edits

PROMPT = "The capital of Canada is"


@pytest.fixture(scope="module")
def checksum(gpt):
    return weights_checksum(gpt.model)


@pytest.fixture(scope="module")
def rome_spec(gpt):
    return rome(gpt, PROMPT, "Canada", "Rome", 2, params=params_for(gpt, mom2=False)).edit


@pytest.fixture(scope="module")
def kn_spec():
    return KnowledgeNeuronEdit(((2, 5), (3, 17), (4, 100)), "Ottawa", "Rome", "ekn", label="KN by hand")


@pytest.fixture
def saved(tmp_path, checksum, rome_spec, kn_spec):
    rome_rec = from_call(rome_spec, ("rome", PROMPT, "Canada", "Rome", 2), {"scoring": "first-token"})
    return save_edits(tmp_path / "edits.safetensors", checksum, [rome_rec, kn_spec], "world-gpt")


def _weights_with(lm, specs) -> dict[str, torch.Tensor]:
    names = sorted({n for s in specs for n in s.touched_parameters(lm)})
    with applied(lm, specs):
        return {n: get_parameter(lm.model, n).detach().clone() for n in names}


def test_a_saved_edit_comes_back_bit_for_bit(gpt, saved, checksum, rome_spec, kn_spec):
    records = load_edits(saved, checksum, "world-gpt")
    assert [r.spec for r in records] == [rome_spec, kn_spec]  # the same dataclasses: every float the same
    check_fits(gpt, records)
    for original, loaded in zip([rome_spec, kn_spec], records):
        want, got = _weights_with(gpt, [original]), _weights_with(gpt, [loaded.spec])
        assert want.keys() == got.keys() and all(torch.equal(want[n], got[n]) for n in want)
    both_want, both_got = _weights_with(gpt, [rome_spec, kn_spec]), _weights_with(gpt, [r.spec for r in records])
    assert all(torch.equal(both_want[n], both_got[n]) for n in both_want)
    rome_rec, kn_rec = records
    assert (rome_rec.method, rome_rec.prompt, rome_rec.subject, rome_rec.target) == ("rome", PROMPT, "Canada", "Rome")
    assert rome_rec.settings["layer"] == 2 and rome_rec.settings["scoring"] == "first-token"
    assert rome_rec.settings["mom2"] is True and rome_rec.settings["rule"] == "dai"  # edit()'s defaults, said
    assert rome_rec.call == {"args": ["rome", PROMPT, "Canada", "Rome", 2], "kwargs": {"scoring": "first-token"}}
    assert kn_rec.method == "kn" and kn_rec.label == "KN by hand" and kn_rec.call is None


def test_the_file_says_what_it_holds(saved, checksum):
    with safe_open(str(saved), framework="pt") as f:
        header, keys = f.metadata(), set(f.keys())
    assert keys == {"edit.0.u", "edit.0.v", "edit.1.neurons"}
    assert header["format"] == "knlab-edits" and header["format_version"] == "1" and len(header["sha256"]) == 64
    meta = json.loads(header["knlab"])
    assert meta["model"] == "world-gpt" and meta["model_checksum"] == checksum and meta["knlab_version"]
    assert [e["method"] for e in meta["edits"]] == ["rome", "kn"] and meta["edits"][0]["layer"] == 2
    assert meta["edits"][1]["old"] == "Ottawa" and meta["edits"][1]["rule"] == "ekn"
    assert saved.stat().st_size < 8 * 1024  # the edits, not the model


def test_a_file_made_on_other_weights_is_refused(saved, checksum):
    with pytest.raises(InputError, match=r"made on world-gpt .* not on tiny-gpt2 .*only on the weights it was made on"):
        load_edits(saved, "0" * 32, "tiny-gpt2")


def test_an_edit_that_does_not_fit_the_model_is_refused_before_it_is_applied(gpt, tmp_path, checksum):
    """A file whose digest holds (anyone can compute one) but whose update is another model's shape."""
    wrong = KnowledgeNeuronEdit(((99, 1),), "Ottawa", "Rome")
    from knlab.methods.rome import RomeEdit
    short = RomeEdit(1, (0.5,) * 7, (0.25,) * 5)
    for spec, needle in ((short, r"edit 1 is a 5x7 update; layer 1 of world-gpt is"), (wrong, "edit 1: neuron 99:1")):
        path = save_edits(tmp_path / "e.safetensors", checksum, [spec], "world-gpt")
        with pytest.raises(InputError, match=needle):
            check_fits(gpt, load_edits(path, checksum))


def _rewrite(src, dst, tensors=None, header=None, redigest=False):
    with safe_open(str(src), framework="pt") as f:
        old_header, old = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    tensors = tensors(old) if tensors else old
    header = {**old_header, **(header or {})}
    if redigest:
        header["sha256"] = EF._digest(tensors, json.loads(header["knlab"]))
    save_file(tensors, str(dst), metadata=header)
    return dst


def _flip_last_byte(src, dst):
    data = bytearray(src.read_bytes())
    data[-1] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


def _bytes(dst, data):
    dst.write_bytes(data)
    return dst


def _scaled_u(t):
    t = dict(t)
    t["edit.0.u"] = t["edit.0.u"] * 1.0001
    return t


def _with_nan(t):
    t = dict(t)
    t["edit.0.v"] = t["edit.0.v"].clone()
    t["edit.0.v"][3] = float("nan")
    return t


BAD = {
    "a flipped byte": (lambda s, d: _flip_last_byte(s, d), "digest does not match"),
    "truncated": (lambda s, d: _bytes(d, s.read_bytes()[:-40]), "not a safetensors file, or it is cut short"),
    "not safetensors": (lambda s, d: _bytes(d, b"PK\x03\x04 a zip, say" * 50), "not a safetensors file"),
    "empty": (lambda s, d: _bytes(d, b""), "not a safetensors file"),
    "a value edited, digest kept": (lambda s, d: _rewrite(s, d, _scaled_u), "digest does not match"),
    "the label edited, digest kept": (lambda s, d: _rewrite(s, d, header={"knlab": _relabelled(s)}),
                                      "digest does not match"),
    "an unknown format version": (lambda s, d: _rewrite(s, d, header={"format_version": "2"}),
                                  r"format version '2'; this knlab .* reads version 1"),
    "another format": (lambda s, d: _rewrite(s, d, header={"format": "something-else"}), "not say it is a knlab"),
    "a missing tensor": (lambda s, d: _rewrite(s, d, lambda t: {k: v for k, v in t.items() if k != "edit.0.v"},
                                               redigest=True), "edit.0.v is missing"),
    "an extra tensor": (lambda s, d: _rewrite(s, d, lambda t: {**t, "edit.9.u": torch.ones(3)}, redigest=True),
                        "tensors no edit names"),
    "a wrong shape": (lambda s, d: _rewrite(s, d, lambda t: {**t, "edit.1.neurons": torch.zeros(2, 3, dtype=torch.int64)},
                                            redigest=True), "not a list of \\(layer, neuron\\) pairs"),
    "a wrong dtype": (lambda s, d: _rewrite(s, d, lambda t: {**t, "edit.0.u": t["edit.0.u"].double()}, redigest=True),
                      "edit.0.u is float64"),
    "a value not finite": (lambda s, d: _rewrite(s, d, _with_nan, redigest=True), "not finite"),
}


def _relabelled(src):
    meta = json.loads(safe_open(str(src), framework="pt").metadata()["knlab"])
    meta["edits"][0]["label"] = "something else"
    return EF._canonical(meta).decode()


@pytest.mark.parametrize("how", list(BAD))
def test_a_damaged_or_altered_file_is_one_line_and_no_edit(how, saved, checksum, tmp_path):
    damage, needle = BAD[how]
    bad = damage(saved, tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match=needle) as e:
        load_edits(bad, checksum, "world-gpt")
    assert "\n" not in str(e.value) and str(e.value).startswith("the edits file bad.safetensors")


def test_uploads_are_bounded_in_size_and_count(saved, checksum, monkeypatch, rome_spec, tmp_path):
    monkeypatch.setenv("KNLAB_HOSTED", "1")
    for k in ("KNLAB_MAX_EDIT_FILE_KB", "KNLAB_MAX_EDITS_PER_SESSION"):
        monkeypatch.delenv(k, raising=False)
    assert len(load_edits(saved, checksum)) == 2  # within the hosted defaults
    monkeypatch.setenv("KNLAB_MAX_EDIT_FILE_KB", "2")
    with pytest.raises(InputError, match=r"KiB; the limit is 2 KiB \(limit KNLAB_MAX_EDIT_FILE_KB\)"):
        load_edits(saved, checksum)
    monkeypatch.delenv("KNLAB_MAX_EDIT_FILE_KB")
    monkeypatch.setenv("KNLAB_MAX_EDITS_PER_SESSION", "1")
    with pytest.raises(InputError, match=r"holds 2 edits; a session keeps at most 1 \(limit KNLAB_MAX_EDITS_PER_SESSION\)"):
        load_edits(saved, checksum)
    with pytest.raises(InputError, match="KNLAB_MAX_EDITS_PER_SESSION"):  # nor is one written that cannot be loaded
        save_edits(tmp_path / "two.safetensors", checksum, [rome_spec, rome_spec])


def test_what_cannot_be_saved_is_one_line(tmp_path, checksum):
    with pytest.raises(InputError, match="cannot save str as an edit"):
        save_edits(tmp_path / "x.safetensors", checksum, ["an edit"])
    assert not (tmp_path / "x.safetensors").exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="no edits file at"):
        load_edits(tmp_path / "nothing.safetensors", checksum)


def test_an_edit_report_saves_with_what_made_it(gpt, tmp_path, checksum):
    from knlab.studies.edit_report import edit
    rep = edit(gpt, "kn", PROMPT, "Canada", "Rome", neurons=[(3, 7), (4, 9)], rule="ekn", generate_tokens=0,
               neighbours=1)
    (rec,) = load_edits(save_edits(tmp_path / "r.safetensors", checksum, [rep]), checksum)
    assert rec == EditRecord(rep.spec, PROMPT, "Canada", "Rome", {"rule": "ekn", "scoring": "first-token"})
