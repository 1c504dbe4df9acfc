"""Hosted mode (``KNLAB_HOSTED=1``): what a public Space or a classroom server must refuse.

- Only the models in ``KNLAB_MODELS`` (comma-separated; default: the shipped models installed) load; a user can
  never make the server read a local path or fetch an arbitrary hub repository. (``trust_remote_code``
  is never used, hosted or not.)
- Sessions: at most ``KNLAB_MAX_SESSIONS`` at once (default 64); a session idle for
  ``KNLAB_SESSION_TTL`` seconds (default 1800) is dropped together with its edits.
- Tighter request limits (``knlab.core.limits.HOSTED``).
"""

from __future__ import annotations

import os
import threading
import time

from knlab.core.errors import InputError
from knlab.core.limits import hosted
from knlab.core.models import shipped_installed


def allowed_models() -> tuple[str, ...]:
    """``KNLAB_MODELS``, else every shipped model installed here (the real one first)."""
    raw = os.environ.get("KNLAB_MODELS", "")
    models = tuple(m.strip() for m in raw.split(",") if m.strip())
    if models:
        return models
    return tuple(shipped_installed())


def check_model(spec: object) -> str:
    """The model spec a request may use; in hosted mode, only an allowed one."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("no model given")
    spec = spec.strip()
    if hosted() and spec not in allowed_models():
        raise InputError(f"this server offers only: {', '.join(allowed_models())}")
    return spec


class Sessions:
    """Who is using the lab: last-seen times per session, a cap, and idle expiry."""

    def __init__(self, cap: int | None = None, ttl: float | None = None, clock=time.monotonic):
        self.cap = cap if cap is not None else int(os.environ.get("KNLAB_MAX_SESSIONS", "64"))
        self.ttl = ttl if ttl is not None else float(os.environ.get("KNLAB_SESSION_TTL", "1800"))
        self._seen: dict[str, float] = {}
        self._edits: dict[str, list] = {}  # session -> its edits, in order (dicts: model, spec, label)
        self._lock = threading.Lock()
        self._clock = clock

    def expire(self) -> list[str]:
        now = self._clock()
        with self._lock:
            gone = [s for s, t in self._seen.items() if now - t > self.ttl]
            for s in gone:
                del self._seen[s]
                self._edits.pop(s, None)
        return gone

    def touch(self, session: str) -> bool:
        """Record activity (refused when the lab is full); False for a new (or expired) session."""
        self.expire()
        with self._lock:
            known = session in self._seen
            if not known and len(self._seen) >= self.cap:
                raise InputError(f"the lab is full ({self.cap} sessions at once); please try again in a few minutes")
            self._seen[session] = self._clock()
            return known

    def edits(self, session: str) -> list:
        with self._lock:
            return list(self._edits.get(session, []))

    def drop(self, session: str) -> None:
        """Forget ``session`` and its edits now (the app's own background session, when it is done)."""
        with self._lock:
            self._seen.pop(session, None)
            self._edits.pop(session, None)

    def set_edits(self, session: str, edits: list) -> None:
        with self._lock:
            self._edits[session] = list(edits)

    def __len__(self) -> int:
        return len(self._seen)
