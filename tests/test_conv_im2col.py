"""im2col's threaded paths (conv_im2col) against the float64 references of tests/reference.py.

Tiny tile bounds force many tiles (row bands of one item, several items per tile) so that every way the work
is cut and dealt out to threads is exercised on small shapes: the compiled col2im backward-data (a compiled
scatter split over channel ranges), the forward's per-thread tiles and the weight gradient's column blocks
summed over chunks in place or in fixed partials. Results must also be bit-identical on one thread and on two.
"""

import numpy as np
import pytest
from conftest import assertRestoresBlasThreads, convData, directionCalls, resultsOnThreads, setTiles, tracedPeak
from reference import convBackwardData, convBackwardParams, convForward

from PuzzleLib.Engines.cpu import conv, conv_common, conv_im2col

pytestmark = pytest.mark.skipif(not conv_im2col.useNumba, reason="numba is not installed")

# (N, C, spatial, O, kernel, stride, pad, dilation, groups)
CASES = [
    (3, 4, (11, 10), 6, (3, 3), (2, 2), (1, 1), (1, 1), 1),           # case 5's shape, small
    (2, 3, (15, 14), 5, (5, 5), (2, 2), (2, 2), (1, 1), 1),           # the 7x7 stride-2 stem, small
    (2, 4, (9, 8), 6, (3, 2), (2, 3), (1, 2), (2, 1), 2),             # groups, dilation, unequal strides
    (1, 3, (10, 9), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),            # one item: scatter split over channels
    (2, 4, (7, 6), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),             # stride 1 (through col2im when forced)
    (2, 3, (13,), 4, (3,), (2,), (1,), (1,), 1),                      # 1-D
    (2, 2, (4, 5, 6), 3, (2, 3, 2), (1, 2, 2), (1, 0, 1), (2, 1, 1), 1),  # 3-D
    (2, 3, (6, 5), 3, (1, 3), (2, 1), (1, 3), (1, 1), 3),             # pad beyond the kernel reach
]
TOL64 = dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tile", [600, 1 << 20])  # row bands of one item / whole items per tile
@pytest.mark.parametrize("case", CASES)
def test_col2imBackwardDataMatchesReference(case, tile, threads, monkeypatch):
    # Threads split each tile's scatter over channel ranges; one item or several per tile, or bands of rows.
    setTiles(monkeypatch, tile, threads)
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case)
    calls = []
    fast = conv_im2col._fastBackwardData
    monkeypatch.setattr(conv_im2col, "_fastBackwardData", lambda *a: calls.append(1) or fast(*a))
    dx = conv_im2col.im2colBackwardData(dy, w, x.shape, stride, pad, dilation, groups)
    if any(s > 1 for s in stride):
        assert calls == [1]
    else:  # unit stride with small weights goes through the forward; call col2im directly as well
        np.testing.assert_allclose(dx, convBackwardData(dy, w, x.shape, stride, pad, dilation, groups), **TOL64)
        dx = fast(dy, w, x.shape, stride, pad, dilation, groups)
    np.testing.assert_allclose(dx, convBackwardData(dy, w, x.shape, stride, pad, dilation, groups), **TOL64)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("partialBytes", [0, 1 << 30])  # dw's column blocks in place / chunks in partials
@pytest.mark.parametrize("tile", [700, 1 << 20])
@pytest.mark.parametrize("case", CASES[:3] + CASES[5:7])
def test_forwardAndWeightGradientMatchReference(case, tile, partialBytes, threads, monkeypatch):
    setTiles(monkeypatch, tile, threads)
    monkeypatch.setattr(conv_im2col, "_PARTIAL_BYTES", partialBytes)
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case)
    y = conv.forward(x, w, b, stride, pad, dilation, groups, algo="im2col")
    np.testing.assert_allclose(y, convForward(x, w, b, stride, pad, dilation, groups), **TOL64)
    dw, db = conv.backwardParams(x, dy, w.shape, True, stride, pad, dilation, groups, algo="im2col")
    rdw, rdb = convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)
    np.testing.assert_allclose(dw, rdw, **TOL64)
    np.testing.assert_allclose(db, rdb.reshape(-1), **TOL64)


