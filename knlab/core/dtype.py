"""The compute dtype of the methods: float32, or float16 / bfloat16 autocast, chosen in one place.

``KNLAB_DTYPE`` (or the CLI's ``--dtype``) is one of ``CHOICES``:

- ``float32``: every method in float32 (the numbers are bit for bit those of a build without this module);
- ``bfloat16`` / ``float16``: every method's forward passes under ``torch.autocast(device, that dtype)``
  (matrix products in half precision with float32 accumulation; softmaxes, norms, losses and the optimised
  tensors stay float32), on a CPU or a GPU alike; the weights stay float32 (``core.models.weights_dtype_for``);
- ``auto`` (the default): bfloat16 only for the methods in ``AUTO_BF16`` and only on a CPU with bfloat16
  matrix units (AMX or AVX512-BF16), float32 everywhere else, a GPU included (no GPU run has measured
  half precision against float32 yet: benchmarks/bench_gpu.py does, and would move a method here).

``AUTO_BF16`` holds the methods whose bfloat16 results agreed with float32 in benchmarks/bench_dtype.py on
the real model (ROME: same outcome and probes' answers, v* cosine >= 0.99; IG: same top-10 neurons,
correlation >= 0.99; trace: grid correlation >= 0.99) AND ran faster there. See docs/benchmarks.md.

The loaded model (``LM``) carries the choice; each method asks it for its dtype (``LM.compute_dtype``)
and runs under ``LM.autocast``; every result says which dtype ran.
"""

from __future__ import annotations

import contextlib
import functools
import os

from knlab.core.errors import InputError

CHOICES = ("auto", "float32", "float16", "bfloat16")
ENV = "KNLAB_DTYPE"
METHODS = ("rome", "ig", "trace")
# Methods that run in bfloat16 under "auto" (on a CPU with bfloat16 matrix units). Empty: see the module's
# docstring and docs/benchmarks.md ("Compute dtype") for the measurement that decides it.
AUTO_BF16: frozenset[str] = frozenset()


def check_choice(choice: str | None) -> str:
    """``choice``, or ``KNLAB_DTYPE``, or "auto"; one clear error for anything else."""
    if choice is None:
        choice = os.environ.get(ENV, "").strip() or "auto"
    choice = str(choice).strip().lower()
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
    choice = aliases.get(choice, choice)
    if choice not in CHOICES:
        raise InputError(f"unknown dtype {choice!r} ({', '.join(CHOICES)}; from --dtype or {ENV})")
    return choice


@functools.lru_cache(maxsize=1)
def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX-BF16 or AVX512-BF16): oneDNN's own
    test, else the kernel's CPU flags. Without them a bfloat16 matrix product is emulated (measured on an
    AVX2-only CPU: ~30x slower than float32)."""
    import torch
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return True
    except Exception:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def method_dtype(choice: str, method: str, device="cpu", bf16_units: bool | None = None) -> str:
    """The dtype ``method`` runs in under ``choice`` on ``device``: "float32", "float16" or "bfloat16"."""
    import torch
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} ({', '.join(METHODS)})")
    choice = check_choice(choice)
    if choice != "auto":
        return choice
    if torch.device(device).type != "cpu":
        return "float32"  # "auto" is about CPUs until a GPU run measures half precision (bench_gpu.py)
    units = cpu_has_bf16_units() if bf16_units is None else bf16_units
    return "bfloat16" if units and method in AUTO_BF16 else "float32"


def autocast(dtype: str, device="cpu"):
    """The context a method's forward passes run in: nothing for float32, half-precision autocast otherwise."""
    import torch
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype))
