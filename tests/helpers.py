"""What several test modules share and is no fixture: the repository's root, a free port, the benchmark
drivers, and the two ways of running knlab as a user would in this process (a CLI command, a take-away
script). Imported as ``from helpers import ...``: pytest puts tests/ on the path for conftest.py."""

from __future__ import annotations

import importlib
import io
import socket
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import ModuleType, SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def benchmark(name: str) -> ModuleType:
    """A module of benchmarks/ (e.g. the load-test driver bench_load). The straightforward reference
    implementations are not there: they live in tests/reference/ (``from reference.trace import ...``)."""
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    return importlib.import_module(name)


def run_cli_here(*args: str) -> SimpleNamespace:
    """``python -m knlab ARGS`` in this process (the model stays loaded): for the many bad-input cases, where
    a subprocess per case would spend ~10 s importing transformers. Exit paths are the same ``main``."""
    from knlab.app.cli import main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:
            code = e.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_script(source: str, lm) -> object:
    """Run a generated take-away script with ``knlab.load_model`` answering the already loaded model (the
    script's own call is checked by name); the script's ``res``."""
    import knlab
    asked = []
    real = knlab.load_model
    knlab.load_model = lambda spec: asked.append(spec) or lm
    try:
        scope: dict = {}
        exec(compile(source.replace("print(res.to_json())", ""), "<takeaway>", "exec"), scope)
    finally:
        knlab.load_model = real
    assert asked == [lm.spec]
    return scope["res"]


def same_result(live, recorded, tol: float = 1e-4, where: str = "") -> None:
    """An item rerun equals its record: the same keys, strings, booleans and lists; numbers within ``tol``
    (the record ran on one thread, the suite may use two: a sum's last bits can differ)."""
    if isinstance(live, dict):
        assert isinstance(recorded, dict) and set(live) == set(recorded), (where, set(live) ^ set(recorded or {}))
        for k in live:
            same_result(live[k], recorded[k], tol, f"{where}.{k}")
    elif isinstance(live, (list, tuple)):
        assert isinstance(recorded, (list, tuple)) and len(live) == len(recorded), where
        for k, (a, b) in enumerate(zip(live, recorded)):
            same_result(a, b, tol, f"{where}[{k}]")
    elif isinstance(live, float) and not isinstance(recorded, bool) and isinstance(recorded, (int, float)):
        assert abs(live - recorded) <= tol, (where, live, recorded)
    else:
        assert live == recorded, (where, live, recorded)


# Claims whose items come out of ROME's v* optimisation, early-stopped: another CPU's float32 kernels (an AMD AVX2
# machine made most of the record; an Intel AVX-512 one measured 0.9363 against the record's 0.9368 for
# rome-syntax's p(is), 0.8885 against 0.8849 for an edit-layers rewrite score) move their numbers in the third
# decimal. Their numbers are compared to 1e-2; their discrete outcomes (which token, which layer) exactly.
ROME_CLAIMS = {"rome-table-1", "rome-examples", "rome-syntax", "edit-layers"}
ROME_TOLERANCE = 1e-2


def check_reproduces_the_record(claim_id: str, run) -> int:
    """The items a run measured that the committed record (assets/records/) holds too, compared one by one;
    how many were compared (0 where the record has no entry for the claim on this model)."""
    import json

    from knlab.studies.record import load_record
    entry = load_record(run.model)["claims"].get(claim_id)
    if entry is None:
        return 0
    recorded_items = entry.get("items", {})
    common = [k for k in run.items if k in recorded_items]
    tol = ROME_TOLERANCE if claim_id in ROME_CLAIMS else 1e-4
    for k in common:
        same_result(json.loads(json.dumps(run.items[k])), recorded_items[k], tol, where=f"{run.model} {k}")
    return len(common)
