"""The model worker: loads each model once per process and serves every user's request on it, a lane per
kind of request, so that nobody waits behind somebody else's long job.

A request is (model spec, that session's edit specs, the question). The user's edits are applied only
for the duration of the request and the base weights are then restored and verified bit for bit: the
worker snapshots every parameter an edit says it touches, copies the snapshot back afterwards and
compares checksums (``core.specs.applied``). Hook-based edits (knowledge-neuron suppression) never touch
weights at all. A mismatch drops that copy of the model (the next request on it reloads it from disk and
checks it against the checksum taken at first load) and the request fails with ``WeightsCorrupted``.

Why lanes, and why a second copy of the weights. A request runs on weights that it changes in place
(the session's ROME edits, an edit under evaluation), so two requests can never share one copy at the
same time: each copy has its own lock. With one lock for everything, a one-token /predict (0.15 s) took
6.1 s while another session's ROME edit of a *different* model ran, and queued behind every edit, trace,
IG run, evaluation and claim before it. Hence:

- a lock per model: models share no weights, so they never wait for each other;
- two copies of each model, two lanes: ``INTERACTIVE`` (predict, the trace's first-order preview: well
  under a second) and ``LONG`` (edits, traces, attribution, evaluations, claims; the default, so that a
  job nobody classified can never hold up the interactive lane). A short request waits only for other
  short requests. Measured over HTTP on 2 cores (``python benchmarks/bench_load.py --seconds 0``): a
  world-gpt /predict while another client's smollm2-135m ROME /edit ran took 5.12 s against 0.25 s alone
  (20.7x: it waited for the edit) with one lock; with these lanes 0.27 s against 0.24 s (1.1x), and a
  smollm2-135m /predict during a smollm2-135m edit 0.50 s against 0.47 s (1.1x, its interactive lane);
  with 8 clients each editing smollm2-135m (``bench_load.py --model smollm2-135m --kn-share 0``), /predict
  p95 2.7-4.9 s over three runs against 123-142 s with one lock (/edit p50 96-130 s against 103-111 s the
  same afternoon, the edits now sharing the cores with the predictions that used to wait). Edits of one
  model still take turns on its long lane; a second long copy would not shorten that queue on 2 cores (two
  ROME edits in two threads: 13.9 s, one after the other: 14.6 s).
  The alternatives are worse or cost more: a priority queue still waits for the long job already
  running (the whole edit: ~1 s on world-gpt, 10-15 s on smollm2-135m); long jobs yielding between
  steps would need every method cut into resumable steps, each re-applying and restoring the session's
  edits. A copy costs its weights once (13 MB for world-gpt, 540 MB for smollm2-135m) and ~1 s to make.
- the tokens preview and /status never wait for a model job: the preview reads a private copy of the
  tokenizer (a fast tokenizer's padding state is not safe to share between threads), and /status reports
  each copy's checksum as last verified: the long lane checksums all its weights after every request
  (0.5 s on smollm2-135m on 2 threads, next to a job of many seconds); an idle lane is checksummed by
  /status itself, a busy one reports its last verified checksum and says it is busy.
- a request whose client went away while it waited for its lane is dropped, not run (``wanted``): Gradio
  drops an event still in its own queue when the browser tab closes, but one already handed to a thread
  waits here, on the lane's lock.

On Hugging Face ZeroGPU the request function is what ``spaces.GPU`` wraps, so nothing here relies on
state left on the GPU between calls.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch

from knlab.core.errors import KnlabError
from knlab.core.models import LM, load_model, weights_checksum
from knlab.core.specs import EditSpec, WeightsCorrupted, applied  # noqa: F401  (re-exported)

T = TypeVar("T")

INTERACTIVE = "interactive"
LONG = "long"
LANES = (INTERACTIVE, LONG)


class RequestDropped(KnlabError):
    """Its client went away while the request waited for the model: it was never run."""


def gpu(fn: Callable[..., T]) -> Callable[..., T]:
    """``spaces.GPU`` on Hugging Face ZeroGPU, a no-op elsewhere."""
    try:
        import spaces  # type: ignore
    except Exception:
        return fn
    return spaces.GPU(fn)


@dataclasses.dataclass
class Lane:
    """One copy of a model's weights and the lock that lets one request at a time change them."""

    lm: LM | None  # None after a failed restore: the next request reloads it
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    checksum: str | None = None  # of every weight, as last verified (at load, after a long job, by /status)
    verified_after: int = 0  # how many requests this copy had served when ``checksum`` was taken
    served: int = 0


