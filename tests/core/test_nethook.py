import pytest
import torch

from knlab.core.nethook import Trace, TraceDict, get_module, get_parameter


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_retains_input_and_output():
    net = _net()
    x = torch.randn(5, 3)
    with Trace(net, "0", retain_input=True) as t:
        y = net(x)
    assert torch.equal(t.input, x)
    assert torch.allclose(t.output, net[0](x))
    assert y.shape == (5, 2)


def test_edit_output_changes_downstream_and_is_removed():
    net = _net()
    x = torch.randn(5, 3)
    base = net(x)
    with Trace(net, "1", edit_output=lambda out, name: out * 0):
        edited = net(x)
    assert torch.allclose(edited, net[2].bias.expand(5, 2))
    assert torch.equal(net(x), base)


def test_hooks_removed_when_forward_raises():
    net = _net()

    def boom(out, name):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        with Trace(net, "0", edit_output=boom):
            net(torch.randn(1, 3))
    assert not net[0]._forward_hooks
    net(torch.randn(1, 3))


def test_tracedict_and_stop():
    net = _net()
    with TraceDict(net, ["0", "1"], stop=True) as td:
        net(torch.randn(2, 3))
        pytest.fail("stop should have ended the forward pass")  # pragma: no cover
    assert td["0"].output.shape == (2, 4) and td["1"].output.shape == (2, 4)


def test_lookup_errors_name_the_module():
    net = _net()
    with pytest.raises(LookupError, match="nope"):
        get_module(net, "nope")
    assert get_parameter(net, "0.weight").shape == (4, 3)


class _FlatBlock(torch.nn.Module):
    """A block that runs its MLP on the batch flattened to [batch x positions, d], as OPT's do."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(3, 4), torch.nn.Linear(4, 3)

    def forward(self, hidden):
        shape = hidden.shape
        flat = hidden.reshape(-1, shape[-1])
        return (flat + self.fc2(torch.relu(self.fc1(flat)))).view(shape)


def test_a_declared_flattened_module_is_seen_as_batch_positions_width():
    """Retained and edited as [batch, positions, width], so "position -1" means what it does elsewhere; the
    declaration survives a deep copy (the worker's second lane)."""
    import copy

    from knlab.core.nethook import declare_flattened
    torch.manual_seed(0)
    net = torch.nn.Sequential(_FlatBlock())
    declare_flattened(net, {"0.fc2": "0", "0.fc1": "0"})
    x = torch.randn(2, 5, 3)
    base = net(x)

    def zero_last(a, _name):
        a = a.clone()
        a[:, -1] = 0
        return a
    with Trace(net, "0.fc2", retain_input=True, edit_input=zero_last) as t:
        edited = net(x)
    assert t.input.shape == (2, 5, 4) and (t.input[:, -1] == 0).all()
    assert torch.equal(edited[:, :-1], base[:, :-1]) and not torch.equal(edited[:, -1], base[:, -1])
    twin = copy.deepcopy(net)
    with Trace(twin, "0.fc1") as t:
        twin(x[:1])  # one row of the batch: the positions still follow
    assert t.output.shape == (1, 5, 4)
    assert all(not m._forward_pre_hooks for m in net.modules())
