"""What one request may ask for: configurable per deployment, shown in the UI, enforced where the work is
done (so the CLI, the Python API, the app and its HTTP API all refuse the same things with the same
message). A shared worker serves one request at a time; these keep any one request short.

Each limit is an environment variable; in hosted mode (``KNLAB_HOSTED=1``) the defaults are tighter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from knlab.core.errors import InputError


@dataclass(frozen=True)
class Limits:
    prompt_tokens: int = 128  # tokens in a prompt (the shipped models have 128 positions)
    ig_steps: int = 200  # integrated-gradients steps
    trace_samples: int = 100  # causal-tracing noise samples
    edits_per_session: int = 20  # edits one session may keep
    evaluate_facts: int = 300  # facts in one batch evaluation
    paradigm_prompts: int = 200  # prompts in one paradigm analysis
    edit_file_kb: int = 16384  # an uploaded edits file, in KiB (a ROME edit of the real model is ~9 KiB)


HOSTED = Limits(prompt_tokens=64, ig_steps=50, trace_samples=20, edits_per_session=10, evaluate_facts=50,
                paradigm_prompts=60, edit_file_kb=512)

ENV = {f.name: f"KNLAB_MAX_{f.name.upper()}" for f in fields(Limits)}


def hosted() -> bool:
    return os.environ.get("KNLAB_HOSTED", "").strip().lower() in ("1", "true", "yes", "on")


def limits() -> Limits:
    """The limits in force now (read at every call, so a test or an operator can change them)."""
    base = HOSTED if hosted() else Limits()
    values = {}
    for f in fields(Limits):
        raw = os.environ.get(ENV[f.name])
        if raw is None or not raw.strip():
            values[f.name] = getattr(base, f.name)
            continue
        try:
            v = int(raw)
        except ValueError:
            raise InputError(f"{ENV[f.name]}={raw!r} is not a whole number") from None
        values[f.name] = max(1, v)
    return Limits(**values)


def check_count(value: object, name: str, what: str, low: int = 1) -> int:
    """A whole number from ``low`` to the limit ``name``; else one clear message naming the limit."""
    top = getattr(limits(), name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= top:
        raise InputError(f"{what} must be a whole number from {low} to {top} (limit {ENV[name]})")
    return value


def describe() -> str:
    l = limits()
    mode = "hosted mode, " if hosted() else ""
    return (f"Limits ({mode}per request): prompts up to {l.prompt_tokens} tokens, IG steps up to {l.ig_steps}, "
            f"trace samples up to {l.trace_samples}, {l.edits_per_session} edits per session, batch evaluation "
            f"up to {l.evaluate_facts} facts, paradigm analysis up to {l.paradigm_prompts} prompts, edits files up to "
            f"{l.edit_file_kb} KiB.")
