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

from knlab.core.errors import InputError

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


def get_parameter(model: torch.nn.Module, name: str, writable: bool = True) -> torch.Tensor:
    """The tensor holding parameter ``name``'s values: the parameter itself, or where accelerate offloaded it
    (``stored``) the copy its hook keeps. ``writable``: it will be changed in place (an edit, a restore)."""
    for n, p in model.named_parameters():
        if n == name:
            return p if p.device.type != "meta" else stored(model, n, writable)
    raise LookupError(f"{type(model).__name__} has no parameter named {name!r}")


class OffloadedToDisk(InputError):
    """A weight accelerate keeps on disk: knlab edits weights in place and restores them, in memory only."""


def stored(model: torch.nn.Module, name: str, writable: bool = False) -> torch.Tensor:
    """Where a weight's values live in a model spread by accelerate (``device_map``, ``cpu_offload``): a weight
    on a device is itself; an offloaded one shows as ``meta`` and its values are in the ``weights_map`` of
    the accelerate hook on its module or an ancestor, under the name relative to that module, put on the
    execution device for each forward pass. Held in memory (CPU offload) that copy is the weight to edit and
    restore; loaded from disk at each pass it can be read but not changed (``OffloadedToDisk``)."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        module = get_module(model, ".".join(parts[:cut])) if cut else model
        weights = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
        if weights is None:
            continue
        key = getattr(weights, "prefix", "") + ".".join(parts[cut:])
        dataset = getattr(weights, "dataset", weights)
        in_memory = dataset if isinstance(dataset, dict) else getattr(dataset, "state_dict", {})
        if key in in_memory:
            return in_memory[key]
        if writable:
            raise OffloadedToDisk(f"{name} is offloaded to disk: knlab changes weights in place and restores them, "
                                  f"which it can do in memory only; give its layer memory (max_memory) or edit "
                                  f"another layer")
        return dataset[key]
    raise LookupError(f"{name} is on the meta device and no accelerate hook holds its values")


def module_weight(module: torch.nn.Module, model: torch.nn.Module | None = None, name: str = "",
                  writable: bool = False) -> torch.Tensor:
    """``module.weight``'s values, resolved through accelerate's offload (``stored``) when it is ``meta``
    (``model`` and the module's ``name`` then say where to look)."""
    w = module.weight
    if w.device.type != "meta":
        return w
    if model is None:
        raise LookupError("an offloaded weight needs its model and name to be found")
    return stored(model, f"{name}.weight", writable)


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
    own = module.__dict__.get("forward")  # an instance's own forward (accelerate's hook) is put back after
    module.forward = forward
    try:
        yield module
    finally:
        if own is None:
            del module.forward  # back to the class's forward
        else:
            module.forward = own


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


FLATTENED = "knlab_flattened"  # the model attribute declare_flattened sets (an attribute: deepcopy keeps it)


def declare_flattened(model: torch.nn.Module, modules: dict[str, str]) -> None:
    """Declare modules that see the batch flattened to [batch x positions, width] (OPT's blocks reshape
    before their MLP), each with the module whose first argument has the [batch, positions, ...] layout
    (its block). ``Trace`` then hands retained values and edit functions [batch, positions, width] as for
    every other module, so no method needs to know. Kept on the model object itself, not in ``per_model``,
    so that a deep copy of the model (the worker's second lane) keeps it."""
    setattr(model, FLATTENED, dict(modules))


def flattened(model: torch.nn.Module) -> dict[str, str]:
    return getattr(model, FLATTENED, {})


class Trace(contextlib.AbstractContextManager):
    """Retain or edit one module's input (first positional argument) or output (first element).

    ``edit_output(output_tensor, layer_name) -> tensor`` and ``edit_input`` receive the tensor itself
    (for modules returning tuples, the first element) and return the replacement. A module that sees the
    batch flattened (``declare_flattened``) is shown [batch, positions, width] all the same.
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
        unflat, flat = _layout(model, layer, self._handles)

        def keep(t: torch.Tensor) -> torch.Tensor:
            if retain_grad and t.requires_grad:
                t.retain_grad()
                return t
            return t.detach() if detach else t

        if retain_input or edit_input is not None:
            def pre_hook(_m, args, kwargs):
                if not args:
                    return None
                x = unflat(args[0])
                if edit_input is not None:
                    x = edit_input(x, layer)
                if retain_input:
                    self.input = keep(x)
                return (flat(x, args[0]),) + tuple(args[1:]), kwargs
            self._handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))

        if retain_output or edit_output is not None or stop:
            def hook(_m, _args, output):
                out = output
                if edit_output is not None:
                    raw = _first(output)
                    out = replace_first(output, flat(edit_output(unflat(raw), layer), raw))
                if retain_output:
                    self.output = keep(unflat(_first(out)))
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


def _layout(model: torch.nn.Module, layer: str, handles: list) -> tuple[Callable, Callable]:
    """(unflat, flat): views of ``layer``'s tensors as [batch, positions, width] and back. The identity
    for every module but a declared flattened one, whose positions are read off its block's input as each
    forward pass enters the block (the block may run only some rows of a batch: the rows follow)."""
    block = flattened(model).get(layer)
    if block is None:
        return (lambda x: x), (lambda x, _like: x)
    positions: dict[str, int] = {}

    def record(_m, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        positions["T"] = hidden.shape[1]
    handles.append(get_module(model, block).register_forward_pre_hook(record, with_kwargs=True))

    def unflat(x: torch.Tensor) -> torch.Tensor:
        return x.view(-1, positions["T"], x.shape[-1]) if x.dim() == 2 else x

    def flat(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, x.shape[-1]) if like.dim() == 2 else x
    return unflat, flat


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
