"""The result cache: a kept result equals a recomputed one, is never served for other edits, another model,
other arguments or other code, stays within its bounds, and identical requests in flight compute once."""

import pickle
import threading
import time

import numpy as np
import pytest

from knlab.core.errors import InputError, RequestDropped
from knlab.methods.intervene import NeuronIntervention
from knlab.methods.predict import predict
from knlab.methods.trace import trace
from knlab.serve import result_cache
from knlab.serve.result_cache import ResultCache, canonical, request_key
from knlab.serve.worker import ModelWorker

CALLS: list[str] = []


def counted_predict(lm, prompt, top=5):
    """predict, counting the times it actually runs."""
    CALLS.append(prompt)
    return predict(lm, prompt, top=top)


GATE = threading.Event()


def slow(lm, x):
    CALLS.append(f"slow {x}")
    GATE.wait(10)
    return {"x": x, "n": len(CALLS)}


def refuse(lm, x):
    CALLS.append(f"refuse {x}")
    time.sleep(0.2)
    raise InputError(f"no {x}")


@pytest.fixture
def worker(gpt, bert):
    w = ModelWorker(device="cpu", second_copy=False, cache=ResultCache(64 << 20, 0))
    w.add_model(gpt)
    w.add_model(bert)
    CALLS.clear()
    return w


def test_a_kept_result_equals_a_recomputed_one(worker):
    args = ("The capital of Canada is", "Canada")
    first = worker.ask("world-gpt", [], trace, *args, samples=3)
    again = worker.ask("world-gpt", [], trace, *args, samples=3)
    fresh = worker.run("world-gpt", [], trace, *args, samples=3)
    assert not first.cached and again.cached and again.note().startswith("*served from the cache")
    for res in (again.value, fresh):
        for kind, grid in first.value.grids.items():
            np.testing.assert_array_equal(res.grids[kind], grid)
        assert (res.clean, res.corrupted, res.tokens) == (first.value.clean, first.value.corrupted, first.value.tokens)
    again.value.grids["mlp"][:] = -1  # a caller changing its copy changes nobody else's
    assert (worker.ask("world-gpt", [], trace, *args, samples=3).value.grids["mlp"] != -1).any()


def test_never_served_for_other_edits_models_arguments_or_code(worker, monkeypatch):
    prompt = "The capital of Canada is"
    base = worker.ask("world-gpt", [], counted_predict, prompt)
    silenced = NeuronIntervention(((5, 1), (5, 2), (4, 7)), "suppress")
    other_edit = NeuronIntervention(((5, 1), (5, 2), (4, 8)), "suppress")
    edited = worker.ask("world-gpt", [silenced], counted_predict, prompt)
    assert not edited.cached and edited.value.top_probs[0] != base.value.top_probs[0]
    assert not worker.ask("world-gpt", [other_edit], counted_predict, prompt).cached
    assert worker.ask("world-gpt", [silenced], counted_predict, prompt).cached  # the same edit: served
    assert not worker.ask("world-bert", [], counted_predict, "The capital of Canada is [MASK].").cached
    assert not worker.ask("world-gpt", [], counted_predict, prompt, top=6).cached  # another argument
    assert not worker.ask("world-gpt", [], counted_predict, prompt + " the").cached
    assert worker.ask("world-gpt", [], counted_predict, prompt).cached
    monkeypatch.setattr(result_cache, "_CODE_VERSION", "another version of knlab")
    assert not worker.ask("world-gpt", [], counted_predict, prompt).cached
    assert len(CALLS) == 7


def test_the_key_names_types_exactly_and_refuses_what_it_cannot_name():
    model = {"spec": "m", "weights": "w"}
    keys = {request_key(model, [], predict, (x,), {}) for x in (1, 1.0, True, "1", (1,), [1], None)}
    assert len(keys) == 7
    assert request_key(model, [], predict, (0.1,), {}) != request_key(model, [], predict, (0.1 + 1e-16,), {})
    assert request_key(model, [], predict, (), {"progress": print}) == request_key(model, [], predict, (), {})
    assert request_key(model, [], predict, (lambda: 1,), {}) is None
    assert request_key(model, [], predict, (object(),), {}) is None
    a, b = np.zeros(3), np.zeros(3)
    assert canonical(a) == canonical(b) and canonical(a) != canonical(np.zeros(3, dtype=np.float32))


def test_identical_requests_in_flight_compute_once(worker):
    GATE.clear()
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(worker.ask("world-gpt", [], slow, 1))) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    GATE.set()
    for t in threads:
        t.join(10)
    assert CALLS == ["slow 1"]
    assert sum(not s.cached and not s.coalesced for s in out) == 1 and sum(s.coalesced for s in out) == 3
    assert all(s.value == out[0].value for s in out)
    assert worker.cache.report()["coalesced"] == 3


def test_a_waiter_that_leaves_is_dropped_and_errors_are_not_kept(worker):
    GATE.clear()
    leader = threading.Thread(target=lambda: worker.ask("world-gpt", [], slow, 2))
    leader.start()
    time.sleep(0.3)
    with pytest.raises(RequestDropped):
        worker.ask("world-gpt", [], slow, 2, wanted=lambda: False)
    GATE.set()
    leader.join(10)
    errors: list = []

    def ask_refused():
        try:
            worker.ask("world-gpt", [], refuse, 3)
        except InputError as e:
            errors.append(str(e))
    threads = [threading.Thread(target=ask_refused) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == ["no 3"] * 3 and CALLS.count("refuse 3") == 1  # waiters get the leader's clear error
    with pytest.raises(InputError):
        worker.ask("world-gpt", [], refuse, 3)  # not kept: asked again, computed again
    assert CALLS.count("refuse 3") == 2


def test_memory_and_disk_stay_within_their_bounds(tmp_path):
    cache = ResultCache(memory_bytes=3000, disk_bytes=5000, root=tmp_path)
    for k in range(10):
        cache.served(f"{k:02d}" * 32, lambda k=k: np.full(100, k, dtype=np.float64))  # ~1 KB pickled each
    size = len(pickle.dumps(np.full(100, 0, dtype=np.float64), protocol=pickle.HIGHEST_PROTOCOL))
    assert cache.memory_used() <= 3000 and len(cache) == 3000 // size
    disk = sum(p.stat().st_size for p in tmp_path.glob("*/*.pkl"))
    assert 0 < disk <= 5000
    newest = cache.lookup("09" * 32)
    assert newest is not None and newest.value[0] == 9
    assert cache.lookup("00" * 32) is None  # the oldest went first, from both
    fresh = ResultCache(memory_bytes=3000, disk_bytes=5000, root=tmp_path)  # a restarted server
    hit = fresh.lookup("08" * 32)
    assert hit is not None and hit.cached and hit.value[0] == 8 and fresh.report()["disk_hits"] == 1


def test_a_damaged_disk_entry_is_a_miss(tmp_path):
    cache = ResultCache(memory_bytes=0, disk_bytes=1 << 20, root=tmp_path)
    key = "ab" * 32
    cache.served(key, lambda: [1, 2, 3])
    path = next(tmp_path.glob("*/*.pkl"))
    path.write_bytes(path.read_bytes()[:10])
    assert cache.lookup(key) is None and not path.exists()
    assert cache.served(key, lambda: [4]).value == [4]
