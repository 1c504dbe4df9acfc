"""The same work runs once: every deterministic result kept under a key that says exactly what produced it.

Every method in knlab is deterministic given its inputs (its noise and its context templates are seeded), so
two identical requests have identical answers. Thirty students pressing the Lesson's buttons on the same model
ask the same questions in the same order; the first click computes, the others are served. A result is keyed by
everything it depends on (``request_key``):

- the model: its spec, the checksum of its base weights taken at load, the device and float kernels it computes
  with, the weights' dtype and the ``KNLAB_DTYPE`` in force;
- the session's edit specs of that model, in order (ROME's two vectors, a KN edit's neurons and words);
- the function (module and qualified name) and its arguments, keyword arguments included, except the progress
  callback (it changes how a run reports, never what it returns);
- the version of knlab's code and data (``code_version``): a digest of every source file of the layers that
  compute results (all but ``serve`` and ``app``, which only carry requests and draw results) and of the record
  the studies quote, and a digest of the function's own module (a few are the app's, such as the Attribute tab's
  ``shared_neurons``). Coarser than a version per method, and safe: a method's result depends on the modules
  below it too; and a change to the app's widgets does not throw away what the methods computed.

A value that cannot be put into words this way (an object with no canonical form) makes the request
uncacheable: it is computed, never keyed by a guess.

Where results are kept (``ResultCache``): in memory, bounded in bytes, least recently used first out; and on
disk under knlab's cache root (``results/``), bounded too, so that a restarted server, the CLI's next run or a
notebook find what was computed before. A value is kept pickled: each hit gets its own copy (a caller that
changes the result it was handed never changes another session's), and its size is known exactly.

Single flight: while a result is being computed, an identical request waits for that computation's result
instead of taking its turn to compute it again. A failure is never cached: waiters of a failed flight compute
for themselves (one of them leads the next flight), except that knlab's clear input errors, which any rerun
would raise again, are handed to them as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import pickle
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from knlab.core.errors import InputError, KnlabError, RequestDropped
from knlab.core.packaged import cache_root

log = logging.getLogger("knlab.serve")

MEMORY_ENV, DISK_ENV = "KNLAB_CACHE_MB", "KNLAB_CACHE_DISK_MB"
MEMORY_MB, DISK_MB = 256, 1024  # defaults: a lesson's results on the real model take ~1 MB (bench_class)
PROGRESS_ARGUMENTS = ("progress",)  # keyword arguments that report, never change, a result


class Uncacheable(Exception):
    """An argument has no canonical form: the request is computed, not keyed."""


_CODE_VERSION: str | None = None


CARRIERS = ("serve", "app")  # layers that carry requests and draw results, never compute one


def code_version() -> str:
    """A digest of every source file of the layers that compute results and of the record's files
    (``studies.record`` reads them: 5 MB, ~40 ms), taken once per process."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        package = Path(__file__).resolve().parents[1]
        records = package.parent / "assets" / "records"
        h = hashlib.sha256()
        for root, pattern in ((package, "*.py"), (records, "*.json")):
            for path in sorted(root.rglob(pattern)):
                if root is package and path.relative_to(root).parts[0] in CARRIERS:
                    continue
                h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
        _CODE_VERSION = h.hexdigest()[:16]
    return _CODE_VERSION


_MODULE_DIGESTS: dict[str, str] = {}


