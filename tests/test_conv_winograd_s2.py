"""3x3 stride-2 convolutions by the parity split of the taps (conv_winograd_s2), through conv's dispatch: every
direction against the float64 references of tests/reference.py within the stated bound, results that do not
depend on the thread count or on how the work is cut, the scratch estimate against what a call allocates, and
the heuristic's picks."""

import numpy as np
import pytest
from conftest import convData, directionCalls, resultsOnThreads, tracedPeak
from reference import convBackwardData, convBackwardParams, convForward

from PuzzleLib.Engines.cpu import conv, conv_winograd, conv_winograd_s2

pytestmark = pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")

# (N, C, spatial, O, kernel, stride, pad, dilation, groups)
CASES = [
    (2, 5, (9, 11), 7, (3, 3), (2, 2), (1, 1), (1, 1), 1),      # odd outputs: edge tiles half outside
    (1, 3, (3, 3), 2, (3, 3), (2, 2), (0, 0), (1, 1), 1),       # a single output
    (2, 4, (13, 8), 6, (3, 3), (2, 2), (2, 0), (1, 1), 2),      # groups, unequal padding
    (1, 2, (4, 4), 3, (3, 3), (2, 2), (3, 3), (1, 1), 1),       # padding beyond the kernel
    (3, 16, (28, 28), 16, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (2, 8, (12, 17), 4, (3, 3), (2, 2), (1, 2), (1, 1), 4),     # depthwise-like: 2 channels per group
    (1, 4, (7, 37), 3, (3, 3), (2, 2), (1, 1), (1, 1), 1),      # output rows of 19: two vectors a row
]
BOUND = {np.float32: 1e-5, np.float64: 1e-13}  # max |error| / max |reference| (conv_winograd_s2's docstring)


def _calls(case, dtype):
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, dtype)
    args = (stride, pad, dilation, groups)
    return x, w, b, dy, args, {
        "forward": lambda: conv.forward(x, w, b, *args, algo="winograd"),
        "backwardData": lambda: conv.backwardData(dy, w, x.shape, *args, algo="winograd"),
        "backwardParams": lambda: conv.backwardParams(x, dy, w.shape, True, *args, algo="winograd"),
    }


def _assertWithin(got, ref, dtype):
    assert got.dtype == dtype and got.shape == ref.shape
    assert np.abs(got - ref).max() <= BOUND[dtype] * max(np.abs(ref).max(), 1e-30)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_matchesReference(case, dtype):
    x, w, b, dy, args, calls = _calls(case, dtype)
    _assertWithin(calls["forward"](), convForward(x, w, b, *args), dtype)
    _assertWithin(calls["backwardData"](), convBackwardData(dy, w, x.shape, *args), dtype)
    dw, db = calls["backwardParams"]()
    rdw, rdb = convBackwardParams(x, dy, w.shape, *args)
    _assertWithin(dw, rdw, dtype)
    _assertWithin(db, rdb.ravel(), dtype)


@pytest.mark.parametrize("direction", conv.DIRECTIONS)
def test_sameBitsOnAnyThreadCount(direction, monkeypatch):
    _, _, _, _, _, calls = _calls(CASES[4], np.float32)
    resultsOnThreads(monkeypatch, calls[direction], threads=(1, 2, 2, 3))


