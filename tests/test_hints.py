"""hints.prefetch: emitted as LLVM's prefetch, and harmless to the data and the result."""

import numpy as np
import pytest

from PuzzleLib.Engines.cpu import hints

pytestmark = pytest.mark.skipif(hints.prefetch is None, reason="numba is not installed")


def _sumWithPrefetch():
    from numba import njit

    @njit
    def total(a, ahead):
        s = a.dtype.type(0)
        for i in range(a.size):
            if i + ahead < a.size:
                hints.prefetch(a, i + ahead)
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
    llvm = total.inspect_llvm(total.signatures[0])
    assert "llvm.prefetch" in llvm
