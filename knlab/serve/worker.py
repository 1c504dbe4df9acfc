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

Where each part lives when requests cross a process boundary (Hugging Face ZeroGPU: ``knlab.serve.dispatch``
sends each request to a forked GPU process, pickled in and out). In the *main process*: the sessions and their
edit lists (``serve.hosting``), the check that a client still waits (asked once, before the request is sent:
Gradio's queue exists only there), the tokens preview (a tokenizer and the architecture entry, never the
weights: ``tokenizing``) and the models themselves, loaded once at start-up in the main thread (``preload``) so
that ZeroGPU can pack their weights; their base checksums are taken there, on the CPU, before the weights are
placed on the device. In the *GPU process*: the lanes, the session's edits applied and undone, the checksummed
restore. A forked process inherits the worker's memory; its locks are made anew (another thread of the main
process may have held one at the fork) and each lane's weights are checksummed against the base before the
first request it serves there (``_forked``), so a copy the main process left mid-request is never served. The
long lane's checksum after each request travels back with the answer (``status`` reports it: the main
process never reads weights that ZeroGPU has packed). One copy per model there, never two: ZeroGPU runs
concurrent requests in separate processes, each on its own copy, so the interactive lane's second copy would
only double the GPU memory (``second_copy``).

A second copy on a GPU box (not ZeroGPU) is kept where the device's free memory holds it twice over
(``KNLAB_SECOND_COPY``: ``auto``, ``1``, ``0``): its worth is the interactive lane's, measured above on CPU;
no GPU machine has measured it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch

from knlab.core.errors import KnlabError, RequestDropped
from knlab.core.dtype import ENV as DTYPE_ENV
from knlab.core.models import LM, kernels, load_model, load_tokenizer, place_checked, weights_checksum
from knlab.core.packaged import cache_root
from knlab.core.specs import EditSpec, WeightsCorrupted, applied  # noqa: F401  (re-exported)
from knlab.serve.result_cache import ResultCache, Served, request_key

T = TypeVar("T")

INTERACTIVE = "interactive"
LONG = "long"
LANES = (INTERACTIVE, LONG)


@dataclasses.dataclass
class Lane:
    """One copy of a model's weights and the lock that lets one request at a time change them."""

    lm: LM | None  # None after a failed restore: the next request reloads it
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    checksum: str | None = None  # of every weight, as last verified (at load, after a long job, by /status)
    verified_after: int = 0  # how many requests this copy had served when ``checksum`` was taken
    served: int = 0
    check_first: bool = False  # in a forked process: checksum every weight before serving from this copy


SECOND_COPY_ENV = "KNLAB_SECOND_COPY"
DEVICE_MAP_ENV = "KNLAB_DEVICE_MAP"
_NAMES = itertools.count(1)
_WORKERS: "weakref.WeakValueDictionary[str, ModelWorker]" = weakref.WeakValueDictionary()


def named_worker(name: str) -> "ModelWorker":
    """The worker registered under ``name`` in this process: how a request that crossed a process boundary
    finds its models (a forked process holds the same workers, under the same names)."""
    try:
        return _WORKERS[name]
    except KeyError:
        raise KnlabError(f"no model worker named {name!r} in this process") from None


def second_copy_wanted(device: str, model_bytes: int, choice: str | None = None) -> bool:
    """Whether the interactive lane gets its own copy of a model of ``model_bytes`` on ``device``:
    ``KNLAB_SECOND_COPY`` 1 / 0, or ``auto`` (the default): always on a CPU (host memory; measured worth in the
    module's docstring), on a GPU only where its free memory holds the model twice over beside what it has."""
    choice = (choice if choice is not None else os.environ.get(SECOND_COPY_ENV, "auto")).strip().lower()
    if choice in ("1", "true", "yes", "on"):
        return True
    if choice in ("0", "false", "no", "off"):
        return False
    if choice != "auto":
        raise KnlabError(f"{SECOND_COPY_ENV} is auto, 1 or 0, not {choice!r}")
    if torch.device(device).type != "cuda":
        return torch.device(device).type == "cpu"
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return free > 2 * model_bytes


