"""A stand-in for Hugging Face ZeroGPU on a CPU machine: spaces' own ``regular_function_wrapper`` (pickle in
through its queue, a forked process, pickle out, exceptions sent back as ZeroGPU sends them), with only the two
things a CPU lacks replaced: the scheduler's HTTP client (a GPU is always granted, its process reused when idle,
as ZeroGPU does) and the CUDA moves of the packed weights (nothing to move on a CPU).

``spaces.zero`` reads the CUDA build of torch at import (``torch.version.cuda``, ``torch._C._cuda_init``);
``cuda_build_look`` makes the CPU build look like one for the length of that import only (and, for a process
that runs the real ``spaces`` with ``SPACES_ZERO_GPU`` set, for good: ``as_on_a_space``).
"""

from __future__ import annotations

import contextlib
import types
from datetime import timedelta


def _look_like_a_cuda_build() -> tuple:
    import torch
    saved = torch.version.cuda, getattr(torch._C, "_cuda_init", None), torch.cuda._is_in_bad_fork
    torch.version.cuda = "12.8"
    torch._C._cuda_init = lambda: None
    torch.cuda._is_in_bad_fork = bool  # a module-level callable returning False: spaces pickles it
    return saved


@contextlib.contextmanager
def cuda_build_look():
    import torch
    saved = _look_like_a_cuda_build()
    try:
        yield
    finally:
        torch.version.cuda, init, torch.cuda._is_in_bad_fork = saved
        if init is None:
            del torch._C._cuda_init


def as_on_a_space() -> None:
    """Make this process's CPU torch pass for the CUDA build that a Space has, for good, before ``import spaces``."""
    _look_like_a_cuda_build()


class StandIn:
    """``GPU(task, duration=...)`` as ``spaces.GPU``; ``durations`` lists the seconds each call asked for,
    ``processes`` the GPU processes started."""

    def __init__(self):
        with cuda_build_look():
            from spaces.zero import wrappers
        self.wrappers = wrappers
        self.durations: list[float] = []
        self.processes: list = []
        stand_in = self

        def schedule(task_id, request, duration, gpu_size):
            stand_in.durations.append(duration.total_seconds() if isinstance(duration, timedelta) else 60)
            return types.SimpleNamespace(allowToken="token", nvidiaIndex=0, nvidiaUUID="cpu", idle=True)

        wrappers.client = types.SimpleNamespace(
            schedule=schedule, release=lambda *a, **k: None, allow=lambda *a, **k: None,
            get_duration_seconds=lambda duration, size: duration.total_seconds() if duration else 60,
            duration_warning=lambda: None)
        wrappers.torch = types.SimpleNamespace(unpatch=lambda: None, init=lambda uuid: None, size=lambda: 0,
                                               move=lambda callback=None: None, enter_mode=lambda: None)

        class Worker(wrappers.Worker):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                stand_in.processes.append(self.process)
        wrappers.Worker = Worker

    def GPU(self, task, duration=None, size=None):  # noqa: N802 - spaces' name
        return self.wrappers.regular_function_wrapper(task, duration, size)

    def close(self) -> None:
        for p in self.processes:
            if p.is_alive():
                p.terminate()
            p.join(5)
