"""vectorops: prefetch is emitted as LLVM's prefetch and changes nothing; interleavePairs writes exactly its
row, against a plain loop."""

import numpy as np
import pytest

from PuzzleLib.Engines.cpu import vectorops

pytestmark = pytest.mark.skipif(vectorops.prefetch is None, reason="numba is not installed")


def _sumWithPrefetch():
    from numba import njit

    @njit
    def total(a, ahead):
        s = a.dtype.type(0)
        for i in range(a.size):
            if i + ahead < a.size:
                vectorops.prefetch(a, i + ahead)
            s += a[i]
        return s

    return total


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prefetchLeavesDataAndResult(dtype):
    a = np.arange(1000, dtype=dtype)
    before = a.copy()
    total = _sumWithPrefetch()
    assert total(a, 16) == before.sum()
    np.testing.assert_array_equal(a, before)


def test_prefetchIsEmitted():
    total = _sumWithPrefetch()
    total(np.ones(8, dtype=np.float32), 4)
    assert "llvm.prefetch" in total.inspect_llvm(total.signatures[0])


def _interleave():
    from numba import njit

    @njit
    def run(dst, d, a, b, e, count, bias, accumulate):
        vectorops.interleavePairs(dst, d, a, b, e, count, bias, accumulate)

    return run


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("accumulate", [False, True])
def test_interleavePairsAgainstLoop(dtype, accumulate):
    lanes = vectorops.VECTOR_BYTES // np.dtype(dtype).itemsize
    run = _interleave()
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(2 * lanes).astype(dtype), rng.standard_normal(2 * lanes).astype(dtype)
    bias = dtype(0.25)
    for count in range(1, lanes + 1):
        for d, e in ((0, 0), (3, 5), (2 * lanes - count, lanes)):  # the last: the row ends at dst's end
            dst = rng.standard_normal(2 * lanes).astype(dtype)
            expected = dst.copy()
            for j in range(count):
                value = (a if j % 2 == 0 else b)[e + j // 2]
                expected[d + j] = expected[d + j] + value if accumulate else value + bias
            run(dst, d, a, b, e, count, bias, accumulate)
            np.testing.assert_array_equal(dst, expected)  # the lanes past count untouched too
