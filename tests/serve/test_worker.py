import contextlib
import copy
import threading

import pytest

from knlab.core.errors import RequestDropped
from knlab.core.models import weights_checksum
from knlab.core.nethook import Trace, get_parameter
from knlab.methods.predict import predict
from knlab.serve.worker import INTERACTIVE, LANES, LONG, ModelWorker, WeightsCorrupted


class AddToWeight:
    """A weight edit: scales one MLP output weight by (1 + delta) in place (a stand-in for ROME's
    in-place update; a uniform addition would vanish in the next LayerNorm)."""

    def __init__(self, layer: int, delta: float, fail: bool = False):
        self.layer, self.delta, self.fail = layer, delta, fail

    def name(self, lm):
        return f"{lm.arch.module('mlp_out', self.layer)}.weight"

    def touched_parameters(self, lm):
        return [self.name(lm)]

    @contextlib.contextmanager
    def apply(self, lm):
        get_parameter(lm.model, self.name(lm)).mul_(1 + self.delta)
        if self.fail:
            raise RuntimeError("edit failed half way")
        yield


class SilenceLastLayerMLP:
    """A hook edit: weights untouched."""

    def touched_parameters(self, lm):
        return []

    @contextlib.contextmanager
    def apply(self, lm):
        with Trace(lm.model, lm.arch.module("mlp", lm.n_layers - 1), retain_output=False,
                   edit_output=lambda x, _: x * 0):
            yield


@pytest.fixture()
def worker(gpt):
    w = ModelWorker(device="cpu")
    w.add_model(gpt)
    return w


def top(lm, prompt):
    return predict(lm, prompt, 1).top_probs[0]


def test_edits_apply_only_during_the_request_and_weights_come_back(worker, gpt):
    base_sum = weights_checksum(gpt.model)
    base = worker.run("world-gpt", [], top, "The capital of Canada is")
    edited = worker.run("world-gpt", [AddToWeight(1, 0.5)], top, "The capital of Canada is")
    assert edited != pytest.approx(base, abs=1e-6)
    assert weights_checksum(gpt.model) == base_sum
    assert worker.run("world-gpt", [], top, "The capital of Canada is") == base


def test_hook_edits_leave_no_hook(worker, gpt):
    base = worker.run("world-gpt", [], top, "The capital of Canada is")
    assert worker.run("world-gpt", [SilenceLastLayerMLP()], top, "The capital of Canada is") != base
    assert worker.run("world-gpt", [], top, "The capital of Canada is") == base


def test_failing_edit_or_request_still_restores(worker, gpt):
    base_sum = weights_checksum(gpt.model)
    with pytest.raises(RuntimeError, match="half way"):
        worker.run("world-gpt", [AddToWeight(0, 1.0, fail=True)], top, "The capital of Canada is")
    with pytest.raises(ZeroDivisionError):
        worker.run("world-gpt", [AddToWeight(0, 1.0)], lambda lm: 1 / 0)
    assert weights_checksum(gpt.model) == base_sum


def test_concurrent_users_see_only_their_own_edits(worker, gpt):
    base_sum = weights_checksum(gpt.model)
    expected = {d: worker.run("world-gpt", [AddToWeight(2, d)] if d else [], top, "The capital of France is")
                for d in (0.0, 0.3, -0.3)}
    errors = []

    def user(d):
        for _ in range(5):
            got = worker.run("world-gpt", [AddToWeight(2, d)] if d else [], top, "The capital of France is")
            if got != expected[d]:
                errors.append((d, got, expected[d]))

    threads = [threading.Thread(target=user, args=(d,)) for d in expected for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert weights_checksum(gpt.model) == base_sum


def test_models_lanes_preview_and_status_never_wait_for_a_long_job(worker, bert):
    worker.add_model(bert)
    started, release = threading.Event(), threading.Event()

    def long_job(lm):
        started.set()
        assert release.wait(30)
        return "long"

    holder = threading.Thread(target=worker.run, args=("world-gpt", [AddToWeight(1, 0.5)], long_job))
    holder.start()
    try:
        assert started.wait(30)
        done: dict = {}
        quick = [threading.Thread(target=lambda: done.__setitem__("lane", worker.run(
                     "world-gpt", [], top, "The capital of Canada is", lane=INTERACTIVE))),
                 threading.Thread(target=lambda: done.__setitem__("model", worker.run(
                     "world-bert", [], top, "The capital of Canada is [MASK] .")))]
        for t in quick:
            t.start()
        for t in quick:
            t.join(30)
        assert set(done) == {"lane", "model"}  # both answered while world-gpt's long lane was held
        with worker.tokenizing("world-gpt") as lm:
            assert lm.model is None and lm.tokenizer("The capital")["input_ids"]
        st = worker.status()["models"]["world-gpt"]
        assert st["lanes"]["long"]["busy"] and not st["lanes"]["interactive"]["busy"] and st["unchanged"]
    finally:
        release.set()
        holder.join(30)
    assert not worker.status()["models"]["world-gpt"]["lanes"]["long"]["busy"]


def test_two_models_two_lanes_hammered_give_each_request_its_own_answer(worker, gpt, bert):
    worker.add_model(bert)
    prompts = {"world-gpt": "The capital of France is", "world-bert": "The capital of France is [MASK] ."}
    cases = [(m, lane, d) for m in prompts for lane in LANES for d in (0.0, 0.4, -0.4)]
    expected = {c: worker.run(c[0], [AddToWeight(2, c[2])] if c[2] else [], top, prompts[c[0]], lane=c[1])
                for c in cases}
    assert expected[("world-gpt", LONG, 0.4)] != pytest.approx(expected[("world-gpt", LONG, 0.0)], abs=1e-6)
    errors = []

    def user(case):
        m, lane, d = case
        for _ in range(4):
            got = worker.run(m, [AddToWeight(2, d)] if d else [], top, prompts[m], lane=lane)
            if got != expected[case]:
                errors.append((case, got, expected[case]))

    threads = [threading.Thread(target=user, args=(c,)) for c in cases for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    st = worker.status()
    for m in prompts:
        assert st["models"][m]["unchanged"]
        assert all(lane["checksum"] == worker.base_checksums[m] and lane["verified_after_request"] == lane["requests"]
                   for lane in st["models"][m]["lanes"].values())
        assert {name: lane["requests"] for name, lane in st["models"][m]["lanes"].items()} == {
            INTERACTIVE: 3 + 3 * 2 * 4, LONG: 3 + 3 * 2 * 4}


def test_a_request_nobody_waits_for_is_dropped_before_it_runs(worker):
    ran = []
    with pytest.raises(RequestDropped):
        worker.run("world-gpt", [], lambda lm: ran.append(1), lane=INTERACTIVE, wanted=lambda: False)
    assert ran == [] and worker.status()["models"]["world-gpt"]["lanes"][INTERACTIVE]["requests"] == 0


def test_a_long_job_that_changes_undeclared_weights_is_caught_and_the_copy_reloaded(gpt):
    w = ModelWorker(device="cpu")
    w.add_model(copy.deepcopy(gpt))  # this copy gets corrupted: never the shared fixture

    def scribble(lm):
        get_parameter(lm.model, f"{lm.arch.module('mlp_out', 0)}.weight").mul_(2)

    with pytest.raises(WeightsCorrupted, match="changed by the request"):
        w.run("world-gpt", [], scribble)
    assert not w.status()["models"]["world-gpt"]["unchanged"]
    assert w.run("world-gpt", [], top, "The capital of Canada is") == top(gpt, "The capital of Canada is")
    assert w.status()["models"]["world-gpt"]["unchanged"]  # reloaded from disk, checked against the first load
