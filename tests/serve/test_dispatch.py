"""Requests across ZeroGPU's process boundary (knlab/serve/dispatch.py): everything that crosses pickles through
spaces' own queue, knlab's errors keep their one line, each kind of request asks for its own GPU time, and a
process forked from the worker serves from fresh locks and checks its copy first."""

import multiprocessing
import types

import gradio as gr
import pytest

from knlab.core.errors import InputError
from knlab.serve import dispatch
from knlab.serve.worker import LONG, ModelWorker, named_worker
from zerogpu import cuda_build_look


def _through_spaces_queue(crossed: list):
    """An ``on_gpu`` that sends the request, and then its answer, through spaces' SimpleQueue: what ZeroGPU
    pickles, pickled the same way (in this process, so it is fast)."""
    with cuda_build_look():
        from spaces.utils import SimpleQueue

    def on_gpu(request):
        q = SimpleQueue()
        q.put(request)
        request = q.get()
        crossed.append(request)
        try:
            answered = dispatch.answer(request)
        except gr.Error as e:
            q.put(e)
            raise q.get() from None
        q.put(answered)
        return q.get()
    return on_gpu


@pytest.fixture()
def app(gpt, bert, monkeypatch):
    from knlab.app.ui import build_app
    monkeypatch.setenv("KNLAB_DEFAULT_MODEL", "world-gpt")  # the Lesson's model: one this worker holds
    worker = ModelWorker(device="cpu", second_copy=False)
    worker.add_model(gpt)
    worker.add_model(bert)
    crossed: list = []
    monkeypatch.setattr(dispatch, "on_gpu", _through_spaces_queue(crossed))
    app = build_app(worker)
    app.crossed = crossed
    return app


def _handler(app, api_name):
    return next(f.fn for f in app.fns.values() if f.api_name == api_name)


def _call(app, api_name, session, *args):
    out = _handler(app, api_name)(*args, request=types.SimpleNamespace(session_hash=session))
    return list(out)[-1] if isinstance(out, types.GeneratorType) else out


def _top(app, who, prompt="The capital of Canada is"):
    return _call(app, "predict", who, "world-gpt", prompt, 3)[1]["top"][0]["token"]


def test_the_tabs_requests_pickle_through_spaces_queue_and_sessions_stay_apart(app):
    assert _top(app, "alice") == "Ottawa"
    traced = _call(app, "trace", "alice", "world-gpt", "The capital of Canada is", "Canada", "", 3, 3, "3sd", 0,
                   True, "noise", "", "prob")
    assert next(o for o in traced if isinstance(o, dict) and "answer" in o)["answer"] == "Ottawa"
    assert _call(app, "attribute", "alice", "world-gpt", "The capital of Canada is", "", 3, "ig")[6]["target"] == "Ottawa"
    rome = _call(app, "edit", "alice", "world-gpt", "rome", "The capital of Canada is", "Canada", "Rome", None, "dai", "first-token")
    assert rome[6]["criteria"]["reliability"] == 1.0
    assert _top(app, "alice") == "Rome" and _top(app, "bob") == "Ottawa"  # her edit crossed with her requests only
    assert _call(app, "undo", "alice")[1] == [] and _top(app, "alice") == "Ottawa"
    assert {r.kind for r in app.crossed} == {"predict", "long"}
    assert {r.fn.__name__ for r in app.crossed} == {"predict", "patch_estimate", "trace_prompt", "knockout",
                                                    "attribute", "edit"}
    status = app.knlab_context.worker.status()
    assert status["in_gpu_processes"] and status["models"]["world-gpt"]["unchanged"]


@pytest.mark.slow  # a KN edit, a paraphrase search and a claim: minutes on 2 busy cores
def test_kn_edits_paraphrases_and_claims_pickle_through_spaces_queue(app):
    kn = _call(app, "edit", "bob", "world-gpt", "kn", "The capital of France is", "France", "Berlin", None, "dai", "first-token")
    assert kn[6]["method"] == "kn" and kn[6]["neurons"]
    assert _top(app, "alice", "The capital of France is") == "Paris" and _top(app, "bob", "The capital of France is") != "Paris"
    assert _call(app, "reset", "bob")[1] == [] and _top(app, "bob", "The capital of France is") == "Paris"
    shared = _call(app, "neurons", "carol", "world-gpt", "The capital of Canada is\nThe capital city of Canada is",
                   "Ottawa", 2)
    assert isinstance(shared, dict) and shared
    claim = _call(app, "paper_overturn", "carol", 2)
    assert claim[3]["claim"] == "overturn" and [r["model"] for r in claim[3]["runs"]] == ["world-bert"]
    assert {r.kind for r in app.crossed} == {"predict", "long", "study"}
    assert {r.fn.__name__ for r in app.crossed} >= {"shared_neurons", "overturn"}


