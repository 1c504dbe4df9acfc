"""Edit files: a session's edits of one model as one safetensors file of a few kilobytes, never the edited
model. A ROME edit is its layer and two vectors (W += v u^T); a KN edit is its neurons, its old and new words
and its rule (the words' embeddings are the model's own, so the file names them, not their vectors). Saving
the edit, not the 0.5 GB of weights it changes, is what EasyEdit's users keep asking for (EasyEdit issues
#163, #255, #363, #429, #640).

The file (``FORMAT``, version ``FORMAT_VERSION``):

- tensors: ``edit.<i>.u`` and ``edit.<i>.v`` (float32, a ROME edit's right and left vectors), or
  ``edit.<i>.neurons`` (int64 [n, 2], a KN edit's (layer, neuron) pairs);
- the header's metadata: ``format``, ``format_version``, ``knlab`` (the canonical JSON below) and ``sha256``
  (over the tensors' names, dtypes, shapes and bytes, then that JSON: a damaged or altered file is refused,
  not half-applied). The JSON: ``model``, ``model_checksum`` (``core.models.weights_checksum`` of the
  weights the edits were made on), ``knlab_version``, and ``edits``, in order, each with its ``method``,
  ``label``, ``prompt``, ``subject``, ``target``, ``settings`` (the edit call's other arguments: the layer
  asked for, mom2, rule, scoring, ...), ``call`` (that call's arguments, so the app can show the Python that
  remakes it; null where unknown), and ROME's ``layer`` or the KN edit's ``old``, ``new``, ``rule``.

An edit is a change of particular weights: on any other weights it means nothing, so a file is refused
unless the loaded model's checksum is the one it names. ``load_edits`` checks everything the file alone can
say; ``check_fits`` what only the model can (shapes, layers, words it can say), before anything is applied.
It sits beside ``edit_report``, whose specs and calls it keeps; the app and the CLI read and write it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from knlab.core.arch import weight_as_out_in
from knlab.core.errors import InputError
from knlab.core.limits import ENV, limits
from knlab.core.models import LM
from knlab.core.tokens import first_token
from knlab.methods.intervene import KN_RULES, KnowledgeNeuronEdit, check_neurons
from knlab.methods.rome import RomeEdit
from knlab.studies.edit_report import EditReport, describe, edit


def knlab_version() -> str:
    """The package's ``__version__``: knlab/__init__.py runs before any module of it, so it is always there
    (and this layer may not import the package's top, which only names the API)."""
    return sys.modules["knlab"].__version__


FORMAT = "knlab-edits"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class EditRecord:
    """One edit as a file keeps it: the spec the worker applies, and what made it (for people and for the
    app's take-away script). ``call``: ``{"args": [...], "kwargs": {...}}`` of ``studies.edit_report.edit``
    (after the model), where the edit was made by that call; None where it is not known."""

    spec: RomeEdit | KnowledgeNeuronEdit
    prompt: str = ""
    subject: str = ""
    target: str = ""
    settings: dict = field(default_factory=dict)
    call: dict | None = None

    @property
    def method(self) -> str:
        return "rome" if isinstance(self.spec, RomeEdit) else "kn"

    @property
    def label(self) -> str:
        return describe(self.spec)


def record(entry: Any) -> EditRecord:
    """An ``EditRecord`` of what a caller holds: a record, an ``EditReport`` (``edit``'s result), a bare spec,
    or a session's entry (a dict with its ``spec`` and the ``call`` that made it: fn, args, kwargs; or the
    ``record`` it was restored from)."""
    if isinstance(entry, EditRecord):
        return entry
    if isinstance(entry, EditReport):
        settings = {"layer": entry.layer, "rule": entry.rule, "scoring": entry.scoring}
        return EditRecord(entry.spec, entry.prompt, entry.subject, entry.new,
                          {k: v for k, v in settings.items() if v is not None})
    if isinstance(entry, (RomeEdit, KnowledgeNeuronEdit)):
        return EditRecord(entry)
    if isinstance(entry, dict) and isinstance(entry.get("record"), EditRecord):  # restored from a file
        return entry["record"]
    if isinstance(entry, dict) and isinstance(entry.get("spec"), (RomeEdit, KnowledgeNeuronEdit)):
        call = entry.get("call")
        if getattr(call, "fn", None) is not edit:
            return EditRecord(entry["spec"])
        return from_call(entry["spec"], call.args, call.kwargs)
    raise InputError(f"cannot save {type(entry).__name__} as an edit (an EditReport, a ROME or KN edit spec, "
                     "or an EditRecord)")


def from_call(spec: RomeEdit | KnowledgeNeuronEdit, args: tuple, kwargs: dict) -> EditRecord:
    """The record of ``spec`` made by ``studies.edit_report.edit(lm, *args, **kwargs)``: its prompt, subject
    and target, and every other argument (defaults included) as its settings."""
    bound = inspect.signature(edit).bind(None, *args, **kwargs)
    bound.apply_defaults()
    named = {k: v for k, v in bound.arguments.items() if k not in ("lm", "progress")}
    prompt, subject, target = (named.pop(k) for k in ("prompt", "subject", "target"))
    named.pop("method")
    return EditRecord(spec, prompt, subject, target, _plain(named),
                      _plain({"args": list(args), "kwargs": dict(kwargs)}))


def _plain(value: Any) -> Any:
    """``value`` as JSON has it (tuples as lists), refused in one line where it has no JSON form."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise InputError(f"an edit's settings must be plain JSON values, not {value!r}") from None


def _canonical(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _digest(tensors: dict[str, torch.Tensor], meta: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(_canonical({"name": name, "dtype": str(t.dtype), "shape": list(t.shape)}))
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(_canonical(meta))
    return h.hexdigest()


def _check_count(n: int) -> None:
    top = limits().edits_per_session
    if n > top:
        raise InputError(f"the file holds {n} edits; a session keeps at most {top} (limit {ENV['edits_per_session']})")


def save_edits(path: str | os.PathLike, model_checksum: str, edits: Iterable[Any], model: str = "") -> Path:
    """Write ``edits`` (in the order they apply: ``record`` says what each may be), made on the weights whose
    ``weights_checksum`` is ``model_checksum`` (``model``: its name, for messages), to ``path`` as one file;
    written whole or not at all. The path written."""
    records = [record(e) for e in edits]
    _check_count(len(records))
    if not isinstance(model_checksum, str) or not model_checksum:
        raise InputError("an edits file needs the checksum of the model its edits were made on")
    tensors: dict[str, torch.Tensor] = {}
    items = []
    for i, r in enumerate(records):
        item = {"method": r.method, "label": r.label, "prompt": r.prompt, "subject": r.subject, "target": r.target,
                "settings": _plain(r.settings), "call": _plain(r.call)}
        if isinstance(r.spec, RomeEdit):
            item["layer"] = int(r.spec.layer)
            tensors[f"edit.{i}.u"] = torch.tensor(r.spec.u, dtype=torch.float32)
            tensors[f"edit.{i}.v"] = torch.tensor(r.spec.v, dtype=torch.float32)
        else:
            item.update(old=r.spec.old, new=r.spec.new, rule=r.spec.rule)
            tensors[f"edit.{i}.neurons"] = torch.tensor([list(n) for n in r.spec.neurons], dtype=torch.int64)
        items.append(item)
    meta = {"model": model, "model_checksum": model_checksum, "knlab_version": knlab_version(), "edits": items}
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "knlab": _canonical(meta).decode(),
              "sha256": _digest(tensors, meta)}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".edits-", suffix=SUFFIX, dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class _Damaged(Exception):
    pass


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
    except Exception:  # noqa: BLE001 - whatever safetensors says of a broken file, the user hears one line
        raise _Damaged("it is not a safetensors file, or it is cut short") from None
    return header, tensors


def load_edits(path: str | os.PathLike, model_checksum: str, model: str = "") -> list[EditRecord]:
    """The edits in the file at ``path``, in order, for the weights whose ``weights_checksum`` is
    ``model_checksum`` (``model``: their name, for messages). One ``InputError`` line, and no edit, for a file
    made on other weights, a damaged or altered file (not safetensors, cut short, a missing or extra part,
    a wrong shape, a value not finite, a digest that does not match), one of another format version, or one
    over the limits (``edit_file_kb``, ``edits_per_session``). ``check_fits`` then checks them on the model."""
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
    except OSError:
        raise InputError(f"no edits file at {path}") from None
    top = limits().edit_file_kb
    if size > top * 1024:
        raise InputError(f"the edits file {name} is {math.ceil(size / 1024)} KiB; the limit is {top} KiB "
                         f"(limit {ENV['edit_file_kb']})")
    try:
        header, tensors = _read(path)
        if header.get("format") != FORMAT:
            raise _Damaged("its header does not say it is a knlab edits file")
        version = header.get("format_version")
        if version != str(FORMAT_VERSION):
            raise InputError(f"the edits file {name} is of format version {version!r}; this knlab ({knlab_version()}) "
                             f"reads version {FORMAT_VERSION}")
        try:
            meta = json.loads(header.get("knlab", ""))
        except ValueError:
            raise _Damaged("its metadata is not JSON") from None
        if not isinstance(meta, dict) or header.get("sha256") != _digest(tensors, meta):
            raise _Damaged("its digest does not match its contents (damaged or altered)")
        made_on = meta.get("model_checksum")
        if made_on != model_checksum:
            raise InputError(f"the edits in {name} were made on {meta.get('model') or 'another model'} (weights "
                             f"{str(made_on)[:12]}), not on {model or 'this model'} (weights {model_checksum[:12]}); "
                             "an edit means something only on the weights it was made on")
        items = meta.get("edits")
        if not isinstance(items, list):
            raise _Damaged("its metadata lists no edits")
        _check_count(len(items))
        records = [_decode(i, item, tensors) for i, item in enumerate(items)]
        used = {k for i, item in enumerate(items) for k in _keys(i, item)}
        if set(tensors) != used:
            raise _Damaged(f"it holds tensors no edit names: {sorted(set(tensors) - used)}")
        return records
    except _Damaged as e:
        raise InputError(f"the edits file {name} is damaged: {e}") from None


def _keys(i: int, item: dict) -> tuple[str, ...]:
    return (f"edit.{i}.u", f"edit.{i}.v") if item.get("method") == "rome" else (f"edit.{i}.neurons",)


def _tensor(tensors: dict, key: str, dtype: torch.dtype, ndim: int) -> torch.Tensor:
    t = tensors.get(key)
    if t is None:
        raise _Damaged(f"{key} is missing")
    if t.dtype != dtype or t.ndim != ndim or t.numel() == 0:
        raise _Damaged(f"{key} is {str(t.dtype).removeprefix('torch.')} of shape {list(t.shape)}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise _Damaged(f"{key} holds values that are not finite")
    return t


def _text(item: dict, key: str, i: int, required: bool = False) -> str:
    value = item.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise _Damaged(f"edit {i + 1}'s {key} is {value!r}")
    return value


def _decode(i: int, item: Any, tensors: dict) -> EditRecord:
    if not isinstance(item, dict):
        raise _Damaged(f"edit {i + 1} is not a record")
    method = item.get("method")
    label = _text(item, "label", i)
    if method == "rome":
        layer = item.get("layer")
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise _Damaged(f"edit {i + 1}'s layer is {layer!r}")
        u = _tensor(tensors, f"edit.{i}.u", torch.float32, 1)
        v = _tensor(tensors, f"edit.{i}.v", torch.float32, 1)
        spec: RomeEdit | KnowledgeNeuronEdit = RomeEdit(layer, tuple(u.tolist()), tuple(v.tolist()), label)
    elif method == "kn":
        neurons = _tensor(tensors, f"edit.{i}.neurons", torch.int64, 2)
        if neurons.shape[1] != 2 or bool((neurons < 0).any()):
            raise _Damaged(f"edit.{i}.neurons is not a list of (layer, neuron) pairs")
        rule = _text(item, "rule", i, required=True)
        if rule not in KN_RULES:
            raise _Damaged(f"edit {i + 1}'s rule is {rule!r}")
        spec = KnowledgeNeuronEdit(tuple((int(l), int(n)) for l, n in neurons.tolist()),
                                   _text(item, "old", i, required=True), _text(item, "new", i, required=True), rule,
                                   label)
    else:
        raise _Damaged(f"edit {i + 1}'s method is {method!r} (rome, kn)")
    settings, call = item.get("settings", {}), item.get("call")
    if not isinstance(settings, dict) or not (call is None or (isinstance(call, dict)
                                                               and isinstance(call.get("args"), list)
                                                               and isinstance(call.get("kwargs"), dict))):
        raise _Damaged(f"edit {i + 1}'s settings are malformed")
    return EditRecord(spec, _text(item, "prompt", i), _text(item, "subject", i), _text(item, "target", i),
                      settings, call)


def check_fits(lm: LM, records: Iterable[EditRecord]) -> None:
    """What only the model can say of a file's edits, checked before any is applied: each ROME edit's layer
    exists and its update has that layer's shape; each KN edit's neurons exist and it can say both words.
    Run where the model is (the worker): it reads shapes, never changes a weight."""
    for k, r in enumerate(records, 1):
        spec = r.spec
        if isinstance(spec, RomeEdit):
            if not 0 <= spec.layer < lm.n_layers:
                raise InputError(f"edit {k} changes layer {spec.layer}; {lm.spec} has layers 0-{lm.n_layers - 1}")
            shape = tuple(weight_as_out_in(lm.model, lm.arch.module("mlp_out", spec.layer)).shape)
            if shape != (len(spec.v), len(spec.u)):
                raise InputError(f"edit {k} is a {len(spec.v)}x{len(spec.u)} update; layer {spec.layer} of "
                                 f"{lm.spec} is {shape[0]}x{shape[1]}")
        else:
            try:
                check_neurons(lm, spec.neurons)
            except InputError as e:
                raise InputError(f"edit {k}: {e}") from None
            if first_token(lm, spec.old) is None or first_token(lm, spec.new) is None:
                raise InputError(f"edit {k}: {spec.old!r} / {spec.new!r} are not words {lm.spec} can say")
