"""The 1x1 weight gradient through sgemm (conv_pointwise): float32 against the float64 reference of
tests/reference.py (either operand transposed, groups, maps and channels not a multiple of 8, an item's pixels cut
into several units, units split between the parts), the same bits on any thread count, the scratch estimate
against what a call allocates, and the dispatch rule."""

import numpy as np
import pytest
from conftest import convData, resultsOnThreads, tracedPeak
from reference import convBackwardParams

from PuzzleLib.Engines.cpu import conv, conv_common, conv_pointwise

pytestmark = pytest.mark.skipif(not conv_pointwise.preferred((1, 8, 32, 32), (8, 8, 1, 1), 1, np.float32),
                                reason="needs numba and sgemm (float32 on AVX-512)")

UNIT = ((1, 1), (0, 0), (1, 1))
CASES = [
    # (N, C, spatial, O, groups)
    (2, 24, (9, 13), 8, 1),      # more channels than maps: x read in place, dy transposed
    (3, 5, (7, 7), 19, 1),       # more maps: dy read in place, x transposed (5 columns padded to 8), 19 rows
    (2, 12, (6, 10), 18, 3),     # groups: 4 channels, 6 maps each
    (1, 40, (33, 31), 36, 2),    # one item of 1023 pixels
    (4, 16, (20,), 16, 1),       # 1-D
]


def _case(case):
    n, c, spatial, o, groups = case
    x, _, _, dy, _ = convData((n, c, spatial, o, (1,) * len(spatial), *_unit(len(spatial)), groups), np.float32)
    return x, dy, (o, c // groups) + (1,) * len(spatial), groups


def _unit(nd):
    return (1,) * nd, (0,) * nd, (1,) * nd


def _assertMatches(dw, x, dy, wShape, groups):
    nd = len(wShape) - 2
    ref, _ = convBackwardParams(x, dy, wShape, *_unit(nd), groups)
    assert dw.dtype == np.float32 and dw.shape == ref.shape
    # One chain of FMAs over an item's pixels per output, items added in order: a few ulps of the sums.
    assert np.abs(dw - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("case", CASES)
def test_matchesReference(case):
    x, dy, wShape, groups = _case(case)
    _assertMatches(conv_pointwise.backwardParams(x, dy, wShape, groups), x, dy, wShape, groups)


@pytest.mark.parametrize("case", CASES[:3])
def test_manyUnitsSplitBetweenParts(case, monkeypatch):
    # Units of 16 pixels: every item in several units, some items split between the two parts.
    monkeypatch.setattr(conv_pointwise, "UNIT_BYTES", 1)
    x, dy, wShape, groups = _case(case)
    units = conv_pointwise._units(x.shape[0], int(np.prod(x.shape[2:])), 24, 4)
    assert len(units) > x.shape[0] and np.all(units[:, 2] - units[:, 1] <= 16)
    _assertMatches(conv_pointwise.backwardParams(x, dy, wShape, groups), x, dy, wShape, groups)


@pytest.mark.parametrize("unitBytes", [None, 1])
def test_sameBitsOnAnyThreadCount(unitBytes, monkeypatch):
    if unitBytes is not None:
        monkeypatch.setattr(conv_pointwise, "UNIT_BYTES", unitBytes)
    x, dy, wShape, groups = _case(CASES[2])
    resultsOnThreads(monkeypatch, lambda: conv_pointwise.backwardParams(x, dy, wShape, groups), threads=(1, 2, 2, 3))


@pytest.mark.parametrize("case", [(8, 64, (32, 32), 16, 1), (2, 16, (40, 40), 48, 2)])
def test_workspaceEstimateBoundsPeak(case):
    x, dy, wShape, groups = _case(case)
    assert conv_pointwise.preferred(x.shape, wShape, groups, x.dtype)

    def call():
        conv_common.beginCall(x.nbytes)
        try:
            return conv_pointwise.backwardParams(x, dy, wShape, groups)
        finally:
            conv_common.endCall()

    estimate = conv.workspaceBytes("backwardParams", "gemm", x.shape, wShape, *UNIT, groups)
    assert estimate == conv_pointwise.workspaceBytes(x.shape, wShape, groups)
    result, peak = tracedPeak(call)
    peak -= result.nbytes
    assert peak <= estimate + (16 << 10)
    assert estimate <= 2 * peak + (64 << 10)


def test_dispatch():
    # Through conv.backwardParams with algo "gemm": here when preferred (with the bias gradient), BLAS otherwise.
    x, _, _, dy, args = convData((2, 16, (32, 32), 24, (1, 1), *UNIT, 1), np.float32)
    assert conv_pointwise.preferred(x.shape, (24, 16, 1, 1), 1, np.float32)
    dw, db = conv.backwardParams(x, dy, (24, 16, 1, 1), True, *args, algo="gemm")
    _assertMatches(dw, x, dy, (24, 16, 1, 1), 1)
    assert np.allclose(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-4)
    assert not conv_pointwise.preferred((8, 128, 28, 28), (128, 128, 1, 1), 1, np.float32)  # 784 pixels, 16384
    assert conv_pointwise.preferred((8, 512, 28, 28), (128, 512, 1, 1), 1, np.float32)  # 784 pixels, 65536
    assert not conv_pointwise.preferred((8, 64, 56, 56), (64, 64, 1, 1), 1, np.float64)


def test_resultIsNotScratch():
    # One unit (one item, its pixels in one block), more maps than channels, 8 channels: the summed partial
    # needs no transpose; the result must still be a copy, not a view of the workspace the next call reuses.
    x, dy, wShape, groups = _case((1, 8, (32, 32), 16, 1))
    assert len(conv_pointwise._units(1, 1024, 16, 4)) == 1
    first = conv_pointwise.backwardParams(x, dy, wShape, groups)
    kept = first.copy()
    conv_pointwise.backwardParams(2 * x, dy, wShape, groups)
    assert np.array_equal(first, kept)
    _assertMatches(first, x, dy, wShape, groups)
