"""The model worker: loads each model once per process and serves every user's request under one lock.

A request is (model spec, that session's edit specs, the question). The user's edits are applied only
for the duration of the request and the base weights are then restored and verified bit for bit: the
worker snapshots every parameter an edit says it touches, copies the snapshot back afterwards and
compares checksums. Hook-based edits (knowledge-neuron suppression) never touch weights at all.
On Hugging Face ZeroGPU the request function is what ``spaces.GPU`` wraps, so nothing here relies on
state left on the GPU between calls.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, TypeVar

import torch

from knlab.core.models import LM, load_model, weights_checksum
from knlab.core.specs import EditSpec, WeightsCorrupted, applied  # noqa: F401  (re-exported)

T = TypeVar("T")


def gpu(fn: Callable[..., T]) -> Callable[..., T]:
    """``spaces.GPU`` on Hugging Face ZeroGPU, a no-op elsewhere."""
    try:
        import spaces  # type: ignore
    except Exception:
        return fn
    return spaces.GPU(fn)


class ModelWorker:
    def __init__(self, device: str | None = None):
        self.device = device
        self._models: dict[str, LM] = {}
        self._lock = threading.RLock()
        self.requests_served = 0
        self.base_checksums: dict[str, str] = {}  # spec -> checksum of all weights when loaded

    def model(self, spec: str) -> LM:
        with self._lock:
            if spec not in self._models:
                self._models[spec] = load_model(spec, device=self.device)
                self.base_checksums[spec] = weights_checksum(self._models[spec].model)
            return self._models[spec]

    def add_model(self, lm: LM) -> None:
        """Register an already-loaded model under its spec (tests, notebooks)."""
        with self._lock:
            self._models[lm.spec] = lm
            self.base_checksums[lm.spec] = weights_checksum(lm.model)

    def status(self) -> dict:
        """Between requests: every loaded model's weights checksum now and at load time (equal, always)."""
        with self._lock:
            models = {s: {"checksum": weights_checksum(lm.model), "base": self.base_checksums.get(s)}
                      for s, lm in self._models.items()}
            for m in models.values():
                m["unchanged"] = m["checksum"] == m["base"]
            return {"requests_served": self.requests_served, "models": models}

    def run(self, spec: str, edits: Iterable[EditSpec], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._lock:
            lm = self.model(spec)
            self.requests_served += 1
            try:
                with applied(lm, edits), torch.enable_grad():
                    return fn(lm, *args, **kwargs)
            except WeightsCorrupted:
                self._models.pop(spec, None)  # never serve from a drifted model: the next request reloads
                raise


_DEFAULT: ModelWorker | None = None


def default_worker() -> ModelWorker:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ModelWorker()
    return _DEFAULT
