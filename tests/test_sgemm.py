"""The float32 tile GEMM (PuzzleLib.Engines.cpu.sgemm) against a float64 product: every tile width and edge,
A packed, row-major or transposed in place, strided B and C, bias and accumulation, and the same bits
whatever the columns are split into; and the algorithms that use it (im2col forward with a short inner
dimension, Winograd F(2x2)) against the float64 reference, with the kernel and with BLAS."""

import numpy as np
import pytest
from conftest import convInputs32
from reference import convBackwardData, convForward

from PuzzleLib.Engines.cpu import conv, conv_winograd2x2, sgemm

pytestmark = pytest.mark.skipif(sgemm.njit is None, reason="numba is not installed")


def _operands(m, k, n, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n + 7)).astype(np.float32)[:, 3:3 + n]  # rows strided, unit columns
    bias = rng.standard_normal(m).astype(np.float32)
    return a, b, bias


def _bound(a, b):
    """A float32 sum of k products: error within a few k * eps of the sum of magnitudes."""
    return 4 * a.shape[1] * np.finfo(np.float32).eps * (np.abs(a.astype(np.float64)) @ np.abs(b)) + 1e-30


# Widths: whole panels (32), the 16- and 8-wide tiles, fewer than 8 (scratch), and mixes of them.
@pytest.mark.parametrize("m, k, n", [(8, 1, 32), (13, 7, 45), (17, 300, 33), (64, 147, 100), (5, 64, 7),
                                     (24, 33, 16), (9, 20, 8), (1, 5, 1), (16, 0, 40)])
@pytest.mark.parametrize("layout", ["packed", "rows", "transposed"])
def test_productMatchesFloat64(m, k, n, layout):
    a, b, bias = _operands(m, k, n)
    store = np.full((m, n + 5), 7, dtype=np.float32)
    c = store[:, 2:2 + n]  # rows strided: the columns around must stay untouched
    operand = {"packed": sgemm.packA(a), "rows": a, "transposed": np.ascontiguousarray(a.T).T}[layout]
    sgemm.gemm(operand, b, c, sgemm.biasRows(bias, m), packed=layout == "packed")
    ref = a.astype(np.float64) @ b + bias[:, None]
    assert np.all(np.abs(c - ref) <= _bound(a, b) + 1e-6)
    assert np.all(store[:, :2] == 7) and np.all(store[:, 2 + n:] == 7)
    sgemm.gemm(operand, b, c, accumulate=True, packed=layout == "packed")  # c += a @ b
    assert np.all(np.abs(c - (2 * ref - bias[:, None])) <= 2 * _bound(a, b) + 1e-5)


@pytest.mark.parametrize("m, k, n", [(13, 70, 45), (64, 147, 200)])
def test_sameBitsWhateverTheLayoutOrColumnSplit(m, k, n):
    """One chain of FMAs per element in k order: packing, strides and the column ranges change no bit."""
    a, b, bias = _operands(m, k, n, seed=1)
    rows = sgemm.biasRows(bias, m)
    whole = np.empty((m, n), dtype=np.float32)
    sgemm.gemm(sgemm.packA(a), b, whole, rows, packed=True)
    for operand, packed in ((a, False), (np.ascontiguousarray(a.T).T, False)):
        split = np.empty_like(whole)
        for j0, j1 in ((0, 5), (5, 37), (37, n)):  # ranges that start and end mid-panel
            sgemm.gemm(operand, b, split, rows, cols=(j0, j1), packed=packed)
        assert np.array_equal(split, whole)