@pytest.mark.parametrize("partialBytes", [0, 1 << 30])
@pytest.mark.parametrize("tile", [700, 1 << 20])
def test_sameBitsOnOneThreadOrTwo(tile, partialBytes, monkeypatch):
    # Tiles, blocks and partials are fixed by the shape: float32 results are bit-identical on 1 or 2 threads.
    monkeypatch.setattr(conv_im2col, "_PARTIAL_BYTES", partialBytes)

    def run():
        results = []
        for case in (CASES[0], CASES[2]):
            x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float32)
            results += [conv.forward(x, w, b, stride, pad, dilation, groups, algo="im2col"),
                        conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="im2col"),
                        conv.backwardParams(x, dy, w.shape, False, stride, pad, dilation, groups, algo="im2col")[0]]
        return results

    resultsOnThreads(monkeypatch, run, tile=tile)


@pytest.mark.skipif(conv_common.blasThreads is None, reason="no control of the BLAS threads")
def test_backwardDataRestoresBlasThreads():
    x, w, b, dy, (stride, pad, dilation, groups) = convData(CASES[0], np.float32)
    assertRestoresBlasThreads(lambda: conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="im2col"))


def test_backwardDataScratchWithinOneTile():
    # The column tile is bounded by the call's bound (about half of dx); nothing else of that size is allocated.
    case = (4, 16, (24, 24), 16, (3, 3), (2, 2), (1, 1), (1, 1), 1)
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float32)
    dx, peak = tracedPeak(lambda: conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="im2col"))
    bound = conv_common.tileBytesFor(dx.nbytes)
    assert peak - dx.nbytes <= bound + (64 << 10)
    np.testing.assert_allclose(dx, convBackwardData(dy, w, x.shape, stride, pad, dilation, groups),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [CASES[0], CASES[5], CASES[6]])
def test_weightGradientWholeItemChunksDeinterleavedPerBlock(case, dtype, monkeypatch):
    # A strided last axis, chunks of whole items and dw's columns cut into blocks that split channels: each
    # unit de-interleaves its items' channels of its block in turn (no copy of all of x) and gathers as the
    # forward does, laid out (rows, items, pixels). Where the per-unit buffer does not fit next to the columns,
    # the strided axis is read in place. All match the reference, with the same bits on one thread and on two.
    monkeypatch.setattr(conv_im2col, "_DW_ROWS", 4)
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, dtype)
    pixels = np.prod(dy.shape[2:])
    calls = []
    gather = conv_im2col._gatherItems5
    monkeypatch.setattr(conv_im2col, "_gatherItems5", lambda *a: calls.append((a[14], a[1].shape[1])) or gather(*a))
    tol = TOL64 if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    ref = convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)[0]
    for scale in (8, 9, 14, 16, 20, 28, 36, 48):  # bounds of 2 to 12 item-rows of 4 (the path needs room)
        tile = 2 * (pixels * x.itemsize * scale)
        # The minimum set to this bound (setTiles alone would keep the smallest bound of the scales before).
        monkeypatch.setattr(conv_common, "MIN_TILE_BYTES", tile)
        dw = resultsOnThreads(monkeypatch, lambda: conv.backwardParams(x, dy, w.shape, False, stride, pad, dilation,
                                                                       groups, algo="im2col")[0],
                              tile=tile, threads=(1, 2))
        np.testing.assert_allclose(dw, ref, **tol)
    assert calls and max(nb for nb, _ in calls) > 1  # chunks of several items, taken in turn
    assert min(channels for _, channels in calls) < x.shape[1]  # blocks of part of the channels


@pytest.mark.parametrize("threads", [1, 2])
def test_forwardDeinterleavesWholeItemTilesOnly(threads, monkeypatch):
    # Whole-item tiles de-interleave their own items (no copy of all of x); bands of rows within an item use
    # one copy of x for the call. Both match the reference.
    x, w, b, dy, (stride, pad, dilation, groups) = convData(CASES[1])
    calls = []
    tileFn = conv_im2col._deinterleaveTile
    monkeypatch.setattr(conv_im2col, "_deinterleaveTile", lambda *a: calls.append(1) or tileFn(*a))
    for tile, perTile in ((1 << 20, True), (900, False)):
        setTiles(monkeypatch, tile, threads)
        calls.clear()
        y = conv.forward(x, w, b, stride, pad, dilation, groups, algo="im2col")
        assert bool(calls) == perTile
        np.testing.assert_allclose(y, convForward(x, w, b, stride, pad, dilation, groups), **TOL64)


