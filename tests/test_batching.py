import pytest

from stars.batching import batches


def test_batches_are_consecutive_and_the_last_is_short():
    assert list(batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batches(iter(range(4)), 2)) == [[0, 1], [2, 3]]
    assert list(batches([], 5)) == []


def test_batches_are_lazy():
    seen = []

    def source():
        for i in range(10):
            seen.append(i)
            yield i
    first = next(batches(source(), 2))
    assert first == [0, 1] and seen == [0, 1]


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch size"):
        list(batches([1], 0))
