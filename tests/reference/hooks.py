"""Read or replace one module's input (first positional argument) or output (first element, for modules
that return tuples) with plain ``torch.nn.Module`` hooks. Written here on purpose: see __init__.py."""

from __future__ import annotations

import contextlib


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def _with_first(x, value):
    return (value, *x[1:]) if isinstance(x, tuple) else [value, *x[1:]] if isinstance(x, list) else value


@contextlib.contextmanager
def hooked(model, name, edit_output=None, edit_input=None):
    """Within the block, ``edit_output(tensor) -> tensor`` / ``edit_input(tensor) -> tensor`` replace the
    module's output / input. Yields a dict that holds the last ``"input"`` and ``"output"`` seen (after
    any edit, detached)."""
    module, seen, handles = model.get_submodule(name), {}, []

    def pre(_module, args):
        if not args:  # called with keywords only: nothing to read, and an edit must not be lost silently
            assert edit_input is None, f"{name} was called without a positional input"
            return None
        x = edit_input(args[0]) if edit_input is not None else args[0]
        seen["input"] = x.detach()
        return (x, *args[1:])

    def post(_module, _args, output):
        if edit_output is not None:
            output = _with_first(output, edit_output(_first(output)))
        seen["output"] = _first(output).detach()
        return output

    handles = [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()
