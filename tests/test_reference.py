"""The straightforward reference implementations (tests/reference/) keep their rule, and their own
helpers are right: they are what knlab's fast methods are tested equal to, so they are checked directly
here, against literal values and against the published conventions."""

import ast

import numpy as np
import pytest
import torch

from helpers import REPO
from reference import hooks, rome, trace
from reference.ig import ig_straightforward

REFERENCE = REPO / "tests" / "reference"


def _imports(tree: ast.AST):
    """(line, module) of every import anywhere in the tree (top level, functions, classes), and every
    module name handed to importlib.import_module / __import__ as a literal."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, "." * node.level + (node.module or "")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def test_no_reference_module_imports_knlab():
    files = sorted(REFERENCE.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "hooks.py", "trace.py", "ig.py", "rome.py"}
    bad = []
    for f in files:
        for line, module in _imports(ast.parse(f.read_text(), filename=str(f))):
            top = module.split(".")[0]
            # relative imports stay inside tests/reference (one dot); "knlab" in any form is out
            if top == "knlab" or module.startswith("..") or "knlab" in module.split("."):
                bad.append(f"{f.name}:{line}: {module}")
    assert not bad, bad


def test_the_ast_check_sees_imports_inside_functions():
    code = "def f():\n    from knlab.core import nethook\n    import knlab.methods.trace as t\n" \
           "    return importlib.import_module('knlab.x')\n"
    assert [m for _, m in _imports(ast.parse(code))] == ["knlab.core", "knlab.methods.trace", "knlab.x"]


def test_subject_span_and_prediction_position(gpt, bert):
    # world-gpt: [BOS] The Space Needle is in downtown
    assert gpt.tokenizer.convert_ids_to_tokens(gpt.tokenizer("The Space Needle is in downtown")["input_ids"]) \
        == ["[BOS]", "The", "Space", "Needle", "is", "in", "downtown"]
    assert trace.subject_span(gpt, "The Space Needle is in downtown", "Space Needle") == (2, 4)
    assert trace.subject_span(gpt, "The Space Needle is in downtown", " Space Needle ") == (2, 4)
    assert trace.subject_span(gpt, "The capital of Canada is", "Canada") == (4, 5)
    assert trace.subject_span(gpt, "Canada is big and Canada is", "Canada") == (5, 6)  # the last mention
    ids, pos = trace.encode(gpt, "The Space Needle is in downtown")
    assert ids.shape == (1, 7) and pos == 6
    # world-bert: [CLS] The capital of New Zealand is [MASK] . [SEP]
    assert trace.subject_span(bert, "The capital of New Zealand is [MASK] .", "New Zealand") == (4, 6)
    ids, pos = trace.encode(bert, "The capital of New Zealand is [MASK] .")
    assert ids.shape == (1, 10) and pos == 7 and int(ids[0, pos]) == bert.tokenizer.mask_token_id
    with pytest.raises(AssertionError):
        trace.subject_span(gpt, "The capital of Canada is", "France")


def test_restore_window_is_rome_s_centred_window():
    assert trace.window_layers(20, 10, 48) == list(range(15, 25))  # 5 below, the layer, 4 above
    assert trace.window_layers(0, 10, 48) == [0, 1, 2, 3, 4]
    assert trace.window_layers(47, 10, 48) == [42, 43, 44, 45, 46, 47]
    assert trace.window_layers(2, 3, 6) == [1, 2, 3]
    assert trace.window_layers(3, 1, 6) == [3]
    for layer in range(48):
        w = trace.window_layers(layer, 10, 48)
        assert layer in w and w == list(range(w[0], w[-1] + 1)) and len(w) <= 10


def test_module_kinds_are_the_block_mlp_and_attention(gpt):
    assert trace.module_of(gpt, "hidden", 2) == gpt.arch.layer(2)
    assert isinstance(gpt.model.get_submodule(trace.module_of(gpt, "hidden", 2)),
                      type(gpt.model.get_submodule(gpt.arch.layers)[2]))
    mlp, attn = (gpt.model.get_submodule(trace.module_of(gpt, k, 2)) for k in ("mlp", "attn"))
    block = gpt.model.get_submodule(gpt.arch.layers)[2]
    assert any(m is mlp for m in block.children()) and any(m is attn for m in block.children())


def test_rome_template_and_kl_prompt(gpt):
    assert rome.template_of("The capital of Canada is", "Canada") == "The capital of {} is"
    assert rome.template_of("Canada is the capital of Canada", " Canada ") == "Canada is the capital of {}"
    assert rome.KL_PROMPT == "{} is a"
    # [BOS] The Space Needle | is in downtown: the subject's last token is index 3
    assert rome.subject_last(gpt.tokenizer, "The {} is in downtown", "Space Needle") == 3
    assert rome.subject_last(gpt.tokenizer, rome.KL_PROMPT, "Space Needle") == 2


def test_hooks_read_replace_and_leave_nothing_behind():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    with hooks.hooked(net, "2") as seen:
        y = net(x)
    assert torch.equal(seen["input"], torch.relu(net[0](x))) and torch.equal(seen["output"], y)
    with hooks.hooked(net, "2", edit_input=torch.zeros_like) as seen:
        y0 = net(x)
    assert torch.equal(y0, net[2].bias.expand(5, 2)) and not seen["input"].any()
    with hooks.hooked(net, "0", edit_output=lambda h: -h):
        yn = net(x)
    assert torch.allclose(yn, net[2](torch.relu(-net[0](x))))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    with pytest.raises(RuntimeError), hooks.hooked(net, "1", edit_output=lambda h: h):
        raise RuntimeError
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def _clean_p(lm, prompt, answer_id):
    ids, pos = trace.encode(lm, prompt)
    with torch.no_grad():
        return float(torch.softmax(lm.model(input_ids=ids).logits[0, pos].float(), -1)[answer_id])


def test_a_trace_without_noise_gives_the_clean_probability_in_every_cell(gpt):
    prompt = "The Space Needle is in downtown"
    seattle = gpt.tokenizer.convert_tokens_to_ids("Seattle")
    clean = _clean_p(gpt, prompt, seattle)
    assert clean > 0.5
    grids = trace.trace_straightforward(gpt, prompt, "Space Needle", seattle, 2, 3, 0.0, 0)
    for k in trace.KINDS:
        assert grids[k].shape == (7, gpt.n_layers)
        assert np.abs(grids[k] - clean).max() < 1e-6, k


def test_restoring_the_last_hidden_state_at_the_prediction_undoes_any_noise(gpt):
    """The last block's output at the last token is all the head reads: restoring it gives the clean p."""
    prompt = "The Space Needle is in downtown"
    seattle = gpt.tokenizer.convert_tokens_to_ids("Seattle")
    grids = trace.trace_straightforward(gpt, prompt, "Space Needle", seattle, 3, 1, 5.0, 0)
    clean = _clean_p(gpt, prompt, seattle)
    assert abs(grids["hidden"][6, gpt.n_layers - 1] - clean) < 1e-5
    # a causal model's tokens before the subject never see the noise: restoring them changes nothing
    assert np.ptp(grids["hidden"][:2]) < 1e-6
    assert grids["hidden"][:2].max() < clean - 0.1  # and the noise did corrupt the prediction


