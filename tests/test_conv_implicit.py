"""Implicit GEMMs (conv_implicit), forward and weight gradient: float32 against the float64 references of
tests/reference.py on 1-D to 3-D shapes (strides on every axis, dilation, padding, groups, maps not a multiple
of 8, output rows not a multiple of 8, 16 or 32 pixels), the same bits on 1 or 2 threads, and the dispatch rules."""

import numpy as np
import pytest
from conftest import convInputs32, resultsOnThreads, tracedPeak
from reference import convBackwardParams, convForward, outShape

from PuzzleLib.Engines.cpu import conv, conv_common, conv_implicit

pytestmark = pytest.mark.skipif(not conv_implicit.available, reason="numba is not installed")

SHAPES = [
    # (n, c, o, groups, spatial, kernel, stride, pad, dilation)
    (2, 3, 10, 1, (23, 30), (7, 7), (2, 2), (3, 3), (1, 1)),  # case 3's stem, small
    (2, 6, 12, 2, (9, 11), (3, 3), (1, 1), (1, 2), (2, 1)),  # groups, dilation, uneven padding
    (1, 4, 40, 1, (5, 6), (1, 3), (1, 1), (0, 1), (1, 1)),  # 40 maps: a 32 and an 8 panel
    (3, 8, 36, 4, (17,), (5,), (3,), (2,), (1,)),  # 1-D, 9 maps per group
    (2, 4, 8, 1, (5, 6, 7), (3, 3, 3), (2, 1, 1), (1, 1, 1), (1, 1, 1)),  # 3-D
    (3, 5, 70, 1, (7, 9), (3, 3), (2, 2), (1, 1), (1, 1)),  # 32 + 32 + 8 maps (6 padded), 20 pixels an item
    (1, 2, 16, 1, (4, 4), (2, 2), (2, 2), (0, 0), (1, 1)),  # no padding; 4 pixels in all
    (2, 3, 20, 1, (40, 90), (3, 5), (1, 3), (1, 2), (1, 2)),  # rows of 29: 16 + 8 + 5 pixels; stride 3, dilated
    (1, 3, 9, 1, (6, 120), (3, 3), (1, 1), (1, 1), (1, 1)),  # rows of 120: 3 x 32 + 16 + 8
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("withBias", [True, False])
def test_forwardMatchesFloat64Reference(shape, withBias):
    n, c, o, groups, spatial, kernel, stride, pad, dilation = shape
    x, w, bias = convInputs32(n, c, o, groups, spatial, kernel)
    bias = bias if withBias else None
    y = conv_implicit.forward(x, w, bias, stride, pad, dilation, groups)
    ref = convForward(x, w, bias, stride, pad, dilation, groups)
    assert y.dtype == np.float32 and y.shape == ref.shape
    # One float32 chain of C/g * taps FMAs per output: within a few ulps of the magnitudes summed.
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("own", [False, True])
@pytest.mark.parametrize("shape", SHAPES[:2] + SHAPES[7:])
def test_sameBitsOnOneOrTwoThreads(shape, own, monkeypatch):
    # own: each thread copies its rows' items itself (items split between the threads included); the bits are
    # those of the copy of all of x made first.
    n, c, o, groups, spatial, kernel, stride, pad, dilation = shape
    x, w, bias = convInputs32(n, c, o, groups, spatial, kernel, seed=1)
    monkeypatch.setattr(conv_common, "PARALLEL_WORK", 1)
    monkeypatch.setattr(conv_implicit, "OWN_ITEM_BYTES", 1 << 30)
    first = conv_implicit.forward(x, w, bias, stride, pad, dilation, groups)
    monkeypatch.setattr(conv_implicit, "OWN_ITEM_BYTES", 1 if own else 1 << 30)
    got = resultsOnThreads(monkeypatch, lambda: conv_implicit.forward(x, w, bias, stride, pad, dilation, groups),
                           threads=(1, 2, 3))
    assert np.array_equal(got, first)


@pytest.mark.skipif(not conv_implicit.sgemm.available, reason="dispatched on AVX-512 hosts only")
def test_dispatchedFromIm2colForwardInFloat32Only():
    x, w, bias = convInputs32(2, 3, 10, 1, (23, 70), (7, 7))  # rows of 35 pixels, depth 147
    args = ((2, 2), (3, 3), (1, 1), 1)
    assert conv_implicit.preferred(x.shape, w.shape, *args, np.float32)
    assert not conv_implicit.preferred(x.shape, w.shape, *args, np.float64)
    assert not conv_implicit.preferred((8, 128, 28, 28), (256, 128, 3, 3), *args, np.float32)  # deep, short rows
    assert not conv_implicit.preferred((8, 3, 64, 40), (64, 3, 7, 7), *args, np.float32)  # rows of 20
    y = conv.forward(x, w, bias, *args, algo="im2col")
    assert np.array_equal(y, conv_implicit.forward(x, w, bias, *args))
    y64 = convForward(x, w, bias, *args)  # float64 inputs go through im2col (BLAS): the reference stays independent
    assert np.abs(y64 - y).max() <= 1e-5 * np.abs(y64).max()


@pytest.mark.skipif(not conv_implicit.sgemm.available, reason="dispatched on AVX-512 hosts only")
@pytest.mark.parametrize("own", [False, True])
def test_workspaceEstimateCoversThePhasedCopy(own, monkeypatch):
    # Small items are de-interleaved all at once; with own, each thread copies its rows' items one at a time.
    monkeypatch.setattr(conv_implicit, "OWN_ITEM_BYTES", 1 if own else 1 << 30)
    xShape, wShape = (2, 3, 23, 70), (10, 3, 7, 7)
    need = conv_implicit.workspaceBytes(xShape, wShape, (2, 2), (3, 3), (1, 1), 1)
    item = 3 * 2 * 29 * 38  # 76 padded columns in 2 phases of 38
    threads = conv_common.threadCount(2 * 12, 2 * 12 * 35 * 10 * 147)  # 12 rows of 35 per item
    phased = threads * (item + conv_implicit._SLACK) if own else 2 * item + conv_implicit._SLACK
    assert need == (phased + 2 * 147 * 8) * 4
    assert conv.workspaceBytes("forward", "im2col", xShape, wShape, (2, 2), (3, 3), (1, 1), 1) == need
    # And it covers what a call allocates beyond its result (numpy's allocations, traced), with the same bits.
    x, w, bias = convInputs32(*xShape[:2], wShape[0], 1, xShape[2:], wShape[2:])
    y, peak = tracedPeak(lambda: conv.forward(x, w, bias, (2, 2), (3, 3), (1, 1), 1, algo="im2col"))
    assert peak - y.nbytes <= need + (16 << 10)  # tables, per-thread scratch tiles
    monkeypatch.setattr(conv_implicit, "OWN_ITEM_BYTES", 1 << 30 if own else 1)
    assert np.array_equal(y, conv.forward(x, w, bias, (2, 2), (3, 3), (1, 1), 1, algo="im2col"))


GRAD_SHAPES = [
    # (n, c, o, groups, spatial, kernel, stride, pad, dilation): rows of 16 pixels or more, maps per group % 4 == 0
    (2, 3, 12, 1, (23, 70), (7, 7), (2, 2), (3, 3), (1, 1)),  # rows of 35: two vectors and a masked tail
    (2, 6, 16, 2, (9, 41), (3, 3), (1, 1), (1, 2), (2, 1)),  # groups, dilation
    (2, 3, 20, 1, (40, 90), (3, 5), (1, 3), (1, 2), (1, 2)),  # stride 3 on the rows
    (3, 8, 32, 4, (60,), (5,), (3,), (2,), (1,)),  # 1-D
    (2, 4, 8, 1, (5, 6, 40), (3, 3, 3), (2, 1, 1), (1, 1, 1), (1, 1, 1)),  # 3-D
    (1, 2, 4, 1, (3, 16), (3, 3), (1, 1), (1, 1), (1, 1)),  # rows of exactly 16
]


def _gradCase(shape, seed=0):
    n, c, o, groups, spatial, kernel, stride, pad, dilation = shape
    x, w, _ = convInputs32(n, c, o, groups, spatial, kernel, seed)
    out = outShape(spatial, kernel, stride, pad, dilation)
    dy = np.random.default_rng(seed + 7).standard_normal((n, o) + out).astype(np.float32)
    return x, w, dy


@pytest.mark.parametrize("shape", GRAD_SHAPES)
def test_weightGradientMatchesFloat64Reference(shape):
    x, w, dy = _gradCase(shape)
    _, _, _, groups, _, _, stride, pad, dilation = shape
    dw, db = conv_implicit.backwardParams(x, dy, w.shape, stride, pad, dilation, groups, withBias=True)
    ref, refDb = convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)
    refDb = refDb.ravel()  # shaped (1, O, 1, ...) by the reference
    assert dw.dtype == np.float32 and dw.shape == w.shape and db.dtype == np.float32
    assert np.abs(dw - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.abs(db - refDb).max() <= 1e-5 * np.abs(refDb).max()
    alone, none = conv_implicit.backwardParams(x, dy, w.shape, stride, pad, dilation, groups)
    assert none is None and np.array_equal(alone, dw)  # the bias tap changes no other sum


@pytest.mark.parametrize("shape", GRAD_SHAPES[:1] + GRAD_SHAPES[4:5])
def test_weightGradientSameBitsOnOneOrTwoThreads(shape, monkeypatch):
    x, w, dy = _gradCase(shape, seed=2)
    _, _, _, groups, _, _, stride, pad, dilation = shape
    monkeypatch.setattr(conv_common, "PARALLEL_WORK", 1)

    def run():
        return conv_implicit.backwardParams(x, dy, w.shape, stride, pad, dilation, groups, withBias=True)

    dw, _ = resultsOnThreads(monkeypatch, run, threads=(1, 2))
    # Several units per part (still on two threads): other sums, the same within rounding.
    monkeypatch.setattr(conv_implicit, "UNIT_BYTES", 1)
    assert np.abs(run()[0] - dw).max() <= 1e-5 * np.abs(dw).max()


@pytest.mark.skipif(not conv_implicit.sgemm.available, reason="dispatched on AVX-512 hosts only")
def test_weightGradientDispatchedFromIm2col():
    x, w, dy = _gradCase((2, 3, 8, 1, (20, 200), (3, 3), (1, 1), (1, 1), (1, 1)))
    args = ((1, 1), (1, 1), (1, 1), 1)
    assert conv_implicit.backwardParamsPreferred(x.shape, w.shape, *args, np.float32)
    assert not conv_implicit.backwardParamsPreferred(x.shape, w.shape, *args, np.float64)
    assert not conv_implicit.backwardParamsPreferred(x.shape, (6, 3, 3, 3), *args, np.float32)  # 6 maps
    assert not conv_implicit.backwardParamsPreferred((2, 3, 20, 48), w.shape, *args, np.float32)  # rows of 48
    dw, db = conv.backwardParams(x, dy, w.shape, True, *args, algo="im2col")
    direct, directDb = conv_implicit.backwardParams(x, dy, w.shape, *args, withBias=True)
    assert np.array_equal(dw, direct) and np.array_equal(db, directDb)
    refDb = dy.astype(np.float64).sum(axis=(0, 2, 3))
    assert np.abs(db - refDb).max() <= 1e-5 * np.abs(refDb).max()
    need = conv_implicit.backwardParamsWorkspace(x.shape, w.shape, (1, 1), (1, 1), 1)
    assert conv.workspaceBytes("backwardParams", "im2col", x.shape, w.shape, *args) == need
