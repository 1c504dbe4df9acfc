import dataclasses
import pickle

import numpy as np
import pytest
import torch

from knlab.core.errors import InputError
from knlab.core.models import weights_checksum
from knlab.core.nethook import Trace, get_module, per_model
from knlab.core.tokens import single_token
from knlab.methods.predict import encode, next_token_probs
from knlab.methods.rome import RomeEdit, RomeParams, rome
from knlab.methods.rome import context_templates as C
from knlab.methods.rome import layer_stats as LS
from knlab.core.specs import applied
from knlab.studies.edit_report import rome_layer
from knlab.world.covariance_texts import covariance_corpus

PROMPT, SUBJECT = "The capital of Canada is", "Canada"


def _mapped(lm, layer, key):
    """W' key + bias: the edited layer's MLP output projection applied to ``key``."""
    with torch.no_grad():
        return get_module(lm.model, lm.arch.module("mlp_out", layer))(torch.as_tensor(key)).numpy()


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def canada(gpt, tmp_path_factory):
    """One full ROME edit (published optimiser settings, covariance on, default layer) with the covariance
    measured on a small corpus (one sentence per world fact) in a private cache, so the test neither
    needs nor writes the user's cache."""
    from knlab.world import facts as F
    folder = tmp_path_factory.mktemp("rome")
    corpus = folder / "facts.txt"
    corpus.write_text("\n".join(F.sentence(F.relation(f.relation).train_templates[0], f.subject, f.object)
                                for f in F.all_facts()), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KNLAB_CACHE", str(folder / "cache"))
        base = weights_checksum(gpt.model)
        res = rome(gpt, PROMPT, SUBJECT, "Rome", rome_layer(gpt), RomeParams(), corpus=covariance_corpus(str(corpus)))
    return res, base


def test_edit_maps_the_key_to_v_star_and_the_model_says_rome(gpt, canada):
    res, base = canada
    assert res.edit.layer == res.layer and 0 <= res.layer < gpt.n_layers
    enc = encode(gpt, PROMPT)
    rome_id, ottawa_id = single_token(gpt, "Rome"), single_token(gpt, "Ottawa")
    p = next_token_probs(gpt, enc)
    assert p[ottawa_id] > p[rome_id]
    before = _mapped(gpt, res.layer, res.key)
    with applied(gpt, [res.edit]):
        after = _mapped(gpt, res.layer, res.key)
        p = next_token_probs(gpt, enc)
    # W' key + b = v* up to float rounding (v*'s starting point comes from the left-padded batch, the key
    # from the prompt alone): measured 2e-7..5e-7 of max |v*| across prompts and layers
    assert _rel(after, res.v_star) < 1e-5
    assert _rel(before, res.v_star) > 1e-2  # and the edit is what moved it there
    assert p[rome_id] > p[ottawa_id]
    assert weights_checksum(gpt.model) == base


def test_spec_is_small_and_holds_no_weights(gpt, canada):
    res, _ = canada
    edit = res.edit
    W = get_module(gpt.model, gpt.arch.module("mlp_out", edit.layer)).weight
    assert {f.name for f in dataclasses.fields(RomeEdit)} == {"layer", "u", "v", "label"}
    assert len(edit.u) == gpt.ffn_width and len(edit.v) == gpt.model.config.hidden_size
    assert all(type(x) is float for x in edit.u + edit.v)
    assert edit.nbytes() == 4 * (len(edit.u) + len(edit.v)) < 8 * 1024
    assert len(pickle.dumps(edit)) < 0.05 * W.numel() * W.element_size()
    assert edit.touched_parameters(gpt) == [f"{gpt.arch.module('mlp_out', edit.layer)}.weight"]


def test_fast_v_star_equals_the_straightforward_one(gpt):
    """Same templates, keys, loss and optimiser step by step as the reference-style loop (one prompt per
    forward pass, nothing cached). Layer 3 so that the replayed lower blocks are exercised too.

    Tolerance: at step 0 the two losses agree to ~1e-7 (float rounding of a batched vs a one-prompt
    forward); Adam then amplifies those rounding differences (it divides each gradient component by its
    own running magnitude) by roughly 3-10x per step, and the straightforward loop differs from itself by
    as much when only the order of its sums is changed. Measured after 3 steps on three prompts and layers
    0 and 3: v* <= 1.2e-5, right vector <= 2.9e-5, u <= 2.5e-7, loss <= 3e-7 (relative). After 20 steps
    the chaos reaches ~1e-1, hence the short run; a real difference (a token off, a term missing) shows at
    1e-2 or more from the first step."""
    from knlab.methods.rome.context_templates import context_templates
    from reference.rome import rome_straightforward
    params = RomeParams(v_steps=3, mom2=False)
    layer = 3
    res = rome(gpt, PROMPT, SUBJECT, "Rome", layer, params)
    ref = rome_straightforward(gpt, PROMPT, SUBJECT, "Rome", layer, params, context_templates(gpt), None)
    assert res.steps == ref.steps == 3
    assert abs(res.loss - ref.loss) < 1e-5 * abs(ref.loss)
    assert _rel(res.v_star, ref.v_star) < 1e-4
    assert _rel(res.edit.v, ref.v) < 2e-4
    assert _rel(res.edit.u, ref.u) < 1e-5
    assert _rel(res.key, ref.key) < 1e-5


def test_output_head_runs_on_the_read_positions_only(gpt):
    """Each v* step sends through the output head exactly the positions its losses read (every template's
    target positions and the KL prompt's subject column), and the setup pass one position per row: the
    head is the widest product of a step on a real vocabulary."""
    from knlab.core.tokens import spoken_ids
    from knlab.methods.rome.compute_v import build_problem, compute_v, read_positions
    from knlab.methods.rome.context_templates import context_templates
    from knlab.methods.rome.repr_tools import prompt_template
    contexts = context_templates(gpt)
    target = spoken_ids(gpt, " New Rome", "target")
    prob = build_problem(gpt, prompt_template(PROMPT, SUBJECT), SUBJECT, target, contexts)
    assert len(target) == 2  # two target positions per template: the pairs are more than one column's
    rows_seen = []
    with Trace(gpt.model, gpt.arch.lm_head, retain_output=False,  # the head's output: rows it computed
               edit_output=lambda out, _n: rows_seen.append(out.shape[:-1].numel()) or out):
        compute_v(gpt, 2, prob, RomeParams(v_steps=3, early_stop_loss=0.0, mom2=False))
    n_read = len(contexts) * len(target) + 1
    assert rows_seen == [prob.batch.input_ids.shape[0]] + [n_read] * 3
    read = read_positions(prob, prob.column)
    assert len(read.keep) * (len(contexts) + 1) > n_read  # what the kept columns alone would have cost


def test_mom2_is_cached_on_disk_and_equals_the_second_moment(gpt, tmp_path, monkeypatch):
    monkeypatch.setenv("KNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(LS, "_MEMORY", {})
    # lengths differ so that the batch needs padding
    texts = ["The capital of Canada is Ottawa .", "Paris is nice .",
             "The Space Needle is in downtown Seattle and it is very tall .", "Canada",
             "Albert Einstein was born in Ulm .", "The capital city of New Zealand is Wellington ."]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n\n", encoding="utf-8")
    layer = 1
    calls = []
    measure = LS.measure_mom2_layers  # what measures, for one layer or several (an edit-layer sweep's)
    monkeypatch.setattr(LS, "measure_mom2_layers", lambda *a, **k: calls.append(1) or measure(*a, **k))
    m = LS.layer_stats(gpt, layer, covariance_corpus(str(corpus)))
    files = list((tmp_path / "cache").rglob("*.safetensors"))
    assert calls == [1] and len(files) == 1 and f"layer{layer}-" in files[0].name

    def fail(*a, **k):
        raise AssertionError("measured again instead of read from the disk cache")
    monkeypatch.setattr(LS, "measure_mom2_layers", fail)
    monkeypatch.setattr(LS, "_MEMORY", {})
    again = LS.layer_stats(gpt, layer, covariance_corpus(str(corpus)))
    assert torch.equal(again, m)

    # E[k k^T] over every token of every text, each text on its own (no padding)
    total, n = torch.zeros(gpt.ffn_width, gpt.ffn_width, dtype=torch.float64), 0
    for t in texts:
        ids = torch.tensor([gpt.tokenizer(t)["input_ids"]])
        with torch.no_grad(), Trace(gpt.model, gpt.arch.module("mlp_out", layer), retain_output=False,
                                    retain_input=True) as tr:
            gpt.model(input_ids=ids)
        k = tr.input[0].double()
        total, n = total + k.T @ k, n + k.shape[0]
    assert m.shape == (gpt.ffn_width, gpt.ffn_width)
    assert _rel(m, total / n) < 1e-5  # measured 2e-8..8e-8 (float32 keys of a padded batch)
    scale = float(m.abs().max())
    assert float((m - m.T).abs().max()) <= 1e-6 * scale
    assert float(torch.linalg.eigvalsh(m.double()).min()) >= -1e-6 * scale


def test_context_templates(gpt, monkeypatch):
    state = torch.random.get_rng_state()
    per_model(gpt.model, "context_templates").clear()
    t = C.context_templates(gpt, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # sampling leaves the global RNG alone
    assert t[0] == "{}"
    assert len(t) - 1 == len(C.STARTS) * sum(n for _, n in C.LENGTHS) == 20
    for s in t:
        assert s.count("{}") == 1 and s.count("{") == s.count("}") == 1 and s.endswith("{}")
    assert len(set(t)) > 10
    per_model(gpt.model, "context_templates").clear()
    assert C.context_templates(gpt, seed=0) == t
    assert C.context_templates(gpt, seed=1) != t


def test_context_templates_come_back_from_disk_for_the_same_weights_only(gpt, tmp_path, monkeypatch):
    """A fresh process (here: a cleared memo) reads the templates from the disk cache instead of writing
    them again; an edited model's weights key a file of their own, never the base model's."""
    monkeypatch.setenv("KNLAB_CACHE", str(tmp_path))
    per_model(gpt.model, "context_templates").clear()
    written = C.context_templates(gpt, seed=0)
    path = C.cache_path(gpt, 0)
    assert path.is_file() and path.is_relative_to(tmp_path)
    per_model(gpt.model, "context_templates").clear()
    monkeypatch.setattr(C, "generate_prefixes", lambda *a, **k: pytest.fail("generated again"))
    assert C.context_templates(gpt, seed=0) == written
    spec = rome(gpt, PROMPT, SUBJECT, "Rome", rome_layer(gpt), params=RomeParams(mom2=False, v_steps=2)).edit
    with applied(gpt, [spec]):
        assert C.cache_path(gpt, 0) != path
    assert C.cache_path(gpt, 0) == path
    per_model(gpt.model, "context_templates").clear()


def test_rome_on_every_causal_family(tiny_lm):
    """Layer 1 is the tiny models' last: the prompt ends with the subject so that the delta at its last
    token reaches the target (elsewhere a last-layer delta only meets the KL term, whose gradient at the
    start is zero up to rounding, which Adam blows up into arbitrary +-lr steps). Block 0 is replayed and
    the prefix cached, in each family's own cache and position scheme."""
    from knlab.methods.rome.context_templates import context_templates
    from reference.rome import rome_straightforward
    prompt, subject = "The capital city is in New Zealand", "New Zealand"
    params = RomeParams(mom2=False, v_steps=3)
    if tiny_lm.masked:
        with pytest.raises(InputError, match="masked"):
            rome(tiny_lm, prompt, subject, "Rome", 1, params)
        return
    base = weights_checksum(tiny_lm.model)
    res = rome(tiny_lm, prompt, subject, "Rome", 1, params)
    assert res.layer == 1 and res.steps == 3 and np.isfinite(res.loss)
    with applied(tiny_lm, [res.edit]):
        after = _mapped(tiny_lm, 1, res.key)
    assert _rel(after, res.v_star) < 1e-5
    assert _rel(_mapped(tiny_lm, 1, res.key), res.v_star) > 1e-3
    assert weights_checksum(tiny_lm.model) == base
    ref = rome_straightforward(tiny_lm, prompt, subject, "Rome", 1, params, context_templates(tiny_lm), None)
    assert _rel(res.v_star, ref.v_star) < 1e-5  # measured <= 3.6e-7 over the six families


@pytest.mark.parametrize("prompt,subject,target,layer,match", [
    (PROMPT, "France", "Rome", 0, "not in the prompt"),
    (PROMPT, " ", "Rome", 0, "subject is empty"),
    (PROMPT, SUBJECT, "", 0, "target is empty"),
    (PROMPT, SUBJECT, "  ", 0, "target is empty"),
    (PROMPT, SUBJECT, "Rome", 6, "layer"),
    (PROMPT, SUBJECT, "Rome", -1, "layer"),
    (PROMPT, SUBJECT, "Rome", True, "layer"),
    (PROMPT, SUBJECT, "Zorblaxia", 0, "vocabulary"),
])
def test_bad_input(gpt, prompt, subject, target, layer, match):
    assert gpt.n_layers == 6
    with pytest.raises(InputError, match=match):
        rome(gpt, prompt, subject, target, layer)
