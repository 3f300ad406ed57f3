"""conv_winograd1d (F(6, 3) for 1-D 3-tap stride-1 convolutions) against the independent float64 references
of tests/reference.py (one spatial axis).

Winograd is held to its stated error bound (relative to the result's largest magnitude), tighter for
float64; results must be bit-identical run to run and on one or two threads.
"""

import numpy as np
import pytest
from conftest import convData, resultsOnThreads
from reference import convBackwardData, convBackwardParams, convForward

from PuzzleLib.Engines.cpu import conv, conv_winograd1d

pytestmark = pytest.mark.skipif(not conv_winograd1d.available, reason="numba is not installed")

# The bound the module docstring states (measured: at most 3e-6 and 7e-15).
BOUND = {np.float32: 2e-5, np.float64: 1e-13}


def _refs(x, w, b, dy, pad, groups):
    """The N-D references on one spatial axis, stride 1: output, input gradient, weight gradient."""
    args = ((1,), (pad,), (1,), groups)
    return [convForward(x, w, b, *args), convBackwardData(dy, w, x.shape, *args),
            convBackwardParams(x, dy, w.shape, *args)[0]]


def _data(n, c, size, o, pad, groups, dtype, seed=0):
    """conftest.convData's x, w, b and dy for a 3-tap stride-1 convolution of length ``size``."""
    return convData((n, c, (size,), o, (3,), (1,), (pad,), (1,), groups), dtype, seed)[:4]


def _relErr(ours, ref):
    assert ours.shape == ref.shape
    return np.abs(ours.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-300)


def _directions(x, w, b, dy, pad, groups):
    return [conv_winograd1d.forward(x, w, b, (pad,), groups),
            conv_winograd1d.backwardData(dy, w, x.shape, (pad,), groups),
            conv_winograd1d.backwardParams(x, dy, w.shape, (pad,), groups)]


def _check(n, c, size, o, pad, groups, dtype, bound=None):
    x, w, b, dy = _data(n, c, size, o, pad, groups, dtype)
    for ours, ref in zip(_directions(x, w, b, dy, pad, groups), _refs(x, w, b, dy, pad, groups)):
        assert ours.dtype == dtype
        assert _relErr(ours, ref) <= (bound or BOUND[dtype])


def test_transformMatrices():
    """A^T [(G g) * (B^T d)] is the 6-output correlation of an 8-sample window with a 3-tap kernel."""
    rng = np.random.default_rng(1)
    g, d = rng.standard_normal(3), rng.standard_normal(8)
    want = np.array([d[i:i + 3] @ g for i in range(6)])
    got = conv_winograd1d.AT @ ((conv_winograd1d.G @ g) * (conv_winograd1d.BT @ d))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


