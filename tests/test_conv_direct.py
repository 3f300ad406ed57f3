"""The direct kernels' 3x3 "same" planes (conv_direct._forwardSame3 / _backwardParamsSame3) against the
float64 reference: depthwise, channel multipliers, small groups, dilation, minimal maps, (1, 3, 3) 3-D kernels;
wrapped columns never leak, results bit-identical run to run and for one or two threads."""

import numpy as np
import pytest
from conftest import convData, resultsOnThreads
from reference import convBackwardData, convBackwardParams, convForward

from PuzzleLib.Engines.cpu import conv, conv_common, conv_direct

pytestmark = pytest.mark.skipif(not conv_direct.useNumba, reason="numba is not installed")

# (n, c, spatial, o, kernel, pad, dilation, groups); stride 1, pad = dilation: output shape = input shape.
CASES = [
    (2, 5, (7, 6), 5, (3, 3), (1, 1), (1, 1), 5),  # depthwise
    (2, 3, (6, 8), 6, (3, 3), (1, 1), (1, 1), 3),  # channel multiplier 2
    (1, 4, (5, 7), 6, (3, 3), (1, 1), (1, 1), 2),  # groups of 2 channels, 3 maps each
    (2, 8, (4, 9), 4, (3, 3), (1, 1), (1, 1), 2),  # groups of 4 channels
    (1, 2, (9, 11), 2, (3, 3), (2, 2), (2, 2), 2),  # dilation 2
    (1, 3, (7, 10), 3, (3, 3), (1, 3), (1, 3), 3),  # dilation 1 x 3
    (1, 2, (10, 5), 2, (3, 3), (2, 1), (2, 1), 2),  # dilation 2 x 1
    (2, 2, (3, 3), 2, (3, 3), (1, 1), (1, 1), 2),  # the smallest map the planes take
    (1, 2, (5, 5), 4, (3, 3), (2, 2), (2, 2), 2),  # dilation 2, smallest map
    (2, 3, (3, 4, 5), 3, (1, 3, 3), (0, 1, 1), (1, 1, 1), 3),  # 3-D, (1, 3, 3) kernel: depth slices as planes
    (1, 4, (2, 17, 33), 4, (1, 3, 3), (0, 1, 1), (1, 1, 1), 4),  # 3-D, rows longer than a vector
]

STRIDE = {2: (1, 1), 3: (1, 1, 1)}


def _data(case, dtype, seed=0):
    """conftest.convData for a case of CASES' layout (stride 1: dy is the size of x)."""
    n, c, spatial, o, kernel, pad, dilation, groups = case
    return convData((n, c, spatial, o, kernel, STRIDE[len(spatial)], pad, dilation, groups), dtype, seed)