class ModelWorker:
    """``device``: where models are placed (default: CUDA where there is one). ``second_copy``: whether each
    model's interactive lane gets its own copy (default: ``second_copy_wanted``); without one, both lanes share
    one copy and its lock. ``name``: how a request from another process finds this worker (``named_worker``).
    ``cache``: where ``ask`` keeps deterministic results (None: every request computes; ``serve.result_cache``)."""

    def __init__(self, device: str | None = None, second_copy: bool | None = None, name: str | None = None,
                 cache: ResultCache | None = None):
        self.device = device
        self.second_copy = second_copy
        self.cache = cache
        self.name = name or f"worker-{next(_NAMES)}"
        self._lanes: dict[tuple[str, str], Lane] = {}  # (spec, lane) -> its copy
        self._tokenizers: dict[str, tuple[LM, threading.Lock]] = {}  # spec -> weightless LM, its lock
        self._loading: dict[str, threading.Lock] = {}  # spec -> held while that model loads
        self._registry = threading.Lock()  # guards the dicts above; never held while loading or running
        self.base_checksums: dict[str, str] = {}  # spec -> checksum of all weights when loaded
        self.remote = False  # requests run in other processes (ZeroGPU): never read the weights here
        _WORKERS[self.name] = self  # a later worker of the same name (a new default) takes the name over

    @property
    def requests_served(self) -> int:
        with self._registry:
            return sum(lane.served for lane in {id(lane): lane for lane in self._lanes.values()}.values())

    def _register(self, lm: LM, base: str | None = None) -> None:
        """The loaded ``lm`` becomes the long lane; a copy the interactive lane (or the same copy, without a
        second one); a copy of its tokenizer, on no weights, the preview's. ``base``: its checksum, where it
        was taken before the weights were placed on their device."""
        base = base or weights_checksum(lm.model)
        device = str(lm.device)
        size = sum(t.nbytes for t in lm.model.state_dict().values())
        second = self.second_copy if self.second_copy is not None else second_copy_wanted(device, size)
        long = Lane(lm, checksum=base)
        interactive = Lane(copy.deepcopy(lm), checksum=base) if second else long
        tokenizer_only = dataclasses.replace(lm, model=None, tokenizer=copy.deepcopy(lm.tokenizer))
        with self._registry:
            self.base_checksums[lm.spec] = base
            self._lanes[(lm.spec, LONG)] = long
            self._lanes[(lm.spec, INTERACTIVE)] = interactive
            self._tokenizers[lm.spec] = (tokenizer_only, threading.Lock())

    def _load(self, spec: str) -> None:
        """Load ``spec`` on the CPU, take its base checksum there, then place it on the worker's device; with
        ``KNLAB_DEVICE_MAP`` (``auto``), spread it over the devices by accelerate instead (a model larger than
        one device; its offloaded weights are read, edited and restored through accelerate's hooks), one copy."""
        if os.environ.get(DEVICE_MAP_ENV, "").strip():
            offload = cache_root() / "offload" / spec.replace("/", "--")
            lm = load_model(spec, device_map=os.environ[DEVICE_MAP_ENV].strip(), offload_folder=str(offload))
            self.second_copy = False
            self._register(lm)
            return
        lm = load_model(spec, device="cpu")
        base = place_checked(lm, self.device)
        self._register(lm, base)

    def _ensure_loaded(self, spec: str) -> None:
        with self._registry:
            if (spec, LONG) in self._lanes:
                return
            loading = self._loading.setdefault(spec, threading.Lock())
        with loading:  # one load per model; other models are served meanwhile
            with self._registry:
                if (spec, LONG) in self._lanes:
                    return
            self._load(spec)

    def preload(self, specs: Iterable[str]) -> None:
        """Load ``specs`` now, in this thread: on ZeroGPU the main thread at start-up, where its emulated CUDA
        packs the weights for the GPU processes (``knlab.serve.dispatch``)."""
        for spec in specs:
            self._ensure_loaded(spec)

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
        request and never touches a device. A model not loaded yet lends only its tokenizer and config (its
        ``model`` is None: nothing here may run the model)."""
        with self._registry:
            known = self._tokenizers.get(spec)
        if known is None:
            with self._registry:
                loading = self._loading.setdefault(f"tokenizer:{spec}", threading.Lock())
            with loading:
                with self._registry:
                    known = self._tokenizers.get(spec)
                if known is None:
                    known = (load_tokenizer(spec), threading.Lock())
                    with self._registry:
                        known = self._tokenizers.setdefault(spec, known)
        lm, lock = known
        with lock:
            yield lm

    def status(self) -> dict:
        """Every loaded model's checksum now or as last verified, against the one at load (equal, always).
        Never waits: an idle lane is checksummed now, a busy one reports its checksum after its last job.
        With requests served in other processes (``remote``), each lane's checksum is the one its last request
        there took, sent back with the answer (``note_verified``): the weights here are never read."""
        with self._registry:
            lanes = dict(self._lanes)
            base = dict(self.base_checksums)
        models: dict[str, dict] = {}
        for (spec, name), lane in sorted(lanes.items()):
            idle = lane.lock.acquire(blocking=False)
            if idle:
                try:
                    if not self.remote and lane.lm is not None and lane.verified_after < lane.served:
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
        copies = {id(lane): lane for lane in lanes.values()}.values()  # a shared copy once
        return {"requests_served": sum(lane.served for lane in copies), "models": models,
                "in_gpu_processes": self.remote, "cache": self.cache.report() if self.cache is not None else None}

    def verified(self, spec: str, lane: str) -> dict:
        """What a request leaves for ``status`` in the process that sent it: its lane's checksum as last taken."""
        held = self._lane(spec, lane)
        return {"checksum": held.checksum, "served": held.served}

    def note_verified(self, spec: str, lane: str, report: dict) -> None:
        """A lane's checksum after a request served in another process (``verified`` there)."""
        self.remote = True
        held = self._lane(spec, lane)
        held.served += 1
        if report.get("checksum") is not None:
            held.checksum, held.verified_after = report["checksum"], held.served

    def _forked(self) -> None:
        """In a process forked from this one: fresh locks (a thread of the parent may have held one at the
        fork), and every copy checksummed before it serves here (the parent may have been mid-request)."""
        self._registry = threading.Lock()
        self._loading = {}
        self._tokenizers = {s: (lm, threading.Lock()) for s, (lm, _) in self._tokenizers.items()}
        for lane in {id(lane): lane for lane in self._lanes.values()}.values():
            lane.lock = threading.Lock()
            lane.check_first = lane.lm is not None

    def identity(self, spec: str) -> dict:
        """What a result computed on ``spec`` here depends on besides the request: its base weights (checksum at
        load), where and with which float kernels and dtypes it computes. Part of every result's cache key."""
        self._ensure_loaded(spec)
        with self._registry:
            lm = self._lanes[(spec, LONG)].lm
            base = self.base_checksums[spec]
        device = str(lm.device) if lm is not None else str(self.device)
        return {"spec": spec, "weights": base, "device": device, "kernels": kernels(device),
                "weights_dtype": str(lm.model.dtype) if lm is not None else "", "dtype": os.environ.get(DTYPE_ENV, "")}

    def peek(self, spec: str, edits: Iterable[EditSpec], fn: Callable[..., T], *args: Any, **kwargs: Any) -> Served | None:
        """What ``ask`` would serve from the cache, or None (also when ``spec`` is not loaded yet): never computes,
        never loads a model, never waits. A page opening shows its examples' results this way."""
        with self._registry:
            loaded = (spec, LONG) in self._lanes
        if self.cache is None or not loaded:
            return None
        identity = self.identity(spec)
        key = request_key(identity, list(edits), fn, args, kwargs)
        served = self.cache.lookup(key) if key is not None else None
        return _computed_on(served, identity) if served is not None else None

    def ask(self, spec: str, edits: Iterable[EditSpec], fn: Callable[..., T], *args: Any, lane: str = LONG,
            wanted: Callable[[], bool] | None = None, compute: Callable[[], T] | None = None, **kwargs: Any) -> Served:
        """``run``'s result as a ``Served``: from the cache when this model, these edits, this function, these
        arguments and this code computed it before, else computed (once for every identical request arriving
        meanwhile) and kept. ``compute``: how to compute it when it must be (default: ``run`` here; the app on
        ZeroGPU sends it to a GPU process). Without a cache, always computed."""
        edits = list(edits)
        compute = compute or (lambda: self.run(spec, edits, fn, *args, lane=lane, wanted=wanted, **kwargs))
        if self.cache is None:
            return Served(compute())
        identity = self.identity(spec)
        return _computed_on(self.cache.served(request_key(identity, edits, fn, args, kwargs), compute, wanted), identity)

    def run(self, spec: str, edits: Iterable[EditSpec], fn: Callable[..., T], *args: Any, lane: str = LONG,
            wanted: Callable[[], bool] | None = None, **kwargs: Any) -> T:
        """``fn(lm, *args, **kwargs)`` on ``spec``'s copy for ``lane`` with ``edits`` applied, then restored and
        verified. ``wanted()``, asked while the request waits for its lane: False drops it (``RequestDropped``)."""
        held = self._lane(spec, lane)
        _acquire(held.lock, wanted)
        try:
            if held.check_first:  # first request in a forked process
                held.check_first = False
                held.checksum, held.verified_after = weights_checksum(held.lm.model), held.served
                if held.checksum != self.base_checksums[spec]:
                    held.lm = None
            if held.lm is None:  # its last restore failed: a fresh copy, checked against the first load
                fresh = load_model(spec, device="cpu")
                if place_checked(fresh, self.device) != self.base_checksums[spec]:
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


def _computed_on(served: Served, identity: dict) -> Served:
    """``served`` naming the model and device it was computed on (``identity``), for its note."""
    return dataclasses.replace(served, on=f"{identity['spec']} ({identity['device']})")


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
        _DEFAULT = ModelWorker(name="default", cache=ResultCache.from_env())
    return _DEFAULT


def _after_fork_in_child() -> None:
    """A forked process computes on one CPU thread: GNU OpenMP's thread pool does not survive a fork, and a
    child whose parent had run a parallel region hangs in its first one (seen: a layer norm, forever). On
    ZeroGPU the child computes on the GPU, where one CPU thread costs little."""
    torch.set_num_threads(1)
    for worker in list(_WORKERS.values()):
        worker._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
