import pytest
import torch

from knlab.core.errors import InputError
from knlab.methods.corruption import add_subject_noise, noise_level, parse_noise, subject_noise


def test_noise_is_three_embedding_sds(gpt):
    assert noise_level(gpt) == pytest.approx(3 * noise_level(gpt, sds=1.0))
    assert noise_level(gpt) > 0


def test_noise_parameter(gpt):
    assert parse_noise(gpt, "3sd") == pytest.approx(parse_noise(gpt, None))
    assert parse_noise(gpt, "0.5") == 0.5 and parse_noise(gpt, 2) == 2.0
    for bad in ("lots", "nan", "-1", float("inf")):
        with pytest.raises(InputError):
            parse_noise(gpt, bad)


def test_same_seed_same_draws_at_the_requested_scale(gpt):
    a = subject_noise(gpt, 200, (2, 5), 0.5, seed=3)
    assert a.shape == (200, 3, gpt.model.config.hidden_size) and a.dtype == gpt.model.dtype
    assert torch.equal(a, subject_noise(gpt, 200, (2, 5), 0.5, seed=3))
    assert not torch.equal(a, subject_noise(gpt, 200, (2, 5), 0.5, seed=4))
    assert a.float().std().item() == pytest.approx(0.5, rel=0.05)


def test_noise_lands_on_the_subject_only_and_a_continued_run_gets_its_tail():
    """A run that continues a cached prefix from position ``offset`` sees exactly the positions from there on
    of the whole prompt's corrupted embeddings; the input itself is never changed."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 9, 5, generator=gen)
    noise = torch.randn(4, 3, 5, generator=gen)
    whole = add_subject_noise(x, noise, (3, 6))
    assert torch.equal(whole[:, :3], x[:, :3]) and torch.equal(whole[:, 6:], x[:, 6:])
    assert torch.equal(whole[:, 3:6], x[:, 3:6] + noise)
    for offset in range(9):
        assert torch.equal(add_subject_noise(x[:, offset:], noise, (3, 6), offset), whole[:, offset:]), offset
    assert not torch.equal(whole, x)  # x untouched: whole differs from it
