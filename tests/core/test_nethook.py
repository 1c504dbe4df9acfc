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
