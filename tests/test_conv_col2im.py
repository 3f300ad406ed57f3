"""Strided backward-data as GEMM + col2im with whole items per thread (conv_col2im) against the float64
reference of tests/reference.py; tiny tile bounds cut each item into row bands (scattered in order by one
thread). Results must be bit-identical on one thread and on two."""

import numpy as np
import pytest
from conftest import convData, engineCall, resultsOnThreads, setTiles, tracedPeak
from reference import convBackwardData

from PuzzleLib.Engines.cpu import conv_col2im, conv_common, conv_im2col

pytestmark = pytest.mark.skipif(not conv_im2col.useNumba, reason="numba is not installed")

# (N, C, spatial, O, kernel, stride, pad, dilation, groups)
CASES = [
    (3, 4, (11, 10), 6, (3, 3), (2, 2), (1, 1), (1, 1), 1),           # case 5's kind, small; an odd batch
    (2, 3, (15, 14), 5, (7, 7), (2, 2), (3, 3), (1, 1), 1),           # the 7x7 stem
    (2, 4, (9, 8), 6, (3, 2), (2, 3), (1, 2), (2, 1), 2),             # groups, dilation, unequal strides
    (2, 3, (13,), 4, (3,), (2,), (1,), (1,), 1),                      # 1-D
    (2, 2, (4, 5, 6), 3, (2, 3, 2), (1, 2, 2), (1, 0, 1), (2, 1, 1), 1),  # 3-D
]
TOL64 = dict(rtol=1e-12, atol=1e-12)


def _data(case, dtype=np.float64, seed=0):
    """conftest.convData's dy and w, with x's shape and the parameters: backwardData's arguments."""
    x, w, _, dy, (stride, pad, dilation, groups) = convData(case, dtype, seed)
    return dy, w, x.shape, stride, pad, dilation, groups


def _run(*args):
    with engineCall(args[0].itemsize * int(np.prod(args[2]))):
        return conv_col2im.backwardData(*args)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tile", [600, 1 << 20])  # row bands of one item / whole items
@pytest.mark.parametrize("case", CASES)
def test_matchesReference(case, tile, threads, monkeypatch):
    setTiles(monkeypatch, tile, threads)
    dy, w, xShape, stride, pad, dilation, groups = _data(case)
    dx = _run(dy, w, xShape, stride, pad, dilation, groups)
    np.testing.assert_allclose(dx, convBackwardData(dy, w, xShape, stride, pad, dilation, groups), **TOL64)


@pytest.mark.parametrize("tile", [600, 1 << 20])
def test_sameBitsOnOneThreadOrTwo(tile, monkeypatch):
    resultsOnThreads(monkeypatch, lambda: [_run(*_data(case, np.float32)) for case in (CASES[0], CASES[2])],
                     tile=tile)


def test_preferred():
    assert conv_col2im.preferred((8, 128, 28, 28), (256, 128, 3, 3), (2, 2), (1, 1), (1, 1))  # case 5
    assert not conv_col2im.preferred((1, 128, 28, 28), (256, 128, 3, 3), (2, 2), (1, 1), (1, 1))  # one item
    assert not conv_col2im.preferred((8, 128, 28, 28), (256, 128, 3, 3), (1, 1), (1, 1), (1, 1))  # unit stride
    assert not conv_col2im.preferred((4, 32, 14, 14), (32, 32, 3, 3), (2, 2), (1, 1), (1, 1))  # small


def test_groupsOfItems(monkeypatch):
    # Small items go in groups (at least two groups); the bits are those of one item at a time.
    setTiles(monkeypatch, 1 << 20, 2)
    dy, w, xShape, stride, pad, dilation, groups = _data((5, 4, (11, 10), 6, (3, 3), (2, 2), (1, 1), (1, 1), 1),
                                                        np.float32)
    grouped = _run(dy, w, xShape, stride, pad, dilation, groups)
    single = np.concatenate([_run(dy[i:i + 1], w, (1,) + xShape[1:], stride, pad, dilation, groups)
                             for i in range(len(dy))])
    assert np.array_equal(grouped, single)


def test_scratchWithinWorkspaceBytes():
    from PuzzleLib.Engines.cpu import conv

    dy, w, xShape, stride, pad, dilation, groups = _data((4, 32, (40, 40), 64, (3, 3), (2, 2), (1, 1), (1, 1), 1),
                                                        np.float32)
    assert conv_col2im.preferred(xShape, w.shape, stride, pad, dilation)
    dx, peak = tracedPeak(lambda: conv.backwardData(dy, w, xShape, stride, pad, dilation, groups, algo="im2col"))
    bound = conv.workspaceBytes("backwardData", "im2col", xShape, w.shape, stride, pad, dilation, groups)
    assert peak - dx.nbytes <= bound + (64 << 10)
    assert bound <= 2 * conv_common.tileBytesFor(dx.nbytes)
