"""One small hook utility that every method uses (in the spirit of baukit's ``nethook``).

``Trace`` retains and/or edits one module's input or output during a forward pass; ``TraceDict`` does
the same for several modules. Hooks are always removed on exit, even when the forward pass raises,
so no request can leave a hook behind on the shared model.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections import OrderedDict
from typing import Any, Callable, Iterable

import torch

EditFn = Callable[[Any, str], Any]


_PER_MODEL: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, dict]]" = weakref.WeakKeyDictionary()


def per_model(model: torch.nn.Module, what: str) -> dict:
    """A dict that lives exactly as long as ``model``: what knlab measures once per loaded model (module
    lookups, the noise level, ROME's traced layer and context templates). Keyed on the model object, never
    on ``id(model)``, which a later model can reuse once this one is freed."""
    return _PER_MODEL.setdefault(model, {}).setdefault(what, {})


def get_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule called ``name``; lookups are remembered per model (every method makes dozens per
    request, and a loaded model's module tree does not change)."""
    known = per_model(model, "modules")
    if name not in known:
        try:
            known[name] = model.get_submodule(name)
        except AttributeError:
            raise LookupError(f"{type(model).__name__} has no module named {name!r}") from None
    return known[name]


def get_parameter(model: torch.nn.Module, name: str) -> torch.nn.Parameter:
    for n, p in model.named_parameters():
        if n == name:
            return p
    raise LookupError(f"{type(model).__name__} has no parameter named {name!r}")


def _first(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


def replace_first(x: Any, value: torch.Tensor) -> Any:
    if isinstance(x, tuple):
        return (value,) + tuple(x[1:])
    if isinstance(x, list):
        return [value] + list(x[1:])
    return value


@contextlib.contextmanager
def override_forward(module: torch.nn.Module, forward: Callable[..., Any]):
    """Temporarily replace a module's computation (its hooks still run): used to skip blocks whose
    output is already known, e.g. the layers below a causal-tracing restore."""
    module.forward = forward
    try:
        yield module
    finally:
        del module.forward  # back to the class's forward


@contextlib.contextmanager
def edit_argument(module: torch.nn.Module, name: str, edit: Callable[[Any], Any]):
    """Replace the argument ``name`` of ``module``'s forward (passed by position or by keyword) with
    ``edit(value)`` for the block's duration: how attention knockout hands each layer's attention its own
    mask (``attention_mask`` is the one argument every family's attention module takes), whatever the
    family and attention implementation. The hook is removed on exit, even when the forward raises."""
    params = list(inspect.signature(module.forward).parameters)
    index = params.index(name) if name in params else None

    def pre_hook(_m, args, kwargs):
        if name in kwargs or index is None or index >= len(args):
            kwargs = {**kwargs, name: edit(kwargs.get(name))}
            return args, kwargs
        args = args[:index] + (edit(args[index]),) + args[index + 1:]
        return args, kwargs
    handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield module
    finally:
        handle.remove()


class StopForward(Exception):
    """Raised by a hook with ``stop=True`` to skip the rest of the network once the value is captured."""


class Trace(contextlib.AbstractContextManager):
    """Retain or edit one module's input (first positional argument) or output (first element).

    ``edit_output(output_tensor, layer_name) -> tensor`` and ``edit_input`` receive the tensor itself
    (for modules returning tuples, the first element) and return the replacement.
    """

    def __init__(self, model: torch.nn.Module, layer: str, retain_output: bool = True,
                 retain_input: bool = False, edit_output: EditFn | None = None,
                 edit_input: EditFn | None = None, detach: bool = True, stop: bool = False,
                 retain_grad: bool = False):
        self.layer = layer
        self.output: torch.Tensor | None = None
        self.raw_output: Any = None  # the module's whole output (tuple and all), when retained
        self.input: torch.Tensor | None = None
        module = get_module(model, layer)
        self._handles = []

        def keep(t: torch.Tensor) -> torch.Tensor:
            if retain_grad and t.requires_grad:
                t.retain_grad()
                return t
            return t.detach() if detach else t

        if retain_input or edit_input is not None:
            def pre_hook(_m, args, kwargs):
                if not args:
                    return None
                x = args[0]
                if edit_input is not None:
                    x = edit_input(x, layer)
                if retain_input:
                    self.input = keep(x)
                return (x,) + tuple(args[1:]), kwargs
            self._handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))

        if retain_output or edit_output is not None or stop:
            def hook(_m, _args, output):
                out = output
                if edit_output is not None:
                    out = replace_first(output, edit_output(_first(output), layer))
                if retain_output:
                    self.output = keep(_first(out))
                    self.raw_output = out
                if stop:
                    raise StopForward()
                return out
            self._handles.append(module.register_forward_hook(hook))

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return exc_type is StopForward


class TraceDict(OrderedDict, contextlib.AbstractContextManager):
    """``Trace`` over several modules at once; ``td[name].output`` after the forward pass."""

    def __init__(self, model: torch.nn.Module, layers: Iterable[str], **kwargs):
        super().__init__()
        self._stop = kwargs.pop("stop", False)
        layers = list(layers)
        for i, name in enumerate(layers):
            self[name] = Trace(model, name, stop=self._stop and i == len(layers) - 1, **kwargs)

    def close(self) -> None:
        for t in self.values():
            t.close()

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return exc_type is StopForward