def module_digest(fn: Callable) -> str:
    """A digest of the source file of the module ``fn`` (or a bound method's function) is defined in."""
    module = getattr(getattr(fn, "__func__", fn), "__module__", None) or ""
    if module not in _MODULE_DIGESTS:
        path = getattr(sys.modules.get(module), "__file__", None)
        _MODULE_DIGESTS[module] = _digest(Path(path).read_bytes()) if path else module
    return _MODULE_DIGESTS[module]


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def canonical(x: Any) -> Any:
    """``x`` as JSON-able data that two equal arguments share and two different ones never do: types are named
    (a tuple is not a list, 1 is not 1.0 is not True), floats exactly (``float.hex``), arrays and tensors by
    dtype, shape and a digest of their bytes, functions by module and qualified name, dataclasses by type and
    fields. ``Uncacheable`` for anything else."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return {"int": str(x)}
    if isinstance(x, float):
        return {"float": x.hex() if math.isfinite(x) else repr(x)}
    if isinstance(x, (tuple, list)):
        if x and all(type(v) is float for v in x):  # an edit's vectors: thousands of floats, digested
            return {type(x).__name__: canonical(np.asarray(x, dtype=np.float64))}
        return {type(x).__name__: [canonical(v) for v in x]}
    if isinstance(x, dict):
        if not all(isinstance(k, str) for k in x):
            raise Uncacheable("a dict with keys that are not strings")
        return {"dict": [[k, canonical(x[k])] for k in sorted(x)]}
    if isinstance(x, np.generic):
        return canonical(x.item())
    if isinstance(x, np.ndarray):
        a = np.ascontiguousarray(x)
        return {"ndarray": [str(a.dtype), list(a.shape), _digest(a.tobytes())]}
    if isinstance(x, torch.Tensor):
        t = x.detach().contiguous().cpu()
        return {"tensor": [str(t.dtype), list(t.shape), _digest(t.view(torch.uint8).numpy().tobytes())]}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"dataclass": f"{type(x).__module__}.{type(x).__qualname__}",
                "fields": [[f.name, canonical(getattr(x, f.name))] for f in dataclasses.fields(x)]}
    if hasattr(x, "__self__") and hasattr(x, "__func__"):  # a bound method: its object and its function
        return {"method": [canonical(x.__self__), canonical(x.__func__)]}
    if callable(x) and getattr(x, "__module__", None) and getattr(x, "__qualname__", None):
        if "<lambda>" in x.__qualname__ or "<locals>" in x.__qualname__:
            raise Uncacheable(f"{x.__qualname__} is not a module-level function")
        return {"function": f"{x.__module__}.{x.__qualname__}"}
    raise Uncacheable(f"no canonical form for a {type(x).__name__}")


def request_key(model: dict, edits: Iterable, fn: Callable, args: tuple, kwargs: dict) -> str | None:
    """The key of ``fn(lm, *args, **kwargs)`` on ``model`` (``ModelWorker.identity``) with ``edits`` applied, or
    None when an argument has no canonical form (``canonical``)."""
    try:
        parts = {"code": code_version(), "module": module_digest(fn), "model": canonical(model),
                 "edits": canonical(list(edits)), "fn": canonical(fn), "args": canonical(tuple(args)),
                 "kwargs": canonical({k: v for k, v in kwargs.items() if k not in PROGRESS_ARGUMENTS})}
    except Uncacheable as e:
        log.debug("uncacheable request: %s", e)
        return None
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Served:
    """A result and how it was served: computed for this request, or from the cache (``cached``), with when
    and in how long it was computed, and whether this request waited for an identical one (``coalesced``)."""

    value: Any
    cached: bool = False
    coalesced: bool = False
    computed_at: float = 0.0  # seconds since the epoch, when its computation ended
    seconds: float = 0.0  # how long that computation took
    key: str | None = None
    on: str = ""  # the model and device it was computed on (``ModelWorker.ask``)

    def note(self) -> str:
        """One line for where the result shows: empty when it was computed for this request."""
        if not (self.cached or self.coalesced):
            return ""
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.computed_at))
        how = "an identical request computed it at the same time" if self.coalesced else "served from the cache"
        on = f" on {self.on}" if self.on else ""
        return f"*{how}: computed{on} {when} in {self.seconds:.1f} s (same model, edits, inputs and code)*"


@dataclasses.dataclass
class _Flight:
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    served: Served | None = None
    error: BaseException | None = None


@dataclasses.dataclass
class CacheStats:
    hits: int = 0  # from memory or disk
    disk_hits: int = 0
    misses: int = 0  # computed
    coalesced: int = 0  # waited for an identical request's computation
    uncacheable: int = 0
    evicted: int = 0

    def hit_rate(self) -> float:
        asked = self.hits + self.misses + self.coalesced
        return (self.hits + self.coalesced) / asked if asked else 0.0


def _copy(value: Any) -> Any:
    """A copy of its own for each request served the same result (the value itself if it does not pickle)."""
    try:
        return pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001
        return value


class ResultCache:
    """Results by key, in memory (``memory_bytes``) and on disk under ``root`` (``disk_bytes``; 0 or no root:
    memory only), least recently used out first; identical requests in flight coalesce (``served``)."""

    def __init__(self, memory_bytes: int = MEMORY_MB << 20, disk_bytes: int = DISK_MB << 20,
                 root: Path | None = None):
        self.memory_bytes, self.disk_bytes = int(memory_bytes), int(disk_bytes)
        self.root = Path(root) if root is not None and disk_bytes > 0 else None
        self._memory: OrderedDict[str, tuple[bytes, float, float]] = OrderedDict()  # key -> (pickle, at, seconds)
        self._held = 0
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self.stats = CacheStats()

    @classmethod
    def from_env(cls) -> "ResultCache":
        """Bounds from ``KNLAB_CACHE_MB`` (memory) and ``KNLAB_CACHE_DISK_MB`` (disk; 0: memory only)."""
        def mb(name: str, default: int) -> int:
            raw = os.environ.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit():
                raise KnlabError(f"{name}={raw!r} is not a whole number of megabytes")
            return int(raw)
        return cls(mb(MEMORY_ENV, MEMORY_MB) << 20, mb(DISK_ENV, DISK_MB) << 20, cache_root() / "results")

    # -- memory and disk ---------------------------------------------------------------------------------
    def memory_used(self) -> int:
        with self._lock:
            return self._held

    def __len__(self) -> int:
        with self._lock:
            return len(self._memory)

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.pkl"

    def _remember(self, key: str, blob: bytes, at: float, seconds: float) -> None:
        """Into memory, newest last, evicting the least recently used beyond the bound (a value larger than the
        whole bound is kept on disk only). Call with the lock held."""
        if len(blob) > self.memory_bytes:
            return
        old = self._memory.pop(key, None)
        if old is not None:
            self._held -= len(old[0])
        self._memory[key] = (blob, at, seconds)
        self._held += len(blob)
        while self._held > self.memory_bytes:
            _, (gone, _, _) = self._memory.popitem(last=False)
            self._held -= len(gone)
            self.stats.evicted += 1

    def _from_disk(self, key: str) -> tuple[bytes, float, float] | None:
        if self.root is None:
            return None
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                at, seconds, blob = pickle.load(f)
            os.utime(path)  # recently used
            return blob, at, seconds
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - a damaged entry is a miss, and goes
            log.warning("dropping unreadable cache entry %s", path)
            path.unlink(missing_ok=True)
            return None

    def _to_disk(self, key: str, blob: bytes, at: float, seconds: float) -> None:
        if self.root is None or len(blob) > self.disk_bytes:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "wb") as f:
                pickle.dump((at, seconds, blob), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)  # whole or absent, never half-written
            self._trim_disk()
        except OSError as e:  # a full or read-only disk costs the disk cache, never the request
            log.warning("result not kept on disk: %s", e)

    def _trim_disk(self) -> None:
        """Oldest-used files out until the folder is within its bound."""
        assert self.root is not None
        files = []
        for p in self.root.glob("*/*.pkl"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files, key=lambda f: f[0]):
            if total <= self.disk_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size
            self.stats.evicted += 1

    def lookup(self, key: str) -> Served | None:
        """The kept result under ``key`` (a fresh copy), from memory or disk; None when there is none."""
        with self._lock:
            held = self._memory.get(key)
            if held is not None:
                self._memory.move_to_end(key)
        disk = False
        if held is None:
            held = self._from_disk(key)
            if held is None:
                return None
            disk = True
            with self._lock:
                self._remember(key, *held)
        blob, at, seconds = held
        try:
            value = pickle.loads(blob)
        except Exception:  # noqa: BLE001 - e.g. a class no longer importable: recompute
            self.forget(key)
            return None
        with self._lock:
            self.stats.hits += 1
            self.stats.disk_hits += disk
        return Served(value, cached=True, computed_at=at, seconds=seconds, key=key)

    def keep(self, key: str, value: Any, seconds: float, at: float | None = None) -> bool:
        """Keep ``value`` under ``key``; False when it does not pickle (then it is simply not kept)."""
        try:
            blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001
            return False
        at = time.time() if at is None else at
        with self._lock:
            self._remember(key, blob, at, seconds)
        self._to_disk(key, blob, at, seconds)
        return True

    def forget(self, key: str) -> None:
        with self._lock:
            old = self._memory.pop(key, None)
            if old is not None:
                self._held -= len(old[0])
        if self.root is not None:
            self._path(key).unlink(missing_ok=True)

    # -- single flight -------------------------------------------------------------------------------------
    def served(self, key: str | None, compute: Callable[[], Any],
               wanted: Callable[[], bool] | None = None, poll: float = 0.1) -> Served:
        """``compute()``'s result under ``key``: kept, or computed once for every identical request that arrives
        while it runs. ``key`` None: computed, not kept. ``wanted()`` False while waiting for another request's
        computation: ``RequestDropped``, as a request waiting for its lane is."""
        if key is None:
            with self._lock:
                self.stats.uncacheable += 1
            t0 = time.perf_counter()
            value = compute()
            return Served(value, seconds=time.perf_counter() - t0, computed_at=time.time())
        while True:
            hit = self.lookup(key)
            if hit is not None:
                return hit
            with self._lock:
                flight = self._flights.get(key)
                leader = flight is None
                if leader:
                    flight = self._flights[key] = _Flight()
            if leader:
                return self._lead(key, flight, compute)
            while not flight.done.wait(poll):
                if wanted is not None and not wanted():
                    raise RequestDropped("the request was cancelled before it ran")
            if flight.served is not None:
                with self._lock:
                    self.stats.coalesced += 1
                return dataclasses.replace(flight.served, value=_copy(flight.served.value), cached=False,
                                           coalesced=True)
            if isinstance(flight.error, InputError):
                raise flight.error
            # the leader failed otherwise (cancelled, a bug): try again, possibly leading the next flight

    def _lead(self, key: str, flight: _Flight, compute: Callable[[], Any]) -> Served:
        try:
            t0 = time.perf_counter()
            value = compute()
            seconds = time.perf_counter() - t0
            flight.served = Served(value, computed_at=time.time(), seconds=seconds, key=key)
            self.keep(key, value, seconds, flight.served.computed_at)
            with self._lock:
                self.stats.misses += 1
            return flight.served
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    def report(self) -> dict:
        """For /status and the benchmarks: entries, bytes held, bounds, hits, misses, coalesced, hit rate."""
        with self._lock:
            s = dataclasses.asdict(self.stats)
            return {"entries": len(self._memory), "memory_bytes": self._held, "memory_bound": self.memory_bytes,
                    "disk_bound": self.disk_bytes if self.root is not None else 0, **s,
                    "hit_rate": round(self.stats.hit_rate(), 4)}
