"""Strided backward-data by stride phases (conv_phases) against the float64 reference of tests/reference.py.

Tiny tile bounds cut every phase into rows of one plane (or planes of a 3-D phase), so that every tiling and
every way the units are dealt out to threads runs on small shapes; results must be bit-identical on one
thread and on two.
"""

import numpy as np
import pytest
from conftest import convData, engineCall, resultsOnThreads, setTiles, tracedPeak
from reference import convBackwardData

from PuzzleLib.Engines.cpu import conv, conv_col2im, conv_common, conv_phases

pytestmark = pytest.mark.skipif(not conv_phases.available, reason="numba is not installed")

# (N, C, spatial, O, kernel, stride, pad, groups)
CASES = [
    (3, 6, (11, 10), 4, (3, 3), (2, 2), (1, 1), 1),             # case 5's kind, small: uneven phases
    (2, 4, (9, 10), 6, (3, 3), (2, 2), (1, 1), 2),              # groups
    (2, 3, (15, 14), 5, (7, 7), (2, 2), (3, 3), 1),             # the 7x7 stem
    (2, 3, (23, 17), 4, (5, 4), (2, 3), (3, 0), 1),             # unequal strides, no padding on an axis
    (2, 4, (13, 13), 6, (3, 3), (4, 4), (5, 1), 2),             # stride above the kernel: empty phases
    (2, 4, (5, 5), 4, (2, 2), (3, 3), (0, 0), 1),               # rows and columns no tap reaches
    (2, 3, (11,), 4, (5,), (3,), (2,), 1),                      # 1-D
    (2, 2, (7, 8, 9), 4, (3, 2, 3), (2, 1, 3), (1, 0, 2), 2),   # 3-D, one axis unstrided
    (2, 3, (9, 8, 7), 4, (3, 3, 3), (2, 2, 2), (1, 1, 1), 1),   # 3-D, whole-plane tiles
    (1, 3, (40, 37), 5, (5, 4), (2, 3), (2, 1), 1),             # one item: units are its phases and tiles
]
TOL64 = dict(rtol=1e-12, atol=1e-12)


def _data(case, dtype=np.float64, seed=0):
    """conftest.convData's dy and w for a case of CASES' layout (undilated), with x's shape and the
    parameters: backwardData's arguments."""
    n, c, spatial, o, kernel, stride, pad, groups = case
    x, w, _, dy, _ = convData((n, c, spatial, o, kernel, stride, pad, (1,) * len(kernel), groups), dtype, seed)
    return dy, w, x.shape, stride, pad, groups


def _run(dy, w, xShape, stride, pad, groups):
    with engineCall(dy.itemsize * int(np.prod(xShape))):
        return conv_phases.backwardData(dy, w, xShape, stride, pad, groups)


