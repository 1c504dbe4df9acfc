import contextlib
import threading

import pytest

from knlab.core.models import weights_checksum
from knlab.core.nethook import Trace, get_parameter
from knlab.methods.predict import predict
from knlab.serve.worker import ModelWorker


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
