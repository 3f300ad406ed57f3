"""The convolution engine's scratch memory and its algorithm optimiser.

Scratch buffers are kept between calls for reuse, up to a bound, until freed; a call's buffers stay within
the stated bounds. optimizeForShape keeps a valid choice, gives the default's results, respects memlimit and
leaves no memory held.
"""

import gc
import tracemalloc

import numpy as np
import pytest
from conftest import convData, tracedPeak
from reference import convBackwardData, convBackwardParams, convForward

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Engines.cpu import conv, conv_common, conv_winograd, sgemm
from PuzzleLib.Modules.Conv2D import Conv2D

_NUMPY_DOMAIN = 389047  # numpy reports its data buffers to tracemalloc under this domain


def _numpyBytes():
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, _NUMPY_DOMAIN)])
    return sum(stat.size for stat in snap.statistics("filename"))


SHAPES = [  # (x shape, w shape, pad, algo)
    ((4, 16, 30, 30), (16, 16, 3, 3), 1, "winograd"),
    ((3, 8, 21, 17), (12, 8, 3, 3), 1, "im2col"),
    ((2, 32, 9, 9), (32, 32, 1, 1), 0, "gemm"),
]


@pytest.mark.parametrize("xShape,wShape,pad,algo", SHAPES)
def test_workspaceKeptBetweenCallsUntilFreed(xShape, wShape, pad, algo):
    """What the calls keep beyond their results is the workspace, which a second round of calls reuses without
    growing, and gpuarray.memoryPool.freeHeld() hands back."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(xShape).astype(np.float32)
    w = rng.standard_normal(wShape).astype(np.float32)
    b = rng.standard_normal(wShape[0]).astype(np.float32)
    params = ((1, 1), (pad, pad), (1, 1), 1)
    y = conv.forward(x, w, b, *params, algo=algo)
    dy = rng.standard_normal(y.shape).astype(np.float32)

    def calls():
        return [conv.forward(x, w, b, *params, algo=algo), conv.backwardData(dy, w, x.shape, *params, algo=algo),
                *conv.backwardParams(x, dy, w.shape, True, *params, algo=algo)]

    gpuarray.memoryPool.freeHeld()
    tracemalloc.start()
    try:
        before = _numpyBytes()
        outs = calls()
        kept = _numpyBytes() - before - sum(o.nbytes for o in outs)
        held = conv_common.workspace.nbytes
        assert gpuarray.memoryPool.heldBytes == held
        assert held - 4096 <= kept <= held + 4096, f"{kept} bytes kept, {held} in the workspace"
        del outs
        outs = calls()
        assert conv_common.workspace.nbytes == held
        gpuarray.memoryPool.freeHeld()
        assert conv_common.workspace.nbytes == 0
        assert _numpyBytes() - before - sum(o.nbytes for o in outs) <= 4096
    finally:
        tracemalloc.stop()
    tol = 5e-5 if algo == "winograd" else 1e-5
    ref = convForward(x, w, b, *params)
    np.testing.assert_allclose(outs[0], ref, atol=tol * np.abs(ref).max())


def test_workspaceOverHeldBytesReleased(monkeypatch):
    """A call whose scratch is over HELD_BYTES leaves none held."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 8, 21, 17)).astype(np.float32)
    w = rng.standard_normal((12, 8, 3, 3)).astype(np.float32)
    params = ((1, 1), (1, 1), (1, 1), 1)
    conv.forward(x, w, None, *params, algo="im2col")
    assert 0 < conv_common.workspace.nbytes
    monkeypatch.setattr(conv_common, "HELD_BYTES", conv_common.workspace.nbytes - 1)
    conv.forward(x, w, None, *params, algo="im2col")
    assert conv_common.workspace.nbytes == 0


