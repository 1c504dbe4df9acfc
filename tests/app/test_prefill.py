"""Nothing opens empty: once the app has warmed its result cache, every tab's and the Lesson's default example
opens with its result, labelled as served from the cache, and opening a page never computes nor edits."""

import types

import gradio as gr

from knlab.serve.result_cache import ResultCache
from knlab.serve.worker import ModelWorker


def _app(gpt, monkeypatch):
    from knlab.app import ui
    from knlab.app.tabs import lesson
    monkeypatch.setenv("KNLAB_DEFAULT_MODEL", "world-gpt")
    monkeypatch.setattr(lesson, "lesson_model", lambda: "world-gpt")  # the organism's lesson: seconds, not minutes
    worker = ModelWorker(device="cpu", second_copy=False, cache=ResultCache(256 << 20, 0))
    worker.add_model(gpt)
    return ui.build_app(worker, examples=True), worker


def _cheap(handler) -> bool:
    """The examples this test warms: all but the batch evaluation and the Lesson's edit steps (minutes together on a
    loaded 2-core machine; they go through the same ``prefill`` and ``opened``)."""
    step = next((d for d in handler.__defaults__ or () if hasattr(d, "number")), None)
    return handler.__qualname__.split(".")[0] != "build_evaluate_tab" and (step is None or step.number <= 3)


def _open(ctx, request):
    """Every example as a page opening shows it."""
    return [ctx.opened(handler, inputs, outputs)(*[c.value for c in inputs], request=request)
            for handler, inputs, outputs in ctx.examples]


def _texts(outputs) -> str:
    """The outputs' text: Markdown, and the figures' titles (where a tab shows only a figure, the note is there)."""
    return " ".join(o if isinstance(o, str) else str(o.layout.title.text) for o in outputs
                    if isinstance(o, str) or hasattr(o, "layout"))


def test_examples_open_from_the_cache_once_warm_and_never_compute(gpt, monkeypatch):
    app, worker = _app(gpt, monkeypatch)
    ctx = app.knlab_context
    student = types.SimpleNamespace(session_hash="student")
    assert len(ctx.examples) >= 12  # predict, attribute, trace, edit, evaluate, the lesson's steps
    ctx.examples = [e for e in ctx.examples if _cheap(e[0])]
    served = worker.status()["models"]["world-gpt"]["lanes"]["long"]["requests"]
    assert all(out == gr.skip() for out in _open(ctx, student))  # cold: the page opens as before
    assert worker.status()["models"]["world-gpt"]["lanes"]["long"]["requests"] == served  # nothing computed

    ctx.warm()
    assert len(ctx.sessions) == 0  # the warm-up's own session is gone
    opened = _open(ctx, student)
    for (handler, _, outputs), out in zip(ctx.examples, opened):
        assert out != gr.skip() and len(out) == len(outputs), handler.__qualname__
        assert "served from the cache: computed on world-gpt (cpu)" in _texts(out), handler.__qualname__
    assert worker.status()["models"]["world-gpt"]["lanes"]["long"]["requests"] == worker.cache.report()["misses"]
    edit_example = next(out for (h, _, _), out in zip(ctx.examples, opened) if h.__name__ == "example")
    assert edit_example[0].startswith("*An example, not applied")
    assert ctx.edits(student) == []  # showing the edit's example kept nothing

    apply = next(f.fn for f in app.fns.values() if f.api_name == "edit")  # pressing Apply edit on the defaults
    inputs = next(i for h, i, _ in ctx.examples if h.__name__ == "example")
    misses = worker.cache.report()["misses"]
    out = apply(*[c.value for c in inputs], request=student)
    assert "served from the cache" in out[0] and worker.cache.report()["misses"] == misses  # no optimisation
    assert len(ctx.edits(student)) == 1
    # with the edit kept, the student's own examples are no longer the base model's: nothing stale is shown
    predict_example = next(h for h, _, _ in ctx.examples if h.__qualname__.startswith("build_predict_tab"))
    predict_inputs, predict_outputs = next((i, o) for h, i, o in ctx.examples if h is predict_example)
    assert ctx.opened(predict_example, predict_inputs, predict_outputs)(*[c.value for c in predict_inputs], request=student) == gr.skip()