def test_every_lesson_step_and_claim_pickles_by_reference():
    """What the Lesson and the Paper tab send are their steps' and claims' functions, and each claim's progress:
    each must pickle (a closure would not) and come back as the same function."""
    import functools
    import pickle

    from knlab.studies.lesson import STEPS
    from knlab.studies.paper import CLAIMS, _model_progress
    for fn in [s.run for s in STEPS] + [c.run for c in CLAIMS]:
        assert pickle.loads(pickle.dumps(fn)) is fn, fn
    progress = pickle.loads(pickle.dumps(functools.partial(_model_progress, None, 0, 2, "world-gpt")))
    assert progress(0.5, "half") is None


def test_errors_cross_as_their_one_line(app):
    with pytest.raises(gr.Error, match="not in the prompt"):
        _call(app, "edit", "dan", "world-gpt", "rome", "The capital of Canada is", "Canda", "Rome", None, "dai", "first-token")
    with pytest.raises(gr.Error) as info:
        dispatch.answer(dispatch.ModelRequest(app.knlab_context.worker.name, "world-gpt", (), _divide_by_zero))
    assert str(info.value.message) == "internal error (ZeroDivisionError); the model is unchanged"


def _divide_by_zero(lm):
    return 1 / 0


def test_each_kind_asks_for_its_gpu_time(monkeypatch):
    req = lambda kind: dispatch.ModelRequest("w", "world-gpt", (), len, kind=kind)  # noqa: E731
    monkeypatch.delenv(dispatch.DURATIONS_ENV, raising=False)
    assert [dispatch.gpu_seconds(req(k)) for k in ("predict", "long", "study")] == [20, 120, 300]
    monkeypatch.setenv(dispatch.DURATIONS_ENV, "study=900, predict=10")
    assert [dispatch.gpu_seconds(req(k)) for k in ("predict", "long", "study")] == [10, 120, 900]
    monkeypatch.setenv(dispatch.DURATIONS_ENV, "edit=abc")
    with pytest.raises(InputError, match="KNLAB_GPU_SECONDS"):
        dispatch.gpu_seconds(req("long"))


def _top_in_child(name, queue):
    from knlab.methods.predict import predict
    worker = named_worker(name)
    lane = worker._lanes[("world-gpt", LONG)]
    queue.put((lane.check_first, lane.lock.locked(),
               worker.run("world-gpt", [], lambda lm: predict(lm, "The capital of Canada is", 1).top_tokens[0])))


def test_a_forked_process_has_fresh_locks_and_checks_its_copy_first(gpt):
    """A lock held in the parent at the fork (another request mid-way) is free in the child, and the child
    checksums its copy before it serves from it."""
    worker = ModelWorker(device="cpu", second_copy=False)
    worker.add_model(gpt)
    lane = worker._lanes[("world-gpt", LONG)]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with lane.lock:  # held here while the child is forked
        child = ctx.Process(target=_top_in_child, args=(worker.name, queue))
        child.start()
        check_first, locked, top = queue.get(timeout=120)
    child.join(30)
    assert check_first and not locked and top == "Ottawa"
    assert not lane.check_first  # the parent's own copy needs no check


def test_the_edit_tabs_sweep_pickles_through_spaces_queue(app):
    """Edit at every layer: its plan, its progress bar and each layer's edit cross the process boundary (a
    lambda given as the progress callback would not pickle)."""
    res = _call(app, "sweep", "alice", "world-gpt", "The capital of Canada is", "Canada", "Rome", 3)
    assert [row["layer"] for row in res[2]["rows"]] == [0, 3]
    assert {r.fn.__name__ for r in app.crossed} == {"every", "prepare", "edit_at"}