def test_axisPhases():
    # k3 s2 p1 (case 5): even dx indices get tap 1 from dy[i]; odd ones taps 0 and 2 from dy[i + 1], dy[i].
    assert conv_phases.axisPhases(28, 3, 2, 1) == [(14, 1, 1, 0), (14, 0, 2, 0)]
    # k7 s2 p3: even indices taps 1, 3, 5 (first read dy[i - 1]); odd ones 0, 2, 4, 6 (dy[i - 1] .. dy[i + 2]).
    assert conv_phases.axisPhases(15, 7, 2, 3) == [(8, 1, 3, -1), (7, 0, 4, -1)]
    # A stride above the kernel: phase 2 of k2 s3 p0 gets no tap.
    assert conv_phases.axisPhases(5, 2, 3, 0) == [(2, 0, 1, 0), (2, 1, 1, 0), (1, 2, 0, 1)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tile", [300, 1 << 20])  # rows of one plane per unit / whole phases
@pytest.mark.parametrize("case", CASES)
def test_matchesReference(case, tile, threads, monkeypatch):
    setTiles(monkeypatch, tile, threads)
    dy, w, xShape, stride, pad, groups = _data(case)
    dx = _run(dy, w, xShape, stride, pad, groups)
    assert dx.dtype == np.float64
    np.testing.assert_allclose(dx, convBackwardData(dy, w, xShape, stride, pad, (1,) * len(stride), groups), **TOL64)


def test_float32AndNonContiguousInputs():
    dy, w, xShape, stride, pad, groups = _data(CASES[1], np.float32)
    ref = convBackwardData(dy.astype(np.float64), w.astype(np.float64), xShape, stride, pad, (1, 1), groups)
    dyT = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    dx = _run(dyT, np.asfortranarray(w), xShape, stride, pad, groups)
    assert dx.dtype == np.float32
    np.testing.assert_allclose(dx, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tile", [300, 1 << 20])
def test_sameBitsOnOneThreadOrTwo(tile, monkeypatch):
    # Each dx element comes from one GEMM whose shape the convolution fixes: float32 bits do not depend on threads.
    resultsOnThreads(monkeypatch, lambda: [_run(*_data(case, np.float32)) for case in (CASES[0], CASES[7])],
                     tile=tile)


def test_emptyBatch():
    dy, w, xShape, stride, pad, groups = _data(CASES[0])
    dx = _run(dy[:0], w, (0,) + xShape[1:], stride, pad, groups)
    assert dx.shape == (0,) + xShape[1:]


def test_dispatchOnlyWhereItWins(monkeypatch):
    # conv.backwardData (im2col), strided: col2im with whole items per thread (conv_col2im) for several items;
    # one item by phases where O <= C and C >= 128 (2-D or 3-D), else the shared col2im.
    calls = []
    for module in (conv_phases, conv_col2im):
        run = module.backwardData
        monkeypatch.setattr(module, "backwardData",
                            lambda *a, run=run, name=module.__name__: calls.append((name[-7:], a[2])) or run(*a))
    monkeypatch.setattr(conv_col2im, "_MIN_WORK", 0)
    for case in [(1, 128, (9, 9), 64, (3, 3), (2, 2), (1, 1), 1), (2, 8, (9, 9), 8, (3, 3), (2, 2), (1, 1), 2),
                 (1, 4, (9, 9), 8, (3, 3), (2, 2), (1, 1), 1), (1, 8, (9, 9), 8, (1, 1), (2, 2), (0, 0), 1),
                 (2, 8, (9, 9), 8, (3, 3), (1, 1), (1, 1), 1)]:
        dy, w, xShape, stride, pad, groups = _data(case, np.float32)
        dx = conv.backwardData(dy, w, xShape, stride, pad, (1, 1), groups, algo="im2col")
        np.testing.assert_allclose(dx, convBackwardData(dy, w, xShape, stride, pad, (1, 1), groups),
                                   rtol=1e-4, atol=1e-4)
    assert calls == [("_phases", (1, 128, 9, 9)), ("_col2im", (2, 8, 9, 9))]
    assert conv_phases.preferred((1, 128, 56, 56), (128, 128, 3, 3), (2, 2), (1, 1), 1)
    assert not conv_phases.preferred((8, 128, 56, 56), (128, 128, 3, 3), (2, 2), (1, 1), 1)  # items per thread
    assert not conv_phases.preferred((1, 128, 28, 28), (256, 128, 3, 3), (2, 2), (1, 1), 1)  # O > C
    assert not conv_phases.preferred((1, 64, 56, 56), (64, 64, 3, 3), (2, 2), (1, 1), 1)  # C < 128
    assert not conv_phases.preferred((1, 128, 4096), (128, 128, 3), (2,), (1,), 1)  # 1-D
    assert not conv_phases.preferred((1, 128, 28, 28), (128, 128, 3, 3), (2, 2), (2, 2), 1)  # dilated


def test_scratchWithinBound():
    # Scratch: the phase kernels (weights' size), the call's tile bound and two padded items of dy.
    dy, w, xShape, stride, pad, groups = _data((1, 128, (32, 32), 128, (3, 3), (2, 2), (1, 1), 1), np.float32)
    assert conv_phases.preferred(xShape, w.shape, stride, (1, 1), groups)
    dx, peak = tracedPeak(lambda: conv.backwardData(dy, w, xShape, stride, pad, (1, 1), groups, algo="im2col"))
    bound = conv.workspaceBytes("backwardData", "im2col", xShape, w.shape, stride, pad, (1, 1), groups)
    assert peak - dx.nbytes <= bound + (64 << 10)
    assert bound <= w.nbytes + conv_common.tileBytesFor(dx.nbytes) + 3 * dy.nbytes // len(dy)  # 2 items padded
