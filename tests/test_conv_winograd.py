"""Winograd engine internals: the weight gradient split in fixed parts (whole groups, or rows of tile
positions), per-group chunks, and the transforms of a share of the tile positions; F(2x2, 3x3)
(conv_winograd2x2) in every direction and mode; F(4x2, 3x3) (conv_winograd4x2) in every direction;
float64 references from tests/reference.py (independent direct sums)."""

import numpy as np
import pytest
from conftest import engineCall, resultsOnThreads, tracedPeak
from reference import convBackwardData, convBackwardParams, convForward

from PuzzleLib.Engines.cpu import conv, conv_winograd, conv_winograd2x2, conv_winograd4x2

pytestmark = pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")


def _data(n, c, o, groups, h, w, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((o, c // groups, 3, 3))
    dy = rng.standard_normal((n, o, h, w))  # pad 1: the output is the size of the input
    return x, wt, dy


@pytest.mark.parametrize("groups", [1, 2, 3])  # tile positions split / whole groups / positions (odd groups)
@pytest.mark.parametrize("tiny", [False, True])
def test_weightGradientPartsMatchReferenceOnAnyThreadCount(groups, tiny, monkeypatch):
    x, w, dy = _data(2, 6, 6, groups, 13, 18)
    if tiny:  # one tile row per chunk: many chunks summed in order into each part's entries
        monkeypatch.setattr(conv_winograd, "chunkBytes", lambda resultBytes: 1)
    ref = convBackwardParams(x, dy, w.shape, (1, 1), (1, 1), (1, 1), groups)[0]
    dw = resultsOnThreads(monkeypatch, lambda: conv.backwardParams(x, dy, w.shape, False, (1, 1), (1, 1), (1, 1),
                                                                   groups, algo="winograd")[0])
    assert np.abs(dw - ref).max() <= 1e-12 * np.abs(ref).max()


@pytest.mark.parametrize("groups", [1, 2, 3])
@pytest.mark.parametrize("tileBytes", [1, 80000, 1 << 30])  # a chunk per tile row / several / one (no split)
def test_weightGradientByChunksMatchesReferenceOnAnyThreadCount(groups, tileBytes, monkeypatch):
    # byChunks (conv_polyphase's stacked phases): the parts take fixed runs of chunks, all tile positions,
    # each into its own dU, added in part order; too few chunks fall back to the positions split.
    x, w, dy = _data(3, 6, 6, groups, 13, 18)
    ref = convBackwardParams(x, dy, w.shape, (1, 1), (1, 1), (1, 1), groups)[0]
    dw = conv_winograd.backwardParams(x, dy, w.shape, (1, 1), groups, tileBytes=tileBytes, byChunks=True)
    assert np.abs(dw - ref).max() <= 1e-12 * np.abs(ref).max()
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    dw32 = resultsOnThreads(monkeypatch, lambda: conv_winograd.backwardParams(x32, dy32, w.shape, (1, 1), groups,
                                                                              tileBytes=tileBytes, byChunks=True))
    assert dw32.dtype == np.float32
    assert np.abs(dw32 - ref).max() <= 5e-5 * np.abs(ref).max()


def test_forwardChunksDoNotDependOnThreadCount(monkeypatch):
    # OpenBLAS's products differ in the last bits with their column count (tiles per chunk): chunks cut per
    # thread (8 rows on one thread, 4 on two) gave float32 results that changed with the thread count.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 64, 30, 30)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    tile = 8 * 36 * 128 * 7 * 4  # 8 tile rows of 7 tiles, 64 + 64 channels, float32
    y = resultsOnThreads(monkeypatch, lambda: conv_winograd.forward(x, w, None, (1, 1), 1, tileBytes=tile))
    ref = convForward(x, w, None, (1, 1), (1, 1), (1, 1), 1)
    assert np.abs(y - ref).max() <= 5e-5 * np.abs(ref).max()


@pytest.mark.parametrize("groups", [2, 4])
def test_forwardOneGroupPerPassMatchesReference(groups, monkeypatch):
    # Chunks are transformed and multiplied one group at a time; tiny chunks cross batch items.
    monkeypatch.setattr(conv_winograd, "chunkBytes", lambda resultBytes: 1)
    x, w, _ = _data(2, 8, 12, groups, 11, 9)
    b = np.linspace(-1, 1, 12)
    y = conv_winograd.forward(x, w, b, (1, 1), groups)
    ref = convForward(x, w, b, (1, 1), (1, 1), (1, 1), groups)
    assert np.abs(y - ref).max() <= 1e-12 * np.abs(ref).max()


@pytest.mark.parametrize("a0,a1", [(0, 3), (3, 6), (2, 5)])
def test_transformsOfSomeTilePositionsEqualTheFullOnesRows(a0, a1):
    # The weight gradient's parts transform only rows [a0, a1) of the 6x6 tile positions: the same bits as
    # those rows of the full transforms.
    x, _, dy = _data(2, 5, 3, 1, 10, 15)
    th, tw = conv_winograd._tiles(10, 15, (1, 1))
    p, cst, k = 3 * tw, np.array([2, 4, 5, 8], dtype=x.dtype), 6 * (a1 - a0)
    full, part = np.zeros((36, 5 * p)), np.zeros((k, 5 * p))
    conv_winograd._inputTransform(x, full, 0, 0, 5, 1, 1, th, tw, 1, 4, cst, 0, 5, 0, 6)
    conv_winograd._inputTransform(x, part, 0, 0, 5, 1, 1, th, tw, 1, 4, cst, 0, 5, a0, a1)
    assert np.array_equal(full[6 * a0:6 * a1], part)
    full, part = np.zeros((36, 3 * p)), np.zeros((k, 3 * p))
    conv_winograd._gradTransform(dy, full, 0, 0, 3, th, tw, 1, 4, cst, 0, 3, 0, 6)
    conv_winograd._gradTransform(dy, part, 0, 0, 3, th, tw, 1, 4, cst, 0, 3, a0, a1)
    assert np.array_equal(full[6 * a0:6 * a1], part)


# -- F(2x2, 3x3) (conv_winograd2x2): small maps ----------------------------------------------------------
# (n, c, (h, w), o, pad, groups): odd maps, no / negative-cropping / asymmetric padding, groups, 1x1 maps.
WINOGRAD2 = [
    (2, 5, (7, 7), 6, (1, 1), 1),
    (2, 4, (9, 4), 6, (0, 2), 2),
    (1, 6, (5, 6), 3, (3, 1), 3),    # pad 3: backward-data runs with padding -1 (crops)
    (3, 8, (3, 3), 4, (0, 0), 1),    # a single output pixel per map
    (2, 6, (11, 10), 9, (1, 1), 3),
]


def _check2(case, dtype, tol, withBias=True, module=conv_winograd2x2, seed=7):
    """``module`` (F(2x2) unless told) in every direction against the references, within ``tol`` of the
    largest result."""
    n, c, spatial, o, pad, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c) + spatial).astype(dtype)
    w = rng.standard_normal((o, c // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if withBias else None
    ref = convForward(x, w, b, (1, 1), pad, (1, 1), groups)
    dy = rng.standard_normal(ref.shape).astype(dtype)
    with engineCall(1 << 20):
        got = [module.forward(x, w, b, pad, groups), module.backwardData(dy, w, x.shape, pad, groups),
               module.backwardParams(x, dy, w.shape, pad, groups)]
    refs = [ref, convBackwardData(dy, w, x.shape, (1, 1), pad, (1, 1), groups),
            convBackwardParams(x, dy, w.shape, (1, 1), pad, (1, 1), groups)[0]]
    for a, r in zip(got, refs):
        assert a.dtype == dtype and a.shape == r.shape
        err = np.abs(a - r).max() / np.abs(r).max()
        assert err < tol, f"relative error {err:.3g} exceeds {tol:.3g}"
    return got


@pytest.fixture
def only2x2(monkeypatch):
    """F(2x2) in every direction: F(4x2), which it hands all three directions over to on the maps where it makes
    fewer products, is never preferred."""
    monkeypatch.setattr(conv_winograd4x2, "WHOLE_BYTES", -1)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WINOGRAD2)
def test_winograd2x2MatchesReferenceWithinStatedBound(case, dtype, chunked, monkeypatch, only2x2):
    # The stated bound (conv_winograd2x2): 1e-5 (float32), 1e-13 (float64) of the largest result. Chunked:
    # tiles in one-row chunks (the whole kernel transformed first; weight gradient summed over chunks).
    if chunked:
        monkeypatch.setattr(conv_winograd2x2, "WHOLE_BYTES", 0)
        monkeypatch.setattr(conv_winograd2x2, "CHUNK_BYTES", 1)
    _check2(case, dtype, 1e-5 if dtype == np.float32 else 1e-13, withBias=case[4] != (0, 0))


def test_winograd2x2BoundOnManyChannels(only2x2):
    # 256 input channels: more rounding accumulates in every sum; the bound still holds (a block per 32 maps).
    _check2((2, 256, (7, 7), 64, (1, 1), 1), np.float32, 1e-5)


@pytest.mark.parametrize("chunked", [False, True])
def test_winograd2x2IndependentOfThreadCount(chunked, monkeypatch, only2x2):
    # Blocks of maps and chunks of tiles are fixed by the shape: bit-identical on one thread or two, and run
    # to run. Small blocks: several per thread.
    monkeypatch.setattr(conv_winograd2x2, "BLOCK_BYTES", 512)
    monkeypatch.setattr(conv_winograd2x2, "GRAD_BLOCK_BYTES", 512)
    if chunked:
        monkeypatch.setattr(conv_winograd2x2, "WHOLE_BYTES", 0)
        monkeypatch.setattr(conv_winograd2x2, "CHUNK_BYTES", 4096)
    resultsOnThreads(monkeypatch, lambda: _check2((3, 12, (9, 7), 10, (1, 1), 2), np.float32, 1e-5))


def test_winograd2x2FlippedKernelTransformIsThePermutedOne():
    # Backward-data's kernel: the flipped kernel's transform is the kernel's with rows and columns 0 and 3
    # of the 4x4 tile positions swapped (G J = P G): check against np.flip, transformed plainly.
    w = np.random.default_rng(3).standard_normal((5, 4, 3, 3))
    cst = np.array([0.5])
    u, uf = np.empty((16, 5, 4)), np.empty((16, 5, 4))
    conv_winograd2x2._kernelTransform(np.ascontiguousarray(np.flip(w, (2, 3))), u, 0, 0, 5, 0, 4, cst,
                                      conv_winograd2x2._ORDER)
    conv_winograd2x2._kernelTransform(w, uf, 0, 0, 5, 0, 4, cst, conv_winograd2x2._FLIPPED)
    assert np.array_equal(u, uf)


def test_winograd2x2ThroughTheEngine():
    # algo="winograd" runs F(2x2) on small maps and F(4x4) on larger ones, with results within the bound.
    assert conv._winograd((8, 8, 3, 3), (2, 8, 7, 7), (1, 1), (1, 1), (1, 1)) is conv_winograd2x2
    assert conv._winograd((8, 8, 3, 3), (2, 8, 56, 56), (1, 1), (1, 1), (1, 1)) is conv_winograd
    x, w, dy = _data(2, 8, 8, 1, 7, 9)
    got = conv.backwardParams(x, dy, w.shape, False, (1, 1), (1, 1), (1, 1), 1, algo="winograd")[0]
    ref = convBackwardParams(x, dy, w.shape, (1, 1), (1, 1), (1, 1), 1)[0]
    assert np.abs(got - ref).max() <= 1e-13 * np.abs(ref).max()
    assert conv.workspaceBytes("forward", "winograd", x.shape, w.shape, (1, 1), (1, 1), (1, 1), 1) == \
        conv_winograd2x2.workspaceBytes("forward", x.shape, w.shape, (1, 1), 1)


def test_heuristicPicksWinograd2x2OnSmallMapsWithManyChannelsAndTiles():
    args = ((1, 1), (1, 1), (1, 1), 1)
    for direction in conv.DIRECTIONS:  # benchmarks/conv.py case 4: F(2x2) in every direction
        assert conv.chooseAlgorithm(direction, (8, 512, 7, 7), (512, 512, 3, 3), *args) == "winograd"
    assert conv._winograd((512, 512, 3, 3), (8, 512, 7, 7), (1, 1), (1, 1), (1, 1)) is conv_winograd2x2
    # Few tiles (N1: 16): im2col; the weight gradient wants 64 tiles (N2: 32). With 32 to 63 channels, 128 tiles
    # (N8 7x7 has 128, N4 64); with 16, never.
    assert conv.chooseAlgorithm("forward", (1, 512, 7, 7), (512, 512, 3, 3), *args) == "im2col"
    for direction in conv.DIRECTIONS:
        assert conv.chooseAlgorithm(direction, (8, 32, 7, 7), (32, 32, 3, 3), *args) == "winograd"
        assert conv.chooseAlgorithm(direction, (4, 32, 7, 7), (32, 32, 3, 3), *args) == "im2col"
        assert conv.chooseAlgorithm(direction, (32, 16, 7, 7), (32, 16, 3, 3), *args) == "im2col"
    assert conv.chooseAlgorithm("forward", (2, 512, 7, 7), (512, 512, 3, 3), *args) == "winograd"
    assert conv.chooseAlgorithm("backwardParams", (2, 512, 7, 7), (512, 512, 3, 3), *args) == "im2col"
    # 14x14 maps and up keep F(4x4); one group of 16 to 47 channels only with 768 tiles of 4x4 or more.
    assert conv.chooseAlgorithm("forward", (8, 256, 14, 14), (256, 256, 3, 3), *args) == "winograd"
    assert conv._winograd((256, 256, 3, 3), (8, 256, 14, 14), (1, 1), (1, 1), (1, 1)) is conv_winograd
    for direction in conv.DIRECTIONS:
        assert conv.chooseAlgorithm(direction, (8, 32, 28, 28), (32, 32, 3, 3), *args) == "im2col"  # 392 tiles
        assert conv.chooseAlgorithm(direction, (16, 32, 28, 28), (32, 32, 3, 3), *args) == "winograd"  # 784
        assert conv.chooseAlgorithm(direction, (8, 32, 56, 56), (32, 32, 3, 3), *args) == "winograd"
        assert conv.chooseAlgorithm(direction, (16, 16, 32, 32), (32, 16, 3, 3), *args) == "winograd"
        assert conv.chooseAlgorithm(direction, (8, 16, 32, 32), (32, 16, 3, 3), *args) == "im2col"
        assert conv.chooseAlgorithm(direction, (16, 16, 32, 32), (16, 16, 3, 3), *args) == "im2col"  # 16 maps
        assert conv.chooseAlgorithm(direction, (8, 48, 14, 14), (48, 48, 3, 3), *args) == "winograd"
        assert conv.chooseAlgorithm(direction, (8, 128, 28, 28), (128, 32, 3, 3), (1, 1), (1, 1), (1, 1),
                                    4) == "winograd"  # case 7: 4 groups of 32 keep F(4x4)


# -- F(4x2, 3x3) (conv_winograd4x2): all three directions on small maps, one group -------------------------------
# (n, c, (h, w), o, pad): 7x7 as case 4, odd maps, no / wider / cropping (backward-data pad -1) padding, 1 pixel.
WINOGRAD42 = [
    (2, 5, (7, 7), 6, (1, 1)),
    (1, 3, (9, 11), 4, (1, 1)),
    (2, 4, (8, 6), 5, (0, 0)),
    (2, 6, (7, 10), 3, (2, 2)),
    (1, 4, (7, 5), 3, (3, 1)),
    (3, 8, (3, 3), 4, (0, 0)),
]


def _check42(case, dtype, tol, seed=9):
    """F(4x2)'s forward (with a bias), backward-data and weight gradient against the references, within ``tol``
    of the largest result; returns the three."""
    n, c, spatial, o, pad = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c) + spatial).astype(dtype)
    w = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    ref = convForward(x, w, b, (1, 1), pad, (1, 1), 1)
    dy = rng.standard_normal(ref.shape).astype(dtype)
    with engineCall(1 << 20):
        got = [conv_winograd4x2.forward(x, w, b, pad), conv_winograd4x2.backwardData(dy, w, x.shape, pad),
               conv_winograd4x2.backwardParams(x, dy, w.shape, pad)]
    refs = [ref, convBackwardData(dy, w, x.shape, (1, 1), pad, (1, 1), 1),
            convBackwardParams(x, dy, w.shape, (1, 1), pad, (1, 1), 1)[0]]
    for a, r in zip(got, refs):
        assert a.dtype == dtype and a.shape == r.shape
        err = np.abs(a - r).max() / np.abs(r).max()
        assert err < tol, f"relative error {err:.3g} exceeds {tol:.3g}"
    return got


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WINOGRAD42)
def test_winograd4x2MatchesReferenceWithinStatedBound(case, dtype):
    # The stated bound (conv_winograd4x2, F(4x4)'s): 5e-5 (float32), 1e-12 (float64) of the largest result.
    _check42(case, dtype, 5e-5 if dtype == np.float32 else 1e-12)


