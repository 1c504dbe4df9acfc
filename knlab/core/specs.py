"""Edit specs: a user's edit as a few kilobytes (ROME's two vectors, a KN edit's neurons) applied for the
body of a ``with`` and undone after it, the base weights restored from a snapshot and verified bit for bit.

The one mechanism behind a request's session edits (``serve.worker``) and an edit applied inside a request
to measure its effect (``studies.edit_report``).
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Protocol

import torch

from knlab.core.models import LM, tensor_checksum
from knlab.core.nethook import get_parameter


class EditSpec(Protocol):
    """A user's edit: small (a few kilobytes), serialisable, applied per request."""

    def touched_parameters(self, lm: LM) -> list[str]:
        """Names of the parameters ``apply`` modifies in place (empty for hook-only edits)."""

    def apply(self, lm: LM) -> contextlib.AbstractContextManager:
        """Apply the edit; leaving the context undoes hooks (weights are restored by the worker)."""


class WeightsCorrupted(RuntimeError):
    pass


@contextlib.contextmanager
def applied(lm: LM, edits: Iterable[EditSpec]):
    """Apply edit specs in order for the body of the ``with``; afterwards put back every parameter they
    touched from a snapshot and verify it bit for bit (``WeightsCorrupted`` if not). The one mechanism
    behind a request's session edits and an edit applied inside a request (before / after evaluation)."""
    edits = list(edits or [])
    names = sorted({n for e in edits for n in e.touched_parameters(lm)})
    saved = {n: get_parameter(lm.model, n).detach().clone() for n in names}
    sums = {n: tensor_checksum(t) for n, t in saved.items()}
    try:
        with contextlib.ExitStack() as stack:
            for e in edits:
                with torch.no_grad():
                    stack.enter_context(e.apply(lm))
            yield lm
    finally:
        with torch.no_grad():
            for n, t in saved.items():
                get_parameter(lm.model, n).copy_(t)
        bad = [n for n in names if tensor_checksum(get_parameter(lm.model, n)) != sums[n]]
        if bad:
            raise WeightsCorrupted(f"base weights of {lm.spec} not restored: {bad}")