def _tracedCallPeak(call):
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_arenaReusedAndSharedByAlgorithms():
    """A warm call takes its scratch from the kept arena (its traced peak is the arena's size below the first
    call's), and calls of two algorithms keep the larger one's scratch, not the sum."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 32, 40, 40)).astype(np.float32)
    w = rng.standard_normal((48, 32, 3, 3)).astype(np.float32)
    calls = {"winograd": lambda: conv.forward(x, w, None, (1, 1), (1, 1), (1, 1), 1, algo="winograd"),
             "im2col": lambda: conv.forward(x, w, None, (2, 2), (1, 1), (1, 1), 1, algo="im2col")}
    own = {}
    for algo, call in calls.items():
        call()  # compiled kernels, plans
        gpuarray.memoryPool.freeHeld()
        cold = _tracedCallPeak(call)
        own[algo] = conv_common.workspace.nbytes
        warm = _tracedCallPeak(call)
        # Slack for the calls' Python objects, which tracemalloc counts too.
        assert own[algo] > (128 << 10) and cold - warm >= own[algo] - (64 << 10), (algo, own[algo], cold - warm)
    for call in [*calls.values(), *calls.values()]:
        call()
    assert conv_common.workspace.nbytes == max(own.values())


def test_workspaceRewindReusesOnlyWhatFollowsTheMark():
    """After rewind(mark), requests reuse the memory of the regions carved since the mark, never of those
    before it (an enclosing algorithm's), and the arena is sized to the most carved at once."""
    ws = conv_common._Workspace()
    for _ in range(2):  # the first round carves buffers of their own, the second the arena
        before = ws.get("before", (100,), np.float32)
        before[:] = 1
        mark = ws.mark()
        dead = ws.get("dead", (200,), np.float32)
        ws.rewind(mark)
        after = ws.get("after", (200,), np.float32)
        after[:] = 2
        assert np.all(before == 1)
        assert not np.shares_memory(before, after)
        arena = ws.nbytes
        ws.settle(1 << 30)
    assert np.shares_memory(dead, after)
    assert arena == ws.nbytes == 64 * 7 + 800  # "before" (400 bytes, padded to 448), then 800: not 800 twice


# One case per path that keeps scratch (N, C, spatial, O, kernel, stride, pad, dilation, groups).
REUSE_CASES = [
    (2, 192, (8, 8), 256, (1, 1), (1, 1), (0, 0), (1, 1), 1),     # 1x1 through sgemm, packed weights
    (2, 6, (5, 7), 4, (1, 1), (1, 1), (0, 0), (1, 1), 2),          # 1x1 through BLAS
    (2, 5, (9, 11), 7, (3, 3), (1, 1), (1, 1), (1, 1), 1),         # F(4x4), F(2x2)
    (2, 32, (7, 7), 32, (3, 3), (1, 1), (1, 1), (1, 1), 1),        # F(4x2)
    (2, 16, (14, 13), 24, (3, 3), (2, 2), (1, 1), (1, 1), 1),      # stride-2 Winograd
    (2, 3, (23, 22), 5, (7, 7), (2, 2), (3, 3), (1, 1), 1),        # im2col, implicit GEMM, phases
    (2, 4, (11, 13), 6, (3, 3), (1, 1), (1, 2), (2, 3), 2),        # dilated: polyphase
    (2, 8, (20,), 8, (3,), (1,), (1,), (1,), 1),                   # 1-D Winograd
    (2, 4, (5, 6, 7), 6, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 2),   # 3-D Winograd
    (2, 6, (8, 7), 6, (3, 3), (1, 1), (1, 1), (1, 1), 6),          # depthwise
    (2, 1, (12, 12), 1, (3, 3), (1, 1), (1, 1), (1, 1), 1),        # F(4x4), one map: dW's view is contiguous
]


def _directionCall(direction, algo, x, w, b, dy, params):
    if direction == "forward":
        return (conv.forward(x, w, b, *params, algo=algo),)
    if direction == "backwardData":
        return (conv.backwardData(dy, w, x.shape, *params, algo=algo),)
    return conv.backwardParams(x, dy, w.shape, True, *params, algo=algo)


@pytest.mark.parametrize("case", REUSE_CASES)
def test_resultsOutliveTheNextCall(case):
    """No result is a view of the kept scratch: a second call, on other data, leaves the first's results as they
    were, for every algorithm and direction."""
    first, second = convData(case, np.float32, seed=0), convData(case, np.float32, seed=1)
    params = first[4]
    for direction in conv.DIRECTIONS:
        for algo in conv.algorithms(direction, first[0].shape, first[1].shape, *params):
            results = _directionCall(direction, algo, *first[:4], params)
            copies = [r.copy() for r in results]
            _directionCall(direction, algo, *second[:4], params)
            for got, kept in zip(results, copies):
                assert np.array_equal(got, kept), (direction, algo)


def test_winogradScratchWithinBound():
    """The transform buffers of one call stay under chunkBytes (1 MiB, a quarter of the result) plus a row."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 32, 40, 40)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    y, peak = tracedPeak(lambda: conv.forward(x, w, None, (1, 1), (1, 1), (1, 1), 1, algo="winograd"))
    rowBytes = 36 * 64 * 10 * 4  # one row of 10 tiles, V and M
    bound = conv_winograd.chunkBytes(y.nbytes) + rowBytes + 36 * 32 * 32 * 4 + (64 << 10)
    assert peak - y.nbytes <= bound
    assert conv.workspaceBytes("forward", "winograd", x.shape, w.shape, (1, 1), (1, 1), (1, 1), 1) <= bound
    np.testing.assert_allclose(y, convForward(x, w, None, (1, 1), (1, 1), (1, 1), 1), atol=5e-5 * np.abs(y).max())


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
def test_winogradWeightGradientChunks():
    """The weight gradient keeps chunkBytes' bound for operands under 2 MiB and takes longer chunks from 2 MiB
    (up to GRAD_CHUNK_BYTES and 1.25x the operand); its peak stays within the engine's estimate."""
    for size in (1, 200 << 10, conv_winograd.CHUNK_BYTES - 1):
        assert conv_winograd.gradChunkBytes(size) == conv_winograd.chunkBytes(size)
    for size in (conv_winograd.CHUNK_BYTES, 3 << 20, 64 << 20):
        bound = conv_winograd.gradChunkBytes(size)
        assert conv_winograd.chunkBytes(size) <= bound <= min(conv_winograd.GRAD_CHUNK_BYTES, size * 5 // 4)
    assert conv_winograd.gradChunkBytes(64 << 20) == conv_winograd.GRAD_CHUNK_BYTES
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 64, 48, 48)).astype(np.float32)  # 2.25 MiB: the longer chunks
    dy = rng.standard_normal(x.shape).astype(np.float32)
    wShape, args = (64, 64, 3, 3), ((1, 1), (1, 1), (1, 1), 1)
    dw, peak = tracedPeak(lambda: conv.backwardParams(x, dy, wShape, False, *args, algo="winograd")[0])
    estimate = conv.workspaceBytes("backwardParams", "winograd", x.shape, wShape, *args)
    shorter = conv_winograd.workspaceBytes(x.shape, 64, (1, 1), resultBytes=x.nbytes, grad=True,
                                           tileBytes=conv_winograd.chunkBytes(x.nbytes))
    assert shorter < peak - dw.nbytes <= estimate
    ref = convBackwardParams(x.astype(np.float64), dy.astype(np.float64), wShape, *args)[0]
    np.testing.assert_allclose(dw, ref, atol=5e-5 * np.abs(ref).max())


