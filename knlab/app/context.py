"""What every tab shares: the worker and the model picker (``Context``), this browser session's edits, one
request path that turns knlab's clear errors into a message in the UI (never a traceback), and widget
value checks."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import json
import logging
import math
import threading
import types
from collections import OrderedDict
from typing import Any, Callable

import gradio as gr

from knlab.app import example_record, takeaway
from knlab.app.defaults import defaults_for
from knlab.app.plots import note_under_title
from knlab.core.errors import KnlabError
from knlab.core.limits import hosted
from knlab.methods.tokenization import tokenization
from knlab.serve.dispatch import ModelRequest, send, ui_error
from knlab.serve.hosting import Sessions, allowed_models, check_model
from knlab.serve.result_cache import Served, Uncacheable, canonical
from knlab.serve.worker import INTERACTIVE, LONG, ModelWorker

log = logging.getLogger("knlab.app")

# Set while a page opens (``Context.opened``): requests are answered from the result cache only, never computed
_CACHE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("knlab_cache_only", default=False)
# While a handler runs under ``Context.reused``: how each of its requests was served
_SERVED: contextvars.ContextVar[list | None] = contextvars.ContextVar("knlab_served", default=None)
RENDERED = 256  # handlers' drawn outputs kept by ``Context.reused`` (figures: up to ~1 MB each)
WARMING_SESSION = "knlab-warming"  # the session the background warm-up runs as: no edits, dropped when done


class NotCached(Exception):
    """A page opening asked for a result the cache does not hold yet: its outputs stay as they are."""


class Context:
    """What every tab needs: the worker, the model picker, and the sessions (each with its own edits)."""

    def __init__(self, worker: ModelWorker, model: gr.Dropdown, sessions: Sessions | None = None,
                 start: str = "world-gpt"):
        self.worker = worker
        self.model = model
        self.start = start  # the model the page opens with: tabs start with examples it answers
        self.sessions = sessions or Sessions()
        self.on_load: list[tuple] = []  # (fn, inputs, outputs) that build_app runs when a page opens
        # each tab's inputs by name ("Trace": {"prompt": ..., "subject": ...}; the Paper tab's claims as
        # "claim:<id>" -> its accordion), so that one tab can fill in another (the Lesson's "open in ...")
        self.fields: dict[str, dict[str, Any]] = {}
        self.tabs: gr.Tabs | None = None
        self.after_build: list[Callable[[], None]] = []  # wiring that needs every tab built (build_app runs it)
        self.model_defaults: list[tuple[Callable[[str], Any], list]] = []  # (fn(model), outputs) of each tab
        # (handler, inputs, outputs): a tab's default example, shown from the cache as the page opens and computed
        # into it by ``warm`` (``prefill``)
        self.examples: list[tuple[Callable[..., Any], list, list]] = []
        self.recorded = None  # the examples' outputs as recorded at release (``example_record``)
        self._warming: threading.Thread | None = None
        self._rendered: OrderedDict = OrderedDict()  # (handler, inputs, edits) -> its outputs (``reused``)
        self._rendered_lock = threading.Lock()
        self.rendered_reused = 0  # requests answered with kept outputs (``reused``), for /status

    @property
    def recorded(self) -> dict | None:
        return self._recorded

    @recorded.setter
    def recorded(self, rec: dict | None) -> None:
        self._recorded = rec
        self._recorded_shown: dict[str, tuple | None] = {}  # example key -> its outputs, decoded and labelled

    def on_model_choice(self, fn: Callable[[str], Any], outputs: list) -> None:
        """When the user picks a model, ``fn(model)`` fills ``outputs`` with inputs that model answers. Only a
        user's pick triggers it (``input``, not ``change``): a model set by the app (the Lesson's "open in ...")
        comes with its own inputs, applied after these (``defaults_for_all``)."""
        self.model.input(fn, self.model, outputs, api_visibility="private")
        self.model_defaults.append((fn, list(outputs)))

    def defaults_for_all(self, model: str) -> dict:
        """Every tab's inputs for ``model``, as {component: value}."""
        out: dict = {}
        for fn, outputs in self.model_defaults:
            values = fn(model)
            out.update(zip(outputs, values if len(outputs) > 1 else [values]))
        return out

    def show_tokens(self, out: gr.Markdown, prompt: gr.Textbox, subject: gr.Textbox | None = None) -> None:
        """Keep ``out`` showing how ``prompt`` (and ``subject``, marked) reaches the picked model: as either box
        changes and when the page opens (every tab with a prompt shows it before running)."""
        boxes = [prompt] if subject is None else [prompt, subject]
        show = lambda m, *texts: self.tokens(m, *texts)  # noqa: E731
        for box in boxes:
            box.change(show, [self.model, *boxes], out, api_visibility="private", trigger_mode="always_last")
        self.on_load.append((show, [self.model, *boxes], out))

    def tokens(self, model: str, prompt: str, subject: str | None = None) -> str:
        """How ``prompt`` reaches ``model`` (its tokens, the subject's marked, unknown words named), as
        Markdown; a problem is said in the same place, never raised (it is a preview, not a request)."""
        if not prompt or not str(prompt).strip():
            return ""
        try:
            with self.worker.tokenizing(check_model(model)) as lm:  # never waits for a request on the model
                return tokenization(lm, prompt, subject).markdown()
        except KnlabError as e:
            return f"⚠ {e}"
        except Exception as e:  # noqa: BLE001 - a preview never breaks the page
            log.exception("tokenization preview failed")
            return f"⚠ cannot show the tokens ({type(e).__name__})"

    @staticmethod
    def session_of(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "local"

    def edits(self, request: gr.Request | None) -> list:
        return self.sessions.edits(self.session_of(request))

    def set_edits(self, request: gr.Request | None, edits: list) -> None:
        self.sessions.set_edits(self.session_of(request), edits)

    def serve(self, fn: Callable[..., Any], model: str, request: gr.Request | None, *args: Any,
              base: bool = False, lane: str = LONG, **kwargs: Any) -> Any:
        """``ask``'s result alone, for a handler that does not say how it was served."""
        return self.ask(fn, model, request, *args, base=base, lane=lane, **kwargs).value

    def ask(self, fn: Callable[..., Any], model: str, request: gr.Request | None, *args: Any,
            base: bool = False, lane: str = LONG, **kwargs: Any) -> Served:
        """Run ``fn(lm, ...)`` with this session's edits *of this model* applied (edits are kept per model:
        switching the model never applies one model's edit to another); ``base=True``: on the base model.
        ``lane``: the worker's interactive lane for a request well under a second, else the long one (the
        worker's docstring says why); a request whose browser tab closed before it ran is dropped. ``fn``
        and the arguments must pickle (a module-level function; ``progress=Progress(...)``): on ZeroGPU the
        request runs in another process (``knlab.serve.dispatch``). The answer comes from the worker's result
        cache when the same model, edits, function and arguments were answered before (``Served.note`` says
        so where the result shows)."""
        if _CACHE_ONLY.get():  # a page opening: the example's result if the cache holds it, else nothing
            served = self.worker.peek(model, self._specs(model, request, base), fn, *args, **kwargs)
            if served is None:
                raise NotCached(fn)
            _note_served(served)
            return served
        with _shown_to_user("the model is unchanged"):
            self.sessions.touch(self.session_of(request))
            model = check_model(model)
            specs = self._specs(model, request, base)
            kind = "predict" if lane == INTERACTIVE else "long"
            return _note_served(send(ModelRequest(self.worker.name, model, tuple(specs), fn, args, kwargs, lane, kind),
                                     wanted=client_waiting()))

    def _specs(self, model: str, request: gr.Request | None, base: bool) -> list:
        """The edit specs a request on ``model`` runs with: this session's edits of that model (none on ``base``)."""
        return [] if base else [e["spec"] for e in self.edits(request) if e.get("model") == model]

    def prefill(self, handler: Callable[..., Any], inputs: list, outputs: list) -> None:
        """``handler`` (a button's, with these ``inputs`` and ``outputs``) shows its result for the inputs' initial
        values (the tab's default example) as soon as a page opens, when the result cache holds it (``opened``);
        ``warm`` puts it there in the background after the app starts. A handler given here must not change the
        session (the Edit tab registers an example that shows an edit without keeping it)."""
        self.examples.append((handler, list(inputs), list(outputs)))

    def reused(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """``handler`` (one that changes nothing but its outputs) with its drawn outputs kept: when every request
        it made was served from the cache, the same inputs and session edits later get the same outputs without
        drawing them again. Thirty students pressing the same Lesson button then cost the server one figure, not
        thirty, and their answers arrive while an edit keeps both cores busy (``benchmarks/bench_class.py``)."""
        @functools.wraps(handler)
        def kept(*args: Any, **kwargs: Any) -> Any:
            key = self._rendered_key(handler, args, kwargs)
            if key is not None:
                with self._rendered_lock:
                    if key in self._rendered:
                        self._rendered.move_to_end(key)
                        self.rendered_reused += 1
                        return self._rendered[key]
            token = _SERVED.set([])
            try:
                out = _last(handler(*args, **kwargs))
                served = _SERVED.get()
            finally:
                _SERVED.reset(token)
            if key is not None and served and all(s.cached or s.coalesced for s in served) and out != gr.skip():
                with self._rendered_lock:
                    self._rendered[key] = out
                    while len(self._rendered) > RENDERED:
                        self._rendered.popitem(last=False)
            return out
        return kept

    def _rendered_key(self, handler: Callable[..., Any], args: tuple, kwargs: dict) -> str | None:
        """The handler, its widget values and the session's edits (every model's), or None when a value has no
        canonical form; the request and the progress bar are not inputs."""
        request = _request_in(args, kwargs)
        values = [a for a in (*args, *kwargs.values())
                  if not (hasattr(a, "session_hash") or isinstance(a, (gr.Progress, Progress)))]
        edits = [(e.get("model"), e["spec"]) for e in self.edits(request)]
        try:
            return json.dumps([id(handler), canonical(values), canonical(edits), _CACHE_ONLY.get()])
        except Uncacheable:
            return None

    def opened(self, handler: Callable[..., Any], inputs: list, outputs: list) -> Callable[..., Any]:
        """``handler`` (with these ``inputs`` and ``outputs``) as a page-open event: every request it makes is answered from the
        cache only; when one is not there, the example's recorded outputs are shown, labelled (``recorded_example``),
        else every output is left as it is (the button computes). Its drawn outputs are kept (``reused``): thirty
        pages opening draw each example once."""
        reused = self.reused(handler)

        @functools.wraps(handler)
        def on_open(*args: Any, **kwargs: Any) -> Any:
            token = _CACHE_ONLY.set(True)
            try:
                return reused(*args, **kwargs)
            except NotCached:
                shown = self.recorded_example(handler, list(args[:len(inputs)]), _request_in(args, kwargs), outputs)
                return _unchanged() if shown is None else shown
            except Exception:  # noqa: BLE001 - opening the page never fails for an example
                log.exception("showing an example from the cache failed")
                return _unchanged()
            finally:
                _CACHE_ONLY.reset(token)
        return on_open

    def recorded_example(self, handler: Callable[..., Any], values: list, request: gr.Request | None,
                         outputs: list) -> tuple | None:
        """The example's outputs (for its inputs' ``values``) as recorded at release, labelled with when and on what
        they were computed, for a page opening before this server has computed them; None when there is no such
        record, when the session has edits (the record is the base model's), or when a model it was made on has
        other weights here."""
        rec = self.recorded
        if not rec or self.edits(request):
            return None
        if any(self.worker.base_checksums.get(m, w) != w for m, w in rec["weights"].items()):
            return None  # unloaded models are taken as shipped: the record names their weights in its label
        key = example_record.key(handler, values, outputs)
        if key not in self._recorded_shown:  # decoded once: thirty pages opening share the figures (never changed)
            found = rec["examples"].get(key)
            self._recorded_shown[key] = None if found is None else example_record.labelled(found, outputs, rec)
        return self._recorded_shown[key]

    def run_example(self, handler: Callable[..., Any], values: list, session: str) -> Any:
        """``handler``'s last output for ``values``, run as the session ``session`` (dropped after: it keeps nothing)."""
        request = types.SimpleNamespace(session_hash=session)
        try:
            kwargs = {"request": request} if "request" in inspect.signature(handler).parameters else {}
            return _last(handler(*values, **kwargs))
        finally:
            self.sessions.drop(session)

    def warm(self) -> None:
        """Compute every registered example into the result cache (``prefill``), one after the other, as a session
        of its own with no edits; failures are logged, never raised. Run in a background thread after start."""
        for handler, inputs, _outputs in self.examples:
            try:
                self.run_example(handler, [getattr(c, "value", None) for c in inputs], WARMING_SESSION)
            except Exception:  # noqa: BLE001
                log.warning("warming %s failed", getattr(handler, "__qualname__", handler), exc_info=True)

    def warm_in_background(self) -> threading.Thread:
        self._warming = threading.Thread(target=self.warm, name="knlab-warm", daemon=True)
        self._warming.start()
        return self._warming

    def rendered_report(self) -> dict:
        """For /status: outputs kept by ``reused``, and how many requests they answered without asking the cache."""
        with self._rendered_lock:
            return {"entries": len(self._rendered), "reused": self.rendered_reused}

    def warming(self) -> bool:
        """Whether the background warm-up (``warm_in_background``) is still computing examples (/status says)."""
        return self._warming is not None and self._warming.is_alive()

    def takeaway(self, name: str, result: Any, fn: Callable[..., Any], model: str | None, request: gr.Request | None,
                 *args: Any, base: bool = False, **kwargs: Any) -> tuple[list[str], str]:
        """A result's files and the Python that reproduces it, for the tab's take-away panel: ``fn``, ``model``,
        ``args`` and ``base`` as given to ``serve`` (``model=None``: a study given to ``serve_many``)."""
        with _shown_to_user("the result above is unaffected"):
            on_model = model is not None
            edits = [] if base or not on_model else [e["call"] for e in self.edits(request) if e.get("model") == model]
            source = takeaway.script(takeaway.Call(fn, args, kwargs, on_model), model, edits)
            return takeaway.write(name, result, source), source

    def serve_many(self, study: Callable[..., Any], request: gr.Request | None, *args: Any,
                   served: list[Served] | None = None, **kwargs: Any) -> Any:
        """Run a study that spans models (a claim of the paper): it asks for each model through ``run_on``,
        which runs one function on that model's base weights in the worker (never with this session's
        edits); in hosted mode only the allowed models are offered to it. ``served``: a list that collects how
        each model's request was served (for ``cache_note``)."""
        with _shown_to_user("the models are unchanged"):
            self.sessions.touch(self.session_of(request))

            wanted = client_waiting()

            def run_on(spec: str, fn: Callable[..., Any], *a: Any, **k: Any) -> Any:
                answer = send(ModelRequest(self.worker.name, check_model(spec), (), fn, a, k, LONG, "study",
                                           "the models are unchanged"), wanted=wanted)
                if served is not None:
                    served.append(answer)
                return answer.value
            return study(*args, run_on=run_on, models=list(allowed_models()) if hosted() else None, **kwargs)


@contextlib.contextmanager
def _shown_to_user(unchanged: str):
    """knlab's clear errors become the UI's one-line message; anything else is a bug: logged with its
    traceback, shown to the user as one line (``unchanged`` says what the failure left alone). A ``gr.Error``
    (from the request's own process: ``knlab.serve.dispatch.ui_error``) passes as it is."""
    try:
        yield
    except Exception as e:
        raise ui_error(e, unchanged) from None


def _note_served(served: Served) -> Served:
    """Tell ``Context.reused`` (when it is watching) how a request was served."""
    seen = _SERVED.get()
    if seen is not None:
        seen.append(served)
    return served


def _request_in(args: tuple, kwargs: dict) -> Any:
    """The Gradio request among a handler's arguments (Gradio passes it where the handler's signature asks), or None."""
    return next((a for a in (*args, *kwargs.values()) if hasattr(a, "session_hash")), None)


def _last(result: Any) -> Any:
    """A handler's result; for a generator (a handler that shows a preview first), its last."""
    if inspect.isgenerator(result):
        last = None
        for last in result:
            pass
        return last
    return result


def _unchanged() -> Any:
    """A NotCached page-open's answer: ``gr.skip()``, which Gradio applies to every output (leaves them as they are)."""
    return gr.skip()


def cache_note(*served: Served) -> str:
    """Where results show, how they were served: ``Served.note`` when every one came from the cache (or from an
    identical request's computation), a line saying which did when only some did, else nothing."""
    notes = [s.note() for s in served]
    if all(notes):
        return notes[0]
    if any(notes):
        return f"*{sum(map(bool, notes))} of the {len(notes)} results here were served from the cache*"
    return ""


def with_note(text: str, *served: Served) -> str:
    """``text`` with ``cache_note`` as its last line (when there is one)."""
    note = cache_note(*served)
    return f"{text}  \n{note}" if note else text


def with_figure_note(figure: Any, *served: Served) -> Any:
    """``figure`` (plotly) with ``cache_note`` under its title, for a tab whose result shows only as a figure (its
    HTTP outputs stay as they are)."""
    note = cache_note(*served)
    return note_under_title(figure, note) if note and figure is not None else figure


def takeaway_panel(name: str) -> tuple[gr.File, gr.Code]:
    """Where a tab's latest result can be taken away: its files (JSON; CSV of its grids, maps and lists; the
    script) and the Python call that reproduces it. Plotly's own camera button on each figure saves the image."""
    with gr.Accordion("Take it away: download the result (JSON, CSV) and the Python that reproduces it", open=False,
                      elem_id=f"{name}-takeaway"):
        files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id=f"{name}-files")
        code = gr.Code(language="python", label="The same call in Python (your edits of this model included)",
                       interactive=False, elem_id=f"{name}-code")
    return files, code


def edit_method_choice(model: str):
    """The edit methods ``model`` offers (ROME only on a causal model), the reason shown where one is missing."""
    d = defaults_for(model)
    return gr.update(choices=list(d.edit_methods), value=d.edit_method, info=d.note or None)


def whole(value: Any, what: str) -> int:
    """A widget's number as an int, or one clear message (the HTTP API accepts any JSON)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{what} must be a whole number, not {value!r}", print_exception=False) from None
    if not math.isfinite(f) or f != int(f) or abs(f) > 1e9:
        raise gr.Error(f"{what} must be a whole number, not {value!r}", print_exception=False)
    return int(f)


def client_waiting() -> Callable[[], bool]:
    """Whether the browser tab (or API client) behind the Gradio event being handled still waits for it.

    When a tab closes, Gradio drops that session's events still in its own queue and marks those already
    handed to a thread not ``alive``; ``/cancel`` ends the event's task, which takes it off the queue's active
    jobs. A thread cannot be stopped, so the worker asks this while the request waits for its lane, and drops
    it instead of running it for nobody. (Reads Gradio's queue, ``Blocks._queue.active_jobs``: no public API
    says whether an event is still wanted; tests/app/test_context.py checks it against Gradio's behaviour.)
    Outside a Gradio event (CLI, tests calling a handler): always True."""
    from gradio.context import LocalContext
    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or event_id is None:
        return lambda: True

    def alive() -> bool:
        return any(e._id == event_id and e.alive for job in list(queue.active_jobs) if job for e in job)
    return alive


class Progress:
    """A tab's progress bar as a method's ``progress(fraction, what)`` callback, mapped onto ``[start, start +
    span]`` of the bar; it pickles (a lambda would not), so it reaches a request run in a ZeroGPU process,
    whose Gradio context sends each update back to the browser."""

    def __init__(self, bar: gr.Progress, start: float = 0.0, span: float = 1.0, desc: str | None = None):
        self.bar, self.start, self.span, self.desc = bar, start, span, desc

    def __call__(self, fraction: float, what: str = "") -> None:
        self.bar(self.start + self.span * fraction, desc=self.desc or what)
