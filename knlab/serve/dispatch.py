"""A model request sent to where the model runs: this process, or a GPU process on Hugging Face ZeroGPU.

ZeroGPU's contract (the ``spaces`` package, ``spaces/zero/wrappers.py``): ``spaces.GPU`` runs the function it
decorates in a process forked from the app's, pickling the arguments in and the result (or the exception)
back; CUDA exists only in that process; an exception that is not a ``gr.Error`` comes back as a ``gr.Error``
carrying only its class name; a call may use the GPU for ``duration`` seconds. So what crosses is plain data:

- a ``ModelRequest``: the worker's *name* (the forked process holds the same workers: ``named_worker``), the
  model spec, the session's edit specs (dataclasses of a few kilobytes), a module-level function (pickled by
  reference) and its arguments, the lane, and the kind of request, which sets its GPU ``duration``;
- back, an ``Answered``: the function's result (dataclasses of numpy arrays) and the lane's checksum as the GPU
  process last verified it, for ``/status`` here.

knlab's clear errors become a ``gr.Error`` with their one-line message inside the GPU process
(``ui_error``), so they cross as they are; anything else becomes the same one line the app shows for a bug,
with the traceback logged where it happened. Whether the client still waits is asked here, once, before the
request leaves (Gradio's queue lives in this process); a request that runs in this process also asks while it
waits for its lane. ``serve.worker``'s docstring says which part of the worker lives in which process.

Outside ZeroGPU (``spaces`` absent, or ``SPACES_ZERO_GPU`` unset) ``on_gpu`` is ``answer`` itself: the same
path, in this process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable

from knlab.core.errors import InputError, KnlabError, RequestDropped
from knlab.serve.result_cache import Served
from knlab.serve.worker import LONG, named_worker

log = logging.getLogger("knlab.serve")

DURATIONS_ENV = "KNLAB_GPU_SECONDS"
# How long each kind of request may hold a ZeroGPU GPU, in seconds (ZeroGPU's default is 60): a prediction or
# the trace's preview is well under a second on a GPU; an edit (the real model's first one also computes its
# key covariance), a trace, attribution or an evaluation runs for seconds to a minute; a claim of the paper on
# one model for minutes. ``KNLAB_GPU_SECONDS="predict=20,long=120,study=300"`` sets them.
DURATIONS = {"predict": 20, "long": 120, "study": 300}


def durations() -> dict[str, int]:
    """``DURATIONS`` with ``KNLAB_GPU_SECONDS`` applied; one clear error for a malformed setting."""
    out = dict(DURATIONS)
    for part in filter(None, (p.strip() for p in os.environ.get(DURATIONS_ENV, "").split(","))):
        kind, _, seconds = part.partition("=")
        kind = kind.strip()
        if kind not in DURATIONS or not seconds.strip().isdigit() or int(seconds) < 1:
            raise InputError(f"{DURATIONS_ENV}: {part!r} is not KIND=SECONDS with KIND one of "
                             f"{', '.join(DURATIONS)}")
        out[kind] = int(seconds)
    return out


@dataclasses.dataclass(frozen=True)
class ModelRequest:
    """One request to a model, as plain data that pickles: ``fn(lm, *args, **kwargs)`` on ``model`` with
    ``edits`` applied, on the worker named ``worker``, in ``lane``. ``kind`` (a key of ``DURATIONS``) says
    how long it may hold a GPU; ``unchanged`` what a failure leaves alone, for its message; ``cached`` False for
    a request whose answer must be computed anew (every method in knlab is deterministic, so none of knlab's
    own needs it)."""

    worker: str
    model: str
    edits: tuple
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    lane: str = LONG
    kind: str = "long"
    unchanged: str = "the model is unchanged"
    cached: bool = True  # served from the worker's result cache when it holds the answer (``serve.result_cache``)


@dataclasses.dataclass(frozen=True)
class Answered:
    """What comes back: the result, and the lane's checksum after the request as the process that ran it took
    it (``ModelWorker.verified``)."""

    value: Any
    verified: dict


def gpu_seconds(request: ModelRequest) -> int:
    """The request's ZeroGPU ``duration``: spaces calls it with the decorated function's arguments."""
    return durations().get(request.kind, DURATIONS["long"])


def ui_error(e: BaseException, unchanged: str) -> Exception:
    """The one line a user sees for ``e``, as a ``gr.Error`` (which ZeroGPU sends back as it is): knlab's
    own message, or for a bug its class name and what it left alone (the traceback logged here)."""
    import gradio as gr
    if isinstance(e, gr.Error):
        return e
    if isinstance(e, KnlabError):
        return gr.Error(str(e), print_exception=False)
    log.error("request failed", exc_info=(type(e), e, e.__traceback__))
    return gr.Error(f"internal error ({type(e).__name__}); {unchanged}", print_exception=False)


def answer(request: ModelRequest, wanted: Callable[[], bool] | None = None) -> Answered:
    """Run ``request`` in this process (on ZeroGPU: the GPU process). ``wanted``: asked while it waits for its
    lane (only where it runs in the process that received it)."""
    worker = named_worker(request.worker)
    try:
        value = worker.run(request.model, list(request.edits), request.fn, *request.args, lane=request.lane,
                           wanted=wanted, **request.kwargs)
        return Answered(value, worker.verified(request.model, request.lane))
    except Exception as e:
        raise ui_error(e, request.unchanged) from None


def zero_gpu() -> bool:
    """Whether this process is the main process of a ZeroGPU Space (``spaces`` installed and enabled)."""
    try:
        from spaces.config import Config  # type: ignore
    except Exception:  # not on a Space: spaces is optional
        return False
    return bool(Config.zero_gpu)


def _on_gpu() -> Callable[[ModelRequest], Answered]:
    if not zero_gpu():
        return answer
    try:
        import spaces  # type: ignore
    except Exception:  # zero_gpu() read its config, so it imports; this keeps it optional to the import scan
        return answer
    return spaces.GPU(answer, duration=gpu_seconds)


# decorated at import, in the main process, before the app launches: ZeroGPU registers its GPU functions then
on_gpu: Callable[[ModelRequest], Answered] = _on_gpu()


def send(request: ModelRequest, wanted: Callable[[], bool] | None = None) -> Served:
    """``request``'s result, run where the model runs, as a ``Served``: from the worker's result cache when an
    identical request was answered before (``request.cached``), else computed there (its lane's checksum noted
    on the worker here when it ran elsewhere). The cache lives in this process, so a request served from it never
    waits for a GPU. Errors arrive as ``gr.Error`` with their one line (``ui_error``)."""
    worker = named_worker(request.worker)

    def compute() -> Any:
        if on_gpu is answer:
            return answer(request, wanted).value
        if wanted is not None and not wanted():
            raise ui_error(RequestDropped("the request was cancelled before it ran"), request.unchanged)
        answered = on_gpu(request)
        worker.note_verified(request.model, request.lane, answered.verified)
        return answered.value

    if not request.cached:
        return Served(compute())
    try:
        return worker.ask(request.model, request.edits, request.fn, *request.args, compute=compute, wanted=wanted,
                          **request.kwargs)
    except Exception as e:  # the model's identity (its first load) or the wait for an identical request
        raise ui_error(e, request.unchanged) from None