def test_winograd4x2BoundOnManyChannels():
    _check42((2, 256, (7, 7), 64, (1, 1)), np.float32, 5e-5)


def test_winograd4x2IndependentOfThreadCount(monkeypatch):
    # Blocks of maps and pieces of channels are fixed by the shape: bit-identical on one thread or two. Small
    # blocks: several per thread.
    monkeypatch.setattr(conv_winograd4x2, "BLOCK_MAPS", 3)
    resultsOnThreads(monkeypatch, lambda: _check42((3, 12, (9, 7), 10, (1, 1)), np.float32, 5e-5))


def test_winograd4x2FlippedKernelTransformIsTheRotatedOne():
    # Backward-data's kernel transform reads w turned by 180 degrees in place: the same bits as the plain
    # transform of np.rot90(w, 2).
    w = np.random.default_rng(4).standard_normal((5, 4, 3, 3))
    g = conv_winograd4x2._constants(w.dtype)
    u, uf = np.empty((24, 5, 4)), np.empty((24, 5, 4))
    conv_winograd4x2._kernelTransform(np.ascontiguousarray(np.flip(w, (2, 3))), u, 0, 5, 0, 4, g, False)
    conv_winograd4x2._kernelTransform(w, uf, 0, 5, 0, 4, g, True)
    assert np.array_equal(u, uf)