@pytest.mark.parametrize("items", [1, 3])
def test_pointwiseScratchWithinEstimate(items):
    """The 1x1 forward's and backward-data's scratch (packed weights and edge tiles where sgemm runs them) stays
    within the estimate."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((items, 192, 16, 16)).astype(np.float32)
    w = rng.standard_normal((256, 192, 1, 1)).astype(np.float32)  # 192 KiB packed: well over the slack
    b = rng.standard_normal(256).astype(np.float32)
    dy = rng.standard_normal((items, 256, 16, 16)).astype(np.float32)
    params = ((1, 1), (0, 0), (1, 1), 1)
    calls = {"forward": lambda: conv.forward(x, w, b, *params, algo="gemm"),
             "backwardData": lambda: conv.backwardData(dy, w, x.shape, *params, algo="gemm")}
    for direction, call in calls.items():
        result, peak = tracedPeak(call)
        estimate = conv.workspaceBytes(direction, "gemm", x.shape, w.shape, *params)
        assert peak - result.nbytes <= estimate + (64 << 10), direction  # and the calls' Python objects
        assert (estimate >= w.nbytes) == sgemm.applies(np.dtype(np.float32)), direction
    np.testing.assert_allclose(calls["forward"](), convForward(x, w, b, *params), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(calls["backwardData"](), convBackwardData(dy, w, x.shape, *params), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
def test_winogradBackwardDataScratchAsForward():
    """F(4x4)'s backward-data (the forward of the flipped kernel) holds no more than the forward on the same
    shapes: the flipped copy of the kernel lives only for its transform."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 64, 40, 40)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    params = ((1, 1), (1, 1), (1, 1), 1)
    y, forwardPeak = tracedPeak(lambda: conv.forward(x, w, None, *params, algo="winograd"))
    dx, dataPeak = tracedPeak(lambda: conv.backwardData(x, w, x.shape, *params, algo="winograd"))
    # Slack for the calls' Python objects (24 KB in a fresh CI environment), well under the kernel's 144 KiB.
    assert dataPeak - dx.nbytes <= forwardPeak - y.nbytes + (64 << 10)
    np.testing.assert_allclose(dx, convBackwardData(x, w, x.shape, *params), atol=5e-5 * np.abs(dx).max())