def _close(got, ref, dtype):
    assert got.dtype == dtype and got.shape == ref.shape
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max()))


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of the 3x3 plane kernels (the dispatch looks them up at call time)."""
    counts = {"forward": 0, "params": 0}
    fwd, params = conv_direct._forwardSame3, conv_direct._backwardParamsSame3

    def countedForward(*args):
        counts["forward"] += 1
        return fwd(*args)

    def countedParams(*args):
        counts["params"] += 1
        return params(*args)

    monkeypatch.setattr(conv_direct, "_forwardSame3", countedForward)
    monkeypatch.setattr(conv_direct, "_backwardParamsSame3", countedParams)
    return counts


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_same3MatchesReference(case, dtype, calls):
    x, w, b, dy, (stride, pad, dilation, groups) = _data(case, dtype)
    _close(conv.forward(x, w, b, stride, pad, dilation, groups, algo="direct"),
           convForward(x, w, b, stride, pad, dilation, groups), dtype)
    _close(conv.forward(x, w, None, stride, pad, dilation, groups, algo="direct"),
           convForward(x, w, None, stride, pad, dilation, groups), dtype)
    _close(conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="direct"),
           convBackwardData(dy, w, x.shape, stride, pad, dilation, groups), dtype)
    dw, db = conv.backwardParams(x, dy, w.shape, True, stride, pad, dilation, groups, algo="direct")
    rdw, rdb = convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)
    _close(dw, rdw, dtype)
    _close(db, rdb.ravel(), dtype)
    assert calls["forward"] == 3 and calls["params"] == 1  # forward twice, backward-data once


@pytest.mark.parametrize("case", [
    (1, 2, (2, 6), 2, (3, 3), (1, 1), (1, 1), 2),  # too few rows for an interior run
    (1, 2, (6, 4), 2, (3, 3), (2, 2), (2, 2), 2),  # too few columns for the dilation
    (1, 2, (6, 7), 2, (3, 5), (1, 2), (1, 1), 2),  # 5 wide
    (1, 2, (4, 5, 6), 2, (3, 3, 3), (1, 1, 1), (1, 1, 1), 2),  # three kernel slices
])
def test_otherShapesKeepGeneralKernels(case, calls):
    x, w, b, dy, (stride, pad, dilation, groups) = _data(case, np.float64)
    _close(conv.forward(x, w, b, stride, pad, dilation, groups, algo="direct"),
           convForward(x, w, b, stride, pad, dilation, groups), np.float64)
    _close(conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="direct"),
           convBackwardData(dy, w, x.shape, stride, pad, dilation, groups), np.float64)
    dw, _ = conv.backwardParams(x, dy, w.shape, False, stride, pad, dilation, groups, algo="direct")
    _close(dw, convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)[0], np.float64)
    assert calls["forward"] == 0 and calls["params"] == 0


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[5]])
def test_same3WrappedColumnsNeverLeak(case):
    # inf in the last and first columns: the flat runs read them across the row boundary for the other
    # edge's pixels, where a select (not a product with zero) must drop them.
    x, w, b, dy, (stride, pad, dilation, groups) = _data(case, np.float32)
    x[:, :, 2, -1] = np.inf
    x[:, :, 3, 0] = np.inf
    y = conv.forward(x, w, b, stride, pad, dilation, groups, algo="direct")
    ref = convForward(np.nan_to_num(x, posinf=0.0), w, b, stride, pad, dilation, groups)
    # Pixels that read no inf are finite and exact; the ones that read one are inf/nan.
    hit = convForward(np.isinf(x).astype(np.float64), np.ones_like(w), None, stride, pad, dilation, groups) > 0
    np.testing.assert_allclose(y[~hit], ref[~hit], rtol=2e-5, atol=2e-5)
    assert not np.isfinite(y[hit]).any()
    # Weight gradient: the left taps never read the last column, the right taps never the first one.
    dy[:] = 1.0
    xl = x.copy()
    xl[:, :, 3, 0] = 0.0  # only the last column holds inf: the left taps stay finite
    dw, _ = conv.backwardParams(xl, dy, w.shape, False, stride, pad, dilation, groups, algo="direct")
    assert np.isfinite(dw[..., 0]).all() and not np.isfinite(dw[..., 2]).any()
    xr = x.copy()
    xr[:, :, 2, -1] = 0.0  # only the first column: the right taps stay finite
    dw, _ = conv.backwardParams(xr, dy, w.shape, False, stride, pad, dilation, groups, algo="direct")
    assert np.isfinite(dw[..., 2]).all() and not np.isfinite(dw[..., 0]).any()


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[10],
                                  (3, 1, (6, 7), 1, (3, 3), (1, 1), (1, 1), 1)])  # one map: threads split items
def test_same3BitIdenticalRunsAndThreads(case, monkeypatch):
    x, w, b, dy, (stride, pad, dilation, groups) = _data(case, np.float32)

    def results():
        return (conv.forward(x, w, b, stride, pad, dilation, groups, algo="direct"),
                conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="direct"),
                conv.backwardParams(x, dy, w.shape, False, stride, pad, dilation, groups, algo="direct")[0])

    monkeypatch.setattr(conv_common, "PARALLEL_WORK", 0)  # split even these small calls between threads
    resultsOnThreads(monkeypatch, results, threads=(1, 2, 2, 1))


def test_same3ServesTheBenchmarkDepthwiseShape(calls):
    # benchmarks/conv.py case 6 (N8 256->256 groups 256 28x28 k3 p1), scaled down in batch and maps.
    case = (2, 16, (28, 28), 16, (3, 3), (1, 1), (1, 1), 16)
    x, w, b, dy, (stride, pad, dilation, groups) = _data(case, np.float32)
    assert conv.chooseAlgorithm("forward", x.shape, w.shape, stride, pad, dilation, groups) == "direct"
    _close(conv.forward(x, w, b, stride, pad, dilation, groups),
           convForward(x, w, b, stride, pad, dilation, groups), np.float32)
    dw, _ = conv.backwardParams(x, dy, w.shape, False, stride, pad, dilation, groups)
    _close(dw, convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)[0], np.float32)
    assert calls["forward"] == 1 and calls["params"] == 1