def test_winograd4x2WhereItMakesFewerProducts():
    # Case 4 (7x7, 512 maps) and other maps F(2x2) takes where rows of four waste less than they save; F(2x2)
    # keeps 5x5 and 6x6 maps (a tie), groups, and inputs whose transform would pass WHOLE_BYTES.
    pad = (1, 1)
    assert conv_winograd4x2.preferred((8, 512, 7, 7), pad, 1)
    assert conv_winograd4x2.preferred((8, 64, 9, 9), pad, 1)
    assert not conv_winograd4x2.preferred((8, 64, 5, 5), pad, 1)
    assert not conv_winograd4x2.preferred((8, 64, 6, 6), pad, 1)
    assert not conv_winograd4x2.preferred((8, 512, 7, 7), pad, 2)
    assert not conv_winograd4x2.preferred((32, 512, 7, 7), pad, 1)


def test_winograd4x2ThroughTheEngine():
    # algo="winograd" on case 4's maps: F(2x2) hands all three directions over to F(4x2) (results within F(4x2)'s
    # bound, scratch within its estimate).
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 64, 7, 7)).astype(np.float32)
    w = rng.standard_normal((96, 64, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 96, 7, 7)).astype(np.float32)
    args = ((1, 1), (1, 1), (1, 1), 1)
    calls = {"forward": lambda: conv.forward(x, w, None, *args, algo="winograd"),
             "backwardData": lambda: conv.backwardData(dy, w, x.shape, *args, algo="winograd"),
             "backwardParams": lambda: conv.backwardParams(x, dy, w.shape, False, *args, algo="winograd")[0]}
    refs = {"forward": convForward(x, w, None, *args), "backwardData": convBackwardData(dy, w, x.shape, *args),
            "backwardParams": convBackwardParams(x, dy, w.shape, *args)[0]}
    for direction, call in calls.items():
        result, peak = tracedPeak(call)
        estimate = conv.workspaceBytes(direction, "winograd", x.shape, w.shape, *args)
        assert estimate == conv_winograd4x2.workspaceBytes(direction, x.shape, w.shape, (1, 1)), direction
        assert peak - result.nbytes <= estimate + (64 << 10), direction  # and the calls' Python objects
        ref = refs[direction]
        assert np.abs(result - ref).max() <= 5e-5 * np.abs(ref).max(), direction


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [(2, 5, (9, 11), 7, (1, 1), 1), (1, 3, (4, 3), 2, (0, 0), 1),
                                  (2, 4, (13, 6), 6, (2, 0), 2)])
def test_winograd4x4StillMatchesOnSmallMaps(case, dtype):
    # algo="winograd" now runs F(2x2) on these maps; F(4x4) itself (conv_polyphase runs it on small phases)
    # keeps its own bound there: 5e-5 (float32), 1e-12 (float64).
    _check2(case, dtype, 5e-5 if dtype == np.float32 else 1e-12, withBias=False, module=conv_winograd, seed=5)