def test_im2colTileFollowsResult():
    """im2col's per-call tile is about half its result, within [MIN_TILE_BYTES, TILE_BYTES]."""
    assert conv_common.tileBytesFor(0) == conv_common.MIN_TILE_BYTES
    assert conv_common.tileBytesFor(1 << 40) == conv_common.TILE_BYTES
    assert conv_common.tileBytesFor(5 << 20) == 5 << 19
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 24, 40, 40)).astype(np.float32)
    w = rng.standard_normal((8, 24, 3, 3)).astype(np.float32)
    y, peak = tracedPeak(lambda: conv.forward(x, w, None, (1, 1), (1, 1), (2, 2), 1, algo="im2col"))
    columns = 4 * 24 * 9 * y.shape[2] * y.shape[3] * 4  # the whole column matrix: 5.9 MiB
    # A tile of about MIN_TILE_BYTES, plus whatever the gather path copies of the (small) input.
    assert peak - y.nbytes <= conv_common.MIN_TILE_BYTES + x.nbytes + (64 << 10) < columns


# -- optimizeForShape ----------------------------------------------------------------------------------------
def _module(seed=1):
    np.random.seed(seed)
    return Conv2D(16, 16, 3, pad=1)


def test_optimizeKeepsValidChoiceAndDefaultResults():
    module = _module()
    x = gpuarray.to_gpu(np.random.standard_normal((2, 16, 14, 14)).astype(np.float32))
    dy = gpuarray.to_gpu(np.random.standard_normal((2, 16, 14, 14)).astype(np.float32))
    default = module(x).get()
    module.backward(dy)
    defaultGrads = module.grad.get(), module.vars["W"].grad.get().copy()
    tracemalloc.start()
    try:
        before = _numpyBytes()
        module.optimizeForShape(x.shape)
        held = _numpyBytes() - before
    finally:
        tracemalloc.stop()
    assert held <= 4096 and conv_common.workspace.nbytes == 0
    for direction, algo in zip(conv.DIRECTIONS, (module.fwdAlgo, module.bwdDataAlgo, module.bwdFilterAlgo)):
        assert algo in conv.algorithms(direction, x.shape, module.wshape, (1, 1), (1, 1), (1, 1), 1)
    y = module(x).get()
    module.zeroGradParams()
    module.backward(dy)
    # Winograd differs from the others within its stated bound (5e-5 of the largest value), nothing more.
    for got, want in [(y, default), (module.grad.get(), defaultGrads[0]), (module.vars["W"].grad.get(),
                                                                          defaultGrads[1])]:
        np.testing.assert_allclose(got, want, atol=5e-5 * np.abs(want).max())
    again = module(x).get()
    assert np.array_equal(again, y)