@pytest.mark.parametrize("direction", conv.DIRECTIONS)
def test_manyBlocksSameBitsOnAnyThreadCount(direction, monkeypatch):
    # Four blocks of maps in each of two groups, eight parts: the threads make the tap-major kernel's chunks as
    # they first need them (the forward), or each part its own channels of it (backward-data).
    monkeypatch.setattr(conv_winograd_s2, "PART_BYTES", 1)
    monkeypatch.setattr(conv_winograd_s2, "MAP_BLOCK", 8)
    case = (2, 6, (15, 14), 64, (3, 3), (2, 2), (1, 1), (1, 1), 2)
    x, w, b, dy, args, calls = _calls(case, np.float32)
    assert len(conv_winograd_s2._mapBlocks(32)) == 4
    first = resultsOnThreads(monkeypatch, calls[direction], threads=(1, 2, 2, 3))
    if direction == "forward":
        _assertWithin(first, convForward(x, w, b, *args), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_manyPartsAndBlocks(dtype, monkeypatch):
    # Parts of one tile row (forward) or one channel (backward), maps in blocks of 8: still within the bound.
    monkeypatch.setattr(conv_winograd_s2, "PART_BYTES", 1)
    monkeypatch.setattr(conv_winograd_s2, "MAP_BLOCK", 8)
    case = (2, 6, (15, 14), 20, (3, 3), (2, 2), (1, 1), (1, 1), 2)
    x, w, b, dy, args, calls = _calls(case, dtype)
    assert len(conv_winograd_s2._tileParts(2 * 4, 4, 3, x.itemsize)) == 8
    assert len(conv_winograd_s2._mapBlocks(10)) == 2
    _assertWithin(calls["forward"](), convForward(x, w, b, *args), dtype)
    _assertWithin(calls["backwardData"](), convBackwardData(dy, w, x.shape, *args), dtype)
    _assertWithin(calls["backwardParams"]()[0], convBackwardParams(x, dy, w.shape, *args)[0], dtype)


@pytest.mark.parametrize("xShape,wShape,pad", [
    ((8, 64, 28, 28), (128, 64, 3, 3), (1, 1)),     # case 5 at half the channels: two parts, blocks of 64 maps
    ((2, 16, 31, 29), (24, 16, 3, 3), (2, 2)),
    ((4, 32, 57, 57), (32, 32, 3, 3), (0, 0)),      # four tile parts in the forward
])
def test_workspaceEstimateBoundsPeak(xShape, wShape, pad):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(xShape).astype(np.float32)
    w = rng.standard_normal(wShape).astype(np.float32)
    args = ((2, 2), pad, (1, 1), 1)
    dy = rng.standard_normal((xShape[0], wShape[0]) + conv.outputShape(xShape[2:], (3, 3), *args[:3])) \
        .astype(np.float32)
    for direction, call in directionCalls(x, w, dy, args, "winograd").items():
        estimate = conv.workspaceBytes(direction, "winograd", xShape, wShape, *args)
        assert estimate == conv_winograd_s2.workspaceBytes(direction, xShape, wShape, pad, 1)
        result, peak = tracedPeak(call)
        peak -= result.nbytes
        assert peak <= estimate + (64 << 10), direction
        assert estimate <= 2 * peak + (256 << 10), direction


def test_heuristicPicks():
    s2 = ((2, 2), (1, 1), (1, 1), 1)
    for direction in conv.DIRECTIONS:  # case 5 of benchmarks/conv.py
        assert conv.chooseAlgorithm(direction, (8, 128, 28, 28), (256, 128, 3, 3), *s2) == "winograd"
        assert conv.chooseAlgorithm(direction, (8, 256, 14, 14), (512, 256, 3, 3), *s2) == "im2col"  # 7x7 outputs
        assert conv.chooseAlgorithm(direction, (1, 128, 28, 28), (256, 128, 3, 3), *s2) == "im2col"  # 49 tiles
        assert conv.chooseAlgorithm(direction, (8, 16, 112, 112), (32, 16, 3, 3), *s2) == "im2col"
    assert conv.chooseAlgorithm("backwardParams", (4, 128, 28, 28), (256, 128, 3, 3), *s2) == "winograd"
    assert conv.chooseAlgorithm("forward", (4, 128, 28, 28), (256, 128, 3, 3), *s2) == "im2col"  # 196 tiles
    assert "winograd" in conv.algorithms("forward", (1, 4, 8, 8), (4, 4, 3, 3), *s2)
    assert "winograd" not in conv.algorithms("forward", (1, 4, 8, 8), (4, 4, 3, 3), (2, 1), (1, 1), (1, 1), 1)


def test_heuristicTakesChannelsThatDouble():
    """The stride-2 split from 64 channels, or from 32 where the maps double (conv._heuristic's figures)."""
    s2 = ((2, 2), (1, 1), (1, 1), 1)
    for direction in conv.DIRECTIONS:
        assert conv.chooseAlgorithm(direction, (8, 128, 28, 28), (256, 128, 3, 3), *s2) == "winograd"  # case 5
        assert conv.chooseAlgorithm(direction, (8, 32, 32, 32), (64, 32, 3, 3), *s2) == "winograd"
        assert conv.chooseAlgorithm(direction, (8, 48, 28, 28), (96, 48, 3, 3), *s2) == "winograd"
        assert conv.chooseAlgorithm(direction, (8, 32, 28, 28), (32, 32, 3, 3), *s2) == "im2col"
        assert conv.chooseAlgorithm(direction, (8, 16, 16, 16), (32, 16, 3, 3), *s2) == "im2col"
