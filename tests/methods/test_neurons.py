import numpy as np
import pytest

from knlab.core.errors import InputError
from knlab.methods.neurons import coarse_neurons, r2_1, select, shared_neurons


def test_coarse_uses_the_adaptive_threshold():
    m = np.zeros((2, 5))
    m[0, 1], m[1, 3], m[1, 4] = 1.0, 0.25, 0.15
    assert coarse_neurons(m) == {(0, 1), (1, 3)}


def test_tau_search_lowers_until_two_neurons():
    # neuron A in all 10 prompts, B in 6, C in 4: tau 0.7 keeps only A -> lower to 0.55 (B: 6 > 5.5)
    maps = []
    for k in range(10):
        m = np.zeros((1, 4))
        m[0, 0] = 1.0
        if k < 6:
            m[0, 1] = 0.9
        if k < 4:
            m[0, 2] = 0.9
        maps.append(m)
    sel = select(maps)
    assert sel.neurons == [(0, 0), (0, 1)]
    assert sel.tau == pytest.approx(0.55)


def test_tau_search_raises_when_too_many():
    maps = []
    for k in range(10):
        m = np.full((1, 8), 0.5)
        m[0, :6] = 1.0 if k < 9 else 0.0  # six neurons coarse in 9 of 10 prompts
        m[0, 6:] = 1.0  # two neurons in all 10
        maps.append(m)
    sel = select(maps)
    assert sel.neurons == [(0, 6), (0, 7)] and sel.tau == pytest.approx(0.9)


def test_tau_search_keeps_the_set_when_no_tau_gives_two_to_five():
    # eight neurons coarse in all four prompts: raising tau to 1 would keep none, so the eight stay
    maps = [np.ones((1, 8)) for _ in range(4)]
    sel = select(maps)
    assert len(sel.neurons) == 8 and sel.tau < 1.0


def test_shared_neurons_strictly_more_than_tau_n():
    coarse = [{(0, 0)}, {(0, 0)}, set(), set()]
    assert shared_neurons(coarse, 0.5) == []
    assert shared_neurons(coarse, 0.45) == [(0, 0)]


def test_r2_1_parallel_and_orthogonal():
    a = np.array([[1.0, 2.0, 0.0]])
    assert r2_1([a, 3 * a, 0.5 * a]) == pytest.approx(1.0)
    eye = np.eye(4)
    assert r2_1([eye[i : i + 1] for i in range(4)]) == pytest.approx(0.0, abs=1e-12)


def test_empty():
    with pytest.raises(InputError):
        select([])


def test_fact_and_relation_localisation(bert):
    from knlab.studies.localisation import fact_neurons, relation_localisation
    sel = fact_neurons(bert, "P36", "Canada", steps=4)
    assert sel.n_prompts == 4 and 0 <= sel.tau <= 1 and 0 <= sel.r2_1 <= 1 + 1e-9
    loc = relation_localisation(bert, "P101", limit=2, steps=4)
    assert loc.n == 2 and loc.mean_kn == np.mean([len(i["neurons"]) for i in loc.per_item])
    with pytest.raises(InputError):
        fact_neurons(bert, "P36", "Atlantis")