def test_optimizeNeverSlowerThanDefaultByItsOwnMeasure():
    shape, wShape, params = (2, 16, 14, 14), (16, 16, 3, 3), ((1, 1), (1, 1), (1, 1), 1)
    for direction in conv.DIRECTIONS:
        algo, results = conv.optimizeAlgorithm(direction, shape, wShape, *params, repeats=3)
        times = {r[0]: r[1] for r in results}
        default = conv.chooseAlgorithm(direction, shape, wShape, *params)
        assert algo in times and times[algo] <= times[default]


def test_optimizeMemlimitForcesSmallestWorkspace():
    module = _module()
    module.optimizeForShape((2, 16, 14, 14), memlimit=1)
    assert (module.fwdAlgo, module.bwdDataAlgo, module.bwdFilterAlgo) == ("direct",) * 3
    # A limit nothing fits still gives a valid (smallest-workspace) choice, never None.
    algo, results = conv.optimizeAlgorithm("forward", (2, 16, 14, 14), (16, 16, 3, 3), (1, 1), (1, 1), (1, 1), 1,
                                           memlimit=-1)
    assert results == [] and algo == "direct"
    x = gpuarray.to_gpu(np.random.standard_normal((2, 16, 14, 14)).astype(np.float32))
    y = module(x).get()
    ref = convForward(x.get(), module.W.get(), None, (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(y, ref, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("stride", [1, 2])
def test_im2colWeightGradientNoWeightSizedTemporaries(stride):
    """Deep maps (dw much larger than x): the weight gradient is written in place, tile by tile.

    Scratch is one column tile plus dy's transposed copy; no per-item or summed dw-sized arrays, and a
    stride-2 input is read in place (no de-interleaved copy of x).
    """
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 256, 7 * stride, 7 * stride)).astype(np.float32)
    w = rng.standard_normal((256, 256, 3, 3)).astype(np.float32)
    params = ((stride, stride), (1, 1), (1, 1), 1)
    dy = rng.standard_normal((4, 256, 7, 7)).astype(np.float32)
    (dw, _), peak = tracedPeak(lambda: conv.backwardParams(x, dy, w.shape, False, *params, algo="im2col"))
    tile = conv_common.tileBytesFor(max(x.nbytes, dy.nbytes))
    assert peak - dw.nbytes <= tile + dy.nbytes + (64 << 10) < dw.nbytes
    ref = convBackwardParams(x, dy, w.shape, *params)[0]
    np.testing.assert_allclose(dw, ref, atol=1e-5 * np.abs(ref).max())


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
def test_winograd3dScratchBounded():
    """3-D Winograd stacks kD input slices per output slice in bounded chunks and writes the result in
    place: scratch stays under one stack chunk plus the transform buffers, far below the whole stack."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 16, 12, 24, 24)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 16, 12, 24, 24)).astype(np.float32)
    args = ((1, 1, 1), (1, 1, 1), (1, 1, 1), 1)
    calls = {
        "forward": lambda: conv.forward(x, w, None, *args, algo="winograd"),
        "backwardData": lambda: conv.backwardData(dy, w, x.shape, *args, algo="winograd"),
        "backwardParams": lambda: conv.backwardParams(x, dy, w.shape, False, *args, algo="winograd")[0],
    }
    wholeStack = 3 * x.nbytes
    for direction, call in calls.items():
        result, peak = tracedPeak(call)
        bound = conv.workspaceBytes(direction, "winograd", x.shape, w.shape, *args) + dy.nbytes // 12 + (64 << 10)
        assert peak - result.nbytes <= bound < wholeStack, direction