# (n, c, L, o, pad, groups): lengths around the 6-output tile (edge tiles only, partial last tile), pads
# 0..4 (backward-data then runs with padding 2 - pad down to -2: cropping), groups, items sharing chunks.
CASES = [
    (2, 5, 37, 3, 1, 1), (1, 3, 1, 2, 1, 1), (1, 3, 5, 2, 0, 1), (2, 4, 6, 4, 2, 1), (3, 4, 7, 6, 2, 2),
    (2, 6, 8, 4, 3, 1), (2, 6, 13, 6, 4, 3), (2, 8, 100, 4, 0, 4), (3, 2, 14, 2, 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_directions(case, dtype):
    _check(*case, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_manyChunks(monkeypatch, dtype):
    """Chunks a few tiles long (forced by a tiny chunk bound): chunks start and end inside items and span
    item boundaries; every tile is transformed once and written once."""
    monkeypatch.setattr(conv_winograd1d, "CHUNK_BYTES", 1)
    _check(3, 4, 50, 5, 1, 1, dtype)
    _check(2, 4, 31, 6, 2, 2, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [16, 128, 512])
def test_errorBound(channels, dtype):
    """The stated bound on wide reductions (the error grows with the channel count)."""
    _check(2, channels, 200, 16, 1, 1, dtype)


def test_deterministicAndThreadIndependent(monkeypatch):
    x, w, b, dy = _data(4, 32, 700, 32, 1, 1, np.float32)
    assert len(conv_winograd1d._chunks(4 * 117, 32, 32, 4)) >= 2   # the threads really split the work
    # Three runs on two threads, then one on a single thread.
    resultsOnThreads(monkeypatch, lambda: _directions(x, w, b, dy, 1, 1), threads=(2, 2, 2, 1))


def test_dispatchAndHeuristic():
    bench = ((8, 64, 4096), (64, 64, 3), (1,), (1,), (1,), 1)
    for direction in conv.DIRECTIONS:
        assert "winograd" in conv.algorithms(direction, *bench)
        assert conv.chooseAlgorithm(direction, *bench) == "winograd"
        assert conv.chooseAlgorithm(direction, (4, 32, 1024), (32, 32, 3), (1,), (1,), (1,), 1) == "winograd"
        # Small problems: the transforms' fixed costs do not pay off (but im2col's weight gradient is slower yet).
        assert conv.chooseAlgorithm(direction, (1, 64, 256), (64, 64, 3), (1,), (1,), (1,), 1) == \
            ("winograd" if direction == "backwardParams" else "im2col")
        assert conv.chooseAlgorithm(direction, (1, 64, 1024), (64, 64, 3), (1,), (1,), (1,), 1) == "winograd"
        assert conv.chooseAlgorithm(direction, (4, 16, 256), (16, 16, 3), (1,), (1,), (1,), 1) == "im2col"
        assert conv.chooseAlgorithm(direction, (8, 8, 4096), (8, 8, 3), (1,), (1,), (1,), 1) == "im2col"
        # Short maps: the edge tiles' bounds-checked path makes it a tie at best.
        assert conv.chooseAlgorithm(direction, (64, 64, 64), (64, 64, 3), (1,), (1,), (1,), 1) == "im2col"
        assert conv.chooseAlgorithm(direction, (32, 64, 128), (64, 64, 3), (1,), (1,), (1,), 1) == "winograd"
    # Dilated, strided or other kernel sizes: not this algorithm.
    assert "winograd" not in conv.algorithms("forward", (2, 4, 20), (4, 4, 3), (1,), (1,), (2,), 1)
    assert "winograd" not in conv.algorithms("forward", (2, 4, 20), (4, 4, 3), (2,), (1,), (1,), 1)
    assert "winograd" not in conv.algorithms("forward", (2, 4, 20), (4, 4, 5), (1,), (1,), (1,), 1)
    # Through the engine's entry points, bias gradient included.
    x, w, b, dy = _data(2, 6, 40, 4, 1, 2, np.float64)
    args = ((1,), (1,), (1,), 2)
    ref, refDx, refDw = _refs(x, w, b, dy, 1, 2)
    assert _relErr(conv.forward(x, w, b, *args, algo="winograd"), ref) <= 1e-13
    assert _relErr(conv.backwardData(dy, w, x.shape, *args, algo="winograd"), refDx) <= 1e-13
    dw, db = conv.backwardParams(x, dy, w.shape, True, *args, algo="winograd")
    assert _relErr(dw, refDw) <= 1e-13
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2)), rtol=1e-12)
    assert conv.workspaceBytes("forward", "winograd", (8, 64, 4096), (64, 64, 3), (1,), (1,), (1,), 1) > 0


def test_emptyShapes():
    x = np.zeros((0, 4, 10), np.float32)
    w = np.ones((3, 4, 3), np.float32)
    assert conv_winograd1d.forward(x, w, None, (1,), 1).shape == (0, 3, 10)
    assert conv_winograd1d.backwardParams(x, np.zeros((0, 3, 10), np.float32), w.shape, (1,), 1).shape == w.shape
    assert not conv_winograd1d.backwardParams(x, np.zeros((0, 3, 10), np.float32), w.shape, (1,), 1).any()