def test_prefetchingTileOnLargeB():
    """A B of AHEAD_ELEMENTS and more runs the tile that prefetches the next panel: the product is right, and
    each column has the bits the plain tile gives it on a copy of its panel (a B far below the bound)."""
    m, k = 24, 512
    n = -(-sgemm.AHEAD_ELEMENTS // k) + 40  # past the bound, and a ragged last panel
    a, b, bias = _operands(m, k, n, seed=3)
    assert k * b.strides[0] // 4 >= sgemm.AHEAD_ELEMENTS
    rows, panels = sgemm.biasRows(bias, m), sgemm.packA(a)
    c = np.empty((m, n), dtype=np.float32)
    sgemm.gemm(panels, b, c, rows, packed=True)
    assert np.all(np.abs(c - (a.astype(np.float64) @ b + bias[:, None])) <= _bound(a, b) + 1e-6)
    for j in range(0, n, 96):
        part = np.ascontiguousarray(b[:, j:j + 96])
        assert part.size < sgemm.AHEAD_ELEMENTS
        small = np.empty((m, part.shape[1]), dtype=np.float32)
        sgemm.gemm(panels, part, small, rows, packed=True)
        assert np.array_equal(small, c[:, j:j + 96])


def test_batchedBroadcastsLeadingAxes():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 10, 20)).astype(np.float32)  # per group
    b = rng.standard_normal((2, 3, 20, 40)).astype(np.float32)  # items, groups
    c = np.empty((2, 3, 10, 40), dtype=np.float32)
    sgemm.batched(sgemm.packGroups(a), b, c, packed=True)
    ref = np.matmul(a.astype(np.float64), b)
    assert np.abs(c - ref).max() <= 1e-4 * np.abs(ref).max()
    unpacked = np.empty_like(c)
    sgemm.batched(a, b, unpacked)
    assert np.array_equal(unpacked, c)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_batchedLoopGivesGemmsBits(packed, shared):
    """batched's compiled loop over the last leading axis: the bits of one gemm per leading index, with A
    per index or one A for all, strided views, a column range, the bias and accumulation."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((1 if shared else 3, 13, 37)).astype(np.float32)
    operand = np.stack([sgemm.packA(m) for m in a]) if packed else a.transpose(0, 2, 1).copy().transpose(0, 2, 1)
    if shared:
        operand = operand[0]
    b = rng.standard_normal((2, 3, 37, 60)).astype(np.float32)[..., 5:55]
    start = rng.standard_normal((2, 3, 13, 50)).astype(np.float32)
    bias = sgemm.biasRows(rng.standard_normal(13).astype(np.float32), 13)
    for accumulate in (False, True):
        c, ref = start.copy(), start.copy()
        sgemm.batched(operand, b, c, bias, accumulate, cols=(3, 45), packed=packed)
        for i, j in np.ndindex(2, 3):
            sgemm.gemm(operand if shared else operand[j], b[i, j], ref[i, j], bias, accumulate, cols=(3, 45),
                       packed=packed)
        assert np.array_equal(c, ref)
        assert np.array_equal(c[..., :3], start[..., :3]) and np.array_equal(c[..., 45:], start[..., 45:])


@pytest.mark.parametrize("useKernel", [True, False])
@pytest.mark.parametrize("groups, stride, pad", [(1, (2, 2), (3, 3)), (2, (1, 1), (1, 2))])
def test_im2colForwardShortInnerDimension(useKernel, groups, stride, pad, monkeypatch):
    """Inner dimension 3 * 7 * 7 = 147 (as case 3's stem): the kernel's path, bias started in the sums."""
    monkeypatch.setattr(sgemm, "available", useKernel)  # the tiles run on any host, AVX-512 or not
    x, w, bias = convInputs32(2, 6, 12, groups, (23, 30), (7, 7), seed=3)
    y = conv.forward(x, w, bias, stride, pad, (1, 1), groups, algo="im2col")
    ref = convForward(x, w, bias, stride, pad, (1, 1), groups)
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("useKernel", [True, False])
def test_winograd2x2ThroughTheKernel(useKernel, monkeypatch):
    """F(2x2, 3x3) forward and backward-data (the kernel matrices read transposed in place) within the
    stated float32 bound, 1e-5 of the largest result."""
    monkeypatch.setattr(sgemm, "available", useKernel)
    x, w, bias = convInputs32(2, 20, 36, 1, (7, 9), (3, 3), seed=4)
    dy = np.random.default_rng(5).standard_normal((2, 36, 7, 9)).astype(np.float32)
    y = conv_winograd2x2.forward(x, w, bias, (1, 1), 1)
    ref = convForward(x, w, bias, (1, 1), (1, 1), (1, 1), 1)
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
    dx = conv_winograd2x2.backwardData(dy, w, x.shape, (1, 1), 1)
    refDx = convBackwardData(dy, w, x.shape, (1, 1), (1, 1), (1, 1), 1)
    assert np.abs(dx - refDx).max() <= 1e-5 * np.abs(refDx).max()


def _dotRunner(ones):
    from numba import njit

    tile = sgemm.dotTileOnes if ones else sgemm.dotTile

    @njit
    def run(rows, vectors, tail, a, aRows, aTaps, b, ldb, bPitch, sums):
        tile(rows, vectors, tail, a.ctypes.data, aRows.ctypes.data, aTaps.ctypes.data, b.ctypes.data, ldb, bPitch,
             sums.ctypes.data)

    return run


@pytest.mark.parametrize("rowLen", [16, 20, 37, 112])  # whole vectors, and masked tails of 4 and 5
@pytest.mark.parametrize("ones", [False, True])
def test_dotTileSumsRowsOfProducts(rowLen, ones):
    """dotTile: lane partial sums, added to what the sums held, of A rows found through two offset tables
    against B rows at a pitch; with ones, the last A row is ones (sums of B)."""
    rng = np.random.default_rng(6)
    rows, taps, maps = 3, sgemm.DOT_ROWS, sgemm.DOT_COLS
    a = rng.standard_normal(6000).astype(np.float32)
    aRows = np.array([0, 1500, 3100], dtype=np.int64)
    aTaps = rng.integers(0, 2000, size=taps).astype(np.int64)
    ldb = rows * rowLen + 5
    b = rng.standard_normal(maps * ldb).astype(np.float32)
    sums = rng.standard_normal(taps * maps * 16).astype(np.float32)
    before = sums.reshape(taps, maps, 16).sum(axis=2, dtype=np.float64)
    _dotRunner(ones)(rows, rowLen // 16, rowLen % 16, a, aRows, aTaps, b, ldb, rowLen, sums)
    ref = before.copy()
    for i in range(taps):
        for j in range(maps):
            for r in range(rows):
                left = a[aRows[r] + aTaps[i]:][:rowLen].astype(np.float64)
                if ones and i == taps - 1:
                    left = np.ones(rowLen)
                ref[i, j] += left @ b[r * rowLen + j * ldb:][:rowLen]
    got = sums.reshape(taps, maps, 16).sum(axis=2, dtype=np.float64)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
