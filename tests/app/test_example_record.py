"""Nothing opens empty, even before the server has computed anything: the examples' outputs recorded at release are
shown as a page opens, labelled with when and on what they were computed; never for a session with edits, never for
other weights; the cache's own (current) results replace them once computed. And the shipped record covers every
example of the app a full install opens with."""

import json
import types

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from gradio.helpers import special_args

from knlab.app import example_record
from knlab.serve.result_cache import ResultCache
from knlab.serve.worker import ModelWorker


def _app(gpt, monkeypatch):
    from knlab.app import ui
    from knlab.app.tabs import lesson
    monkeypatch.setenv("KNLAB_DEFAULT_MODEL", "world-gpt")
    monkeypatch.setattr(lesson, "lesson_model", lambda: "world-gpt")
    worker = ModelWorker(device="cpu", second_copy=False, cache=ResultCache(256 << 20, 0))
    worker.add_model(gpt)
    return ui.build_app(worker, examples=True), worker


def _quick(handler) -> bool:
    """The examples recorded here: Predict's, Attribute's and the Lesson's first step (seconds on world-gpt)."""
    name = handler.__qualname__.split(".")[0]
    step = next((d for d in handler.__defaults__ or () if hasattr(d, "number")), None)
    return name in ("build_predict_tab", "wire_attribution") or (step is not None and step.number == 1)


def _open(ctx, request):
    """Every example as a page opening shows it, called as Gradio calls an event's function (``special_args``: the
    request, a progress bar, and every other parameter's default, positionally)."""
    out = []
    for h, i, o in ctx.examples:
        fn = ctx.opened(h, i, o)
        args, *_ = special_args(fn, [c.value for c in i], gr.Request(session_hash=request.session_hash))
        out.append(fn(*args))
    return out


def _data(fig) -> list:
    """A figure's traces as the page receives them (plotly's JSON: arrays as typed base64)."""
    return json.loads(fig.to_json())["data"]


def _figures(out):
    return [v for v in out if isinstance(v, go.Figure)]


def test_values_round_trip_and_keys_compare_numbers_as_a_page_sends_them():
    fig = go.Figure(go.Heatmap(z=np.arange(6.0).reshape(2, 3)), layout={"title": {"text": "t"}})
    plot, files = gr.Plot(), gr.File()
    back = example_record.decode(example_record.encode(fig, plot))
    assert isinstance(back, go.Figure) and _data(back) == _data(fig)
    assert example_record.decode(example_record.encode(["/tmp/a.json"], files)) == gr.skip()  # the server's files
    assert example_record.decode(example_record.encode({"a": [1, 2.5]}, gr.JSON())) == {"a": [1, 2.5]}

    def handler():
        pass
    assert example_record.key(handler, ["p", 10], [plot]) == example_record.key(handler, ["p", 10.0], [plot])
    assert example_record.key(handler, ["p", 10], [plot]) != example_record.key(handler, ["p", 11], [plot])
    assert example_record.key(handler, ["p", True], [plot]) != example_record.key(handler, ["p", 1.0], [plot])


def test_a_page_opens_with_the_record_labelled_until_the_cache_has_the_example(gpt, monkeypatch, tmp_path):
    app, worker = _app(gpt, monkeypatch)
    ctx = app.knlab_context
    ctx.examples = [e for e in ctx.examples if _quick(e[0])]
    assert len(ctx.examples) == 3
    rec = example_record.record(ctx, ["world-gpt"])
    assert rec["weights"] == {"world-gpt": worker.base_checksums["world-gpt"]}
    example_record.write(tmp_path / "world-gpt.json.gz", rec)
    ctx.recorded = example_record.read(tmp_path / "world-gpt.json.gz")

    uncached = ModelWorker(device="cpu", second_copy=False)  # what the examples compute to, again
    uncached.add_model(gpt)
    ctx.worker = uncached
    computed = {h: ctx.run_example(h, [c.value for c in i], "check") for h, i, _ in ctx.examples}
    cold = ModelWorker(device="cpu", second_copy=False, cache=ResultCache(256 << 20, 0))  # a fresh server
    cold.add_model(gpt)
    ctx.worker = cold
    student = types.SimpleNamespace(session_hash="student")
    requests = cold.status()["models"]["world-gpt"]["lanes"]["long"]["requests"]
    for (handler, _, outputs), out in zip(ctx.examples, _open(ctx, student)):
        assert out != gr.skip() and len(out) == len(outputs), handler.__qualname__
        text = " ".join(v if isinstance(v, str) else str(v.layout.title.text) for v in out
                        if isinstance(v, str) or isinstance(v, go.Figure))
        assert f"Recorded {rec['recorded']} on world-gpt (cpu" in text, handler.__qualname__
        assert "press the button to compute it live" in text
        want = computed[handler]
        assert len(_figures(out)) == len(_figures(want)) >= 1
        for got, again in zip(_figures(out), _figures(want)):  # the recorded figure is the computed one
            assert _data(got) == _data(again)
    assert cold.status()["models"]["world-gpt"]["lanes"]["long"]["requests"] == requests  # opening computed nothing

    # a session with an edit of the model: the base model's record is not its answer
    ctx.set_edits(student, [{"model": "world-gpt", "spec": ("kn", "x"), "label": "an edit"}])
    assert all(out == gr.skip() for out in _open(ctx, student))
    ctx.set_edits(student, [])
    # other weights under the same name: not shown
    ctx.recorded = {**ctx.recorded, "weights": {"world-gpt": "0" * 64}}
    assert all(out == gr.skip() for out in _open(ctx, student))
    ctx.recorded = example_record.read(tmp_path / "world-gpt.json.gz")
    # once this server computed an example, the page shows the cache's answer, not the record
    ctx.warm()
    for out in _open(ctx, types.SimpleNamespace(session_hash="another")):
        text = " ".join(v for v in out if isinstance(v, str)) + " ".join(str(f.layout.title.text) for f in _figures(out))
        assert "served from the cache" in text and "Recorded" not in text


def test_the_shipped_record_covers_every_example_of_a_full_install(monkeypatch):
    """A full install (README) opens on the real model; its record must hold every example the page shows, made on
    the weights shipped (the checksum the worker computes at load is checked when a page opens)."""
    from knlab.app import ui
    from knlab.studies.lesson import lesson_model
    monkeypatch.delenv("KNLAB_DEFAULT_MODEL", raising=False)
    start = ui.start_model()
    assert start == "smollm2-135m" == lesson_model()
    rec = ui.recorded_examples(start)
    assert rec is not None, "no record: python -m knlab examples"
    app = ui.build_app(ModelWorker(device="cpu", second_copy=False), warm=False, examples=True)
    ctx = app.knlab_context
    assert ctx.recorded is not None and len(ctx.examples) >= 12
    missing = [h.__qualname__ for h, i, o in ctx.examples
               if example_record.key(h, [c.value for c in i], o) not in rec["examples"]]
    assert not missing, f"examples changed since the record was made (python -m knlab examples): {missing}"
    assert set(rec["weights"]) == {"smollm2-135m"} and all(len(w) >= 16 for w in rec["weights"].values())