def test_biasGradientSplitOverMapsSameBits(monkeypatch):
    # Large enough to be split between threads; each map's sum is the same on one thread or two.
    rng = np.random.default_rng(3)
    dy = rng.standard_normal((3, 7, 260, 250)).astype(np.float32)

    def sums():  # of dy contiguous, and not
        return conv_im2col.biasGrad(dy), conv_im2col.biasGrad(dy.transpose(0, 1, 3, 2))

    for got in resultsOnThreads(monkeypatch, sums, threads=(1, 2)):
        np.testing.assert_allclose(got, dy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_biasGradientFromTheWeightGradientPartials(dtype, monkeypatch):
    # Chunks summed in fixed partials, one block of dw's columns: the bias gradient is the partials' extra row
    # (no separate pass over dy), the same bits on one thread or two.
    x, w, b, dy, (stride, pad, dilation, groups) = convData(CASES[1], dtype)
    calls = []
    monkeypatch.setattr(conv_im2col, "biasGrad", lambda *a: calls.append(1))
    dw, db = resultsOnThreads(monkeypatch, lambda: conv.backwardParams(x, dy, w.shape, True, stride, pad, dilation,
                                                                       groups, algo="im2col"),
                              tile=16800 * x.itemsize // 8, threads=(1, 2))  # bands of two output rows, one block
    assert not calls
    rdw, rdb = convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)
    tol = TOL64 if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, rdw, **tol)
    np.testing.assert_allclose(db, rdb.reshape(-1), **tol)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("xShape,wShape,stride,pad,groups", [
    ((8, 64, 28, 28), (64, 64, 3, 3), (2, 2), (1, 1), 1),   # whole-item tiles de-interleaved per thread; partials
    ((4, 3, 48, 48), (16, 3, 7, 7), (2, 2), (3, 3), 1),     # the stem, small: x de-interleaved once for dw
    ((1, 64, 56, 56), (64, 64, 3, 3), (2, 2), (1, 1), 1),   # bands of rows: x de-interleaved once; one item col2im
    ((4, 32, 20, 20), (32, 32, 3, 3), (1, 1), (1, 1), 1),   # stride 1: backward-data with the flipped kernel
    ((4, 32, 28, 28), (32, 8, 3, 3), (2, 2), (1, 1), 4),    # groups: dy transposed once for dw
    ((2, 8, 6, 10, 10), (8, 8, 3, 3, 3), (1, 1, 1), (1, 1, 1), 1),  # 3-D
    ((3, 16, 200), (16, 16, 3), (2,), (1,), 1),             # 1-D: conv_implicit's forward and weight gradient
])
def test_workspaceEstimateBoundsPeak(xShape, wShape, stride, pad, groups, threads, monkeypatch):
    # The estimate counts every per-thread buffer (column tiles, de-interleaved items, partial products, sgemm's
    # edge tiles) and the call-wide ones: the call's peak stays within it, and it does not overstate the peak.
    monkeypatch.setattr(conv_common, "THREADS", threads)
    rng = np.random.default_rng(6)
    x = rng.standard_normal(xShape).astype(np.float32)
    w = rng.standard_normal(wShape).astype(np.float32)
    args = (stride, pad, (1,) * len(stride), groups)
    dy = rng.standard_normal((xShape[0], wShape[0]) + conv.outputShape(xShape[2:], wShape[2:], *args[:3])) \
        .astype(np.float32)
    for direction, call in directionCalls(x, w, dy, args, "im2col").items():
        estimate = conv.workspaceBytes(direction, "im2col", xShape, wShape, *args)
        result, peak = tracedPeak(call)
        peak -= result.nbytes
        assert peak <= estimate + (64 << 10), direction
        assert estimate <= 2 * peak + (256 << 10), direction
