"""conv_winograd1d (F(6, 3) for 1-D 3-tap stride-1 convolutions) against an independent float64 reference.

The reference is written here: a zero-padded input and one np.einsum per kernel tap (and its adjoints).
Winograd is held to its stated error bound (relative to the result's largest magnitude), tighter for
float64; results must be bit-identical run to run and on one or two threads.
"""

import numpy as np
import pytest

from PuzzleLib.Engines.cpu import conv, conv_common, conv_winograd1d

pytestmark = pytest.mark.skipif(not conv_winograd1d.available, reason="numba is not installed")

# The bound the module docstring states (measured: at most 3e-6 and 7e-15).
BOUND = {np.float32: 2e-5, np.float64: 1e-13}


def refForward(x, w, b, pad, groups, dilation=1):
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, size = x.shape
    o, cg, k = w.shape
    out = size + 2 * pad - dilation * (k - 1)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad))).reshape(n, groups, cg, -1)
    wg = w.reshape(groups, o // groups, cg, k)
    y = np.zeros((n, groups, o // groups, out))
    for t in range(k):
        y += np.einsum("ngcl,goc->ngol", xp[..., t * dilation:t * dilation + out], wg[..., t])
    y = y.reshape(n, o, out)
    return y if b is None else y + b.astype(np.float64).reshape(1, o, 1)


def refBackwardData(dy, w, xShape, pad, groups, dilation=1):
    dy, w = dy.astype(np.float64), w.astype(np.float64)
    n, c, size = xShape
    o, cg, k = w.shape
    out = dy.shape[2]
    dxp = np.zeros((n, groups, cg, size + 2 * pad))
    dyg = dy.reshape(n, groups, o // groups, out)
    wg = w.reshape(groups, o // groups, cg, k)
    for t in range(k):
        dxp[..., t * dilation:t * dilation + out] += np.einsum("ngol,goc->ngcl", dyg, wg[..., t])
    return dxp[..., pad:pad + size].reshape(xShape)


def refBackwardParams(x, dy, wShape, pad, groups, dilation=1):
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    n, c, size = x.shape
    o, cg, k = wShape
    out = dy.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad))).reshape(n, groups, cg, -1)
    dyg = dy.reshape(n, groups, o // groups, out)
    dw = np.zeros((groups, o // groups, cg, k))
    for t in range(k):
        dw[..., t] = np.einsum("ngcl,ngol->goc", xp[..., t * dilation:t * dilation + out], dyg)
    return dw.reshape(wShape)


def _data(n, c, size, o, pad, groups, dtype, seed=0, dilation=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, size)).astype(dtype)
    w = rng.standard_normal((o, c // groups, 3)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    dy = rng.standard_normal((n, o, size + 2 * pad - 2 * dilation)).astype(dtype)
    return x, w, b, dy


def _relErr(ours, ref):
    assert ours.shape == ref.shape
    return np.abs(ours.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-300)


def _directions(x, w, b, dy, pad, groups, dilation=1):
    return [conv_winograd1d.forward(x, w, b, (pad,), groups, (dilation,)),
            conv_winograd1d.backwardData(dy, w, x.shape, (pad,), groups, (dilation,)),
            conv_winograd1d.backwardParams(x, dy, w.shape, (pad,), groups, (dilation,))]


def _check(n, c, size, o, pad, groups, dtype, bound=None, dilation=1):
    x, w, b, dy = _data(n, c, size, o, pad, groups, dtype, dilation=dilation)
    refs = [refForward(x, w, b, pad, groups, dilation), refBackwardData(dy, w, x.shape, pad, groups, dilation),
            refBackwardParams(x, dy, w.shape, pad, groups, dilation)]
    for ours, ref in zip(_directions(x, w, b, dy, pad, groups, dilation), refs):
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


# (n, c, L, o, pad, groups, dilation): phases of unequal length, pads past the dilation (phases whose
# windows start inside the input), a phase with a single output, groups.
DILATED = [
    (2, 6, 37, 4, 1, 1, 2), (1, 4, 5, 2, 0, 2, 2), (3, 4, 13, 6, 2, 2, 3), (2, 6, 8, 4, 3, 1, 4),
    (2, 4, 30, 4, 5, 2, 3), (1, 2, 7, 2, 6, 1, 4), (2, 8, 100, 4, 0, 4, 2),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DILATED)
def test_dilated(case, dtype):
    _check(*case[:6], dtype, dilation=case[6])


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
    first = _directions(x, w, b, dy, 1, 1)
    assert len(conv_winograd1d._chunks(4 * 117, 32, 32, 4)) >= 2   # the threads really split the work
    for _ in range(2):
        assert all(np.array_equal(a, f) for a, f in zip(_directions(x, w, b, dy, 1, 1), first))
    monkeypatch.setattr(conv_common, "THREADS", 1)
    assert all(np.array_equal(a, f) for a, f in zip(_directions(x, w, b, dy, 1, 1), first))


def test_dispatchAndHeuristic():
    bench = ((8, 64, 4096), (64, 64, 3), (1,), (1,), (1,), 1)
    for direction in conv.DIRECTIONS:
        assert "winograd" in conv.algorithms(direction, *bench)
        assert conv.chooseAlgorithm(direction, *bench) == "winograd"
        assert conv.chooseAlgorithm(direction, (4, 32, 1024), (32, 32, 3), (1,), (1,), (1,), 1) == "winograd"
        # Small problems: the transforms' fixed costs do not pay off.
        assert conv.chooseAlgorithm(direction, (1, 64, 256), (64, 64, 3), (1,), (1,), (1,), 1) == "im2col"
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
    assert _relErr(conv.forward(x, w, b, *args, algo="winograd"), refForward(x, w, b, 1, 2)) <= 1e-13
    assert _relErr(conv.backwardData(dy, w, x.shape, *args, algo="winograd"),
                   refBackwardData(dy, w, x.shape, 1, 2)) <= 1e-13
    dw, db = conv.backwardParams(x, dy, w.shape, True, *args, algo="winograd")
    assert _relErr(dw, refBackwardParams(x, dy, w.shape, 1, 2)) <= 1e-13
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2)), rtol=1e-12)
    assert conv.workspaceBytes("forward", "winograd", (8, 64, 4096), (64, 64, 3), (1,), (1,), (1,), 1) > 0


def test_emptyShapes():
    x = np.zeros((0, 4, 10), np.float32)
    w = np.ones((3, 4, 3), np.float32)
    assert conv_winograd1d.forward(x, w, None, (1,), 1).shape == (0, 3, 10)
    assert conv_winograd1d.backwardParams(x, np.zeros((0, 3, 10), np.float32), w.shape, (1,), 1).shape == w.shape
    assert not conv_winograd1d.backwardParams(x, np.zeros((0, 3, 10), np.float32), w.shape, (1,), 1).any()
