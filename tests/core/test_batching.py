import pytest
import torch

from knlab.core.batching import equal_length_batches, right_padded


@pytest.mark.parametrize("size", [None, 1, 2, 3, 100])
def test_every_row_once_in_batches_of_one_length_and_at_most_size(size):
    lengths = [5, 3, 5, 5, 7, 3, 5, 9, 3, 5]
    batches = list(equal_length_batches(lengths, size))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len({lengths[i] for i in b}) == 1
        assert b == sorted(b)  # rows keep their order
        assert size is None or len(b) <= size
    # groups come in the order of their first row; whole groups when no size is given
    assert [lengths[b[0]] for b in batches][:1] == [5]
    if size is None:
        assert batches == [[0, 2, 3, 6, 9], [1, 5, 8], [4], [7]]


def test_composite_keys_and_bad_size():
    assert list(equal_length_batches([(2, 1), (2, 2), (2, 1)], 8)) == [[0, 2], [1]]
    assert list(equal_length_batches([])) == []
    with pytest.raises(ValueError):
        list(equal_length_batches([1, 2], 0))


def test_right_padded_keeps_each_row_at_its_start_behind_a_mask():
    ids, mask = right_padded([[5, 6, 7], [8], [9, 10]], pad=None)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert right_padded([[1], [2, 3]], pad=4)[0].tolist() == [[1, 4], [2, 3]]
    assert ids.dtype == mask.dtype == torch.long