def test_ig_score_is_activation_times_mean_gradient(gpt):
    """With two steps (gamma = 0 and 1) the score is a * (dp/da at 0 + dp/da at a) / 2, layer by layer:
    checked against two explicit forward/backward passes with the activation as a leaf tensor."""
    prompt, tid = "The capital of Canada is", gpt.tokenizer.convert_tokens_to_ids("Ottawa")
    scores = ig_straightforward(gpt, prompt, tid, 2)
    assert scores.shape == (gpt.n_layers, gpt.ffn_width) and np.abs(scores).max() > 0
    ids, pos = trace.encode(gpt, prompt)
    for layer in (0, gpt.n_layers - 1):
        name = gpt.arch.module("mlp_out", layer)
        with torch.no_grad(), hooks.hooked(gpt.model, name) as seen:
            gpt.model(input_ids=ids)
        a = seen["input"][0, pos]
        grads = []
        for value in (torch.zeros_like(a), a.clone()):
            leaf = value.requires_grad_(True)

            def put(x):
                x = x.clone()
                x[0, pos] = leaf
                return x
            with hooks.hooked(gpt.model, name, edit_input=put):
                p = torch.softmax(gpt.model(input_ids=ids).logits[0, pos], -1)[tid]
            grads.append(torch.autograd.grad(p, [leaf])[0])
        expected = (a * (grads[0] + grads[1]) / 2).numpy()
        assert np.abs(scores[layer] - expected).max() <= 1e-5 * np.abs(expected).max(), layer
        assert (scores[layer][(a == 0).numpy()] == 0).all()  # a silent neuron scores exactly zero


def test_the_references_helpers_agree_with_knlab_s(gpt, bert):
    """Written apart, they agree with knlab's on the shipped models (a disagreement here points at one of
    the two before any equality test of a whole method could)."""
    from knlab.methods.rome.compute_v import KL_PROMPT
    from knlab.methods.rome.repr_tools import prompt_template
    from knlab.methods.trace import locate_subject, restore_window
    cases = [(gpt, "The Space Needle is in downtown", "Space Needle"),
             (gpt, "Albert Einstein was born in", "Albert Einstein"),
             (gpt, "The capital city of New Zealand is", "New Zealand"),
             (gpt, "Canada is big and Canada is", "Canada"),
             (bert, "The capital of New Zealand is [MASK] .", "New Zealand"),
             (bert, "[MASK] is the capital of Canada .", "Canada")]
    for lm, prompt, subject in cases:
        assert trace.subject_span(lm, prompt, subject) == locate_subject(lm, prompt, subject), prompt
        assert rome.template_of(prompt, subject) == prompt_template(prompt, subject)
    for n_layers in (1, 6, 30, 48):
        for window in range(1, 12):
            for layer in range(n_layers):
                assert trace.window_layers(layer, window, n_layers) == restore_window(layer, window, n_layers)
    assert rome.KL_PROMPT == KL_PROMPT