class ModelWorker:
    def __init__(self, device: str | None = None):
        self.device = device
        self._lanes: dict[tuple[str, str], Lane] = {}  # (spec, lane) -> its copy
        self._tokenizers: dict[str, tuple[LM, threading.Lock]] = {}  # spec -> weightless LM, its lock
        self._loading: dict[str, threading.Lock] = {}  # spec -> held while that model loads
        self._registry = threading.Lock()  # guards the dicts above; never held while loading or running
        self.base_checksums: dict[str, str] = {}  # spec -> checksum of all weights when loaded

    @property
    def requests_served(self) -> int:
        with self._registry:
            return sum(lane.served for lane in self._lanes.values())

    def _register(self, lm: LM) -> None:
        """The loaded ``lm`` becomes the long lane; a copy the interactive lane; a copy of its tokenizer,
        on no weights, the preview's."""
        base = weights_checksum(lm.model)
        twin = copy.deepcopy(lm)
        tokenizer_only = dataclasses.replace(lm, model=None, tokenizer=copy.deepcopy(lm.tokenizer))
        with self._registry:
            self.base_checksums[lm.spec] = base
            self._lanes[(lm.spec, LONG)] = Lane(lm, checksum=base)
            self._lanes[(lm.spec, INTERACTIVE)] = Lane(twin, checksum=base)
            self._tokenizers[lm.spec] = (tokenizer_only, threading.Lock())

    def _ensure_loaded(self, spec: str) -> None:
        with self._registry:
            if spec in self._tokenizers:
                return
            loading = self._loading.setdefault(spec, threading.Lock())
        with loading:  # one load per model; other models are served meanwhile
            with self._registry:
                if spec in self._tokenizers:
                    return
            self._register(load_model(spec, device=self.device))

    def _lane(self, spec: str, lane: str) -> Lane:
        if lane not in LANES:
            raise ValueError(f"no lane {lane!r}; lanes: {', '.join(LANES)}")
        self._ensure_loaded(spec)
        with self._registry:
            return self._lanes[(spec, lane)]

    def add_model(self, lm: LM) -> None:
        """Register an already-loaded model under its spec (tests, notebooks); the worker keeps ``lm`` itself
        as the long lane's copy."""
        self._register(lm)

    @contextmanager
    def tokenizing(self, spec: str) -> Iterator[LM]:
        """``spec`` for what needs only its tokenizer and architecture (the tokens preview): never waits for a
        request (its ``model`` is None: nothing here may run the model)."""
        self._ensure_loaded(spec)
        with self._registry:
            lm, lock = self._tokenizers[spec]
        with lock:
            yield lm

    def status(self) -> dict:
        """Every loaded model's checksum now or as last verified, against the one at load (equal, always).
        Never waits: an idle lane is checksummed now, a busy one reports its checksum after its last job."""
        with self._registry:
            lanes = dict(self._lanes)
            base = dict(self.base_checksums)
        models: dict[str, dict] = {}
        for (spec, name), lane in sorted(lanes.items()):
            idle = lane.lock.acquire(blocking=False)
            if idle:
                try:
                    if lane.lm is not None and lane.verified_after < lane.served:
                        lane.checksum, lane.verified_after = weights_checksum(lane.lm.model), lane.served
                finally:
                    lane.lock.release()
            m = models.setdefault(spec, {"base": base[spec], "lanes": {}})
            m["lanes"][name] = {"checksum": lane.checksum, "verified_after_request": lane.verified_after,
                                "requests": lane.served, "busy": not idle}
        for m in models.values():
            sums = [lane["checksum"] for lane in m["lanes"].values()]
            m["unchanged"] = all(s == m["base"] for s in sums)
            m["checksum"] = next((s for s in sums if s != m["base"]), m["base"])  # a differing one, if any
        return {"requests_served": sum(lane.served for lane in lanes.values()), "models": models}

    def run(self, spec: str, edits: Iterable[EditSpec], fn: Callable[..., T], *args: Any, lane: str = LONG,
            wanted: Callable[[], bool] | None = None, **kwargs: Any) -> T:
        """``fn(lm, *args, **kwargs)`` on ``spec``'s copy for ``lane`` with ``edits`` applied, then restored and
        verified. ``wanted()``, asked while the request waits for its lane: False drops it (``RequestDropped``)."""
        held = self._lane(spec, lane)
        _acquire(held.lock, wanted)
        try:
            if held.lm is None:  # its last restore failed: a fresh copy, checked against the first load
                fresh = load_model(spec, device=self.device)
                if weights_checksum(fresh.model) != self.base_checksums[spec]:
                    raise WeightsCorrupted(f"{spec} reloaded with other weights than it first had")
                held.lm = fresh
            held.served += 1
            try:
                with applied(held.lm, edits), torch.enable_grad():
                    return fn(held.lm, *args, **kwargs)
            except WeightsCorrupted:
                held.lm, held.checksum = None, None  # never serve from a drifted copy
                raise
            finally:
                if lane == LONG and held.lm is not None:  # what a long job touched beyond its edits' parameters
                    held.checksum, held.verified_after = weights_checksum(held.lm.model), held.served
                    if held.checksum != self.base_checksums[spec]:
                        held.lm = None
                        raise WeightsCorrupted(f"base weights of {spec} changed by the request; reloading them")
        finally:
            held.lock.release()


def _acquire(lock: threading.Lock, wanted: Callable[[], bool] | None, poll: float = 0.1) -> None:
    if wanted is None:
        lock.acquire()
        return
    while not lock.acquire(timeout=poll):
        if not wanted():
            raise RequestDropped("the request was cancelled before it ran")
    if not wanted():  # gone just as the lane came free
        lock.release()
        raise RequestDropped("the request was cancelled before it ran")


_DEFAULT: ModelWorker | None = None


def default_worker() -> ModelWorker:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ModelWorker()
    return _DEFAULT
