"""Winograd F(4x2, 3x3) for 2-D 3x3 stride-1 convolutions on small maps, in all three directions: F(4, 3) down
the columns (conv_winograd's transforms) and F(2, 3) along the rows (conv_winograd2x2's).

Each block of 4 rows by 2 columns of outputs comes from a 6x4 input tile: 24 multiplies per 8 outputs and input
channel, against F(2x2)'s 16 per 4 (3 against 4 per output). On a 7x7 map both cover 8x8 (two tiles of four
rows, four of two columns), so the GEMM work drops by a quarter: N8 512->512 7x7 (benchmarks/conv.py case 4)
makes 24 products (512 x 512) @ (512 x 64) instead of 16 of (512 x 512) @ (512 x 128). The transformed kernel
is 24/9 of the kernel instead of 16/9, transformed a block of maps at a time as in conv_winograd2x2.

The input of all tiles is transformed once (V, at most WHOLE_BYTES); the output maps are taken in fixed blocks
of BLOCK_MAPS, each thread transforming its block's kernel slice, multiplying and transforming back. Blocks and
channel pieces are fixed by the shape: results do not depend on the thread count. Backward-data is the
forward of the gradient with the flipped, transposed kernel and padding 2 - pad; the kernel transform reads
w flipped in place (no copy) and the products read its slice transposed. The weight gradient transforms the
gradient of each block of maps (the adjoint of the output transform), multiplies as conv_winograd2x2's does,
dU^T = V Mg^T (24 products (C, tiles) @ (tiles, maps) instead of 16 with twice the tiles; through sgemm, Mg^T
copied contiguous), and takes the adjoint of the kernel transform for the block's rows of dW.

Accuracy: conv_winograd's points 0, +-1, +-2 on one axis (coefficients up to 8, 1/24 in G), 0, +-1 on the
other, so the error is between F(2x2)'s and F(4x4)'s: max |error| / max |result| against the float64 reference
was at most 1.2e-6 in float32 and 1.7e-15 in float64 on the tests' shapes (the weight gradient: 8.1e-7 and
1.2e-15); they assert F(4x4)'s bound, 5e-5 (float32) and 1e-12 (float64).

Against F(2x2), same process, two threads, median of 15 paired ratios (forward / backward-data): N8 512->512 7x7
(case 4) 0.77 / 0.81, N4 0.84 / 0.91, N8 256->256 7x7 0.81 / 0.89, N8 256->256 10x10 0.90 / 0.95, N8 64->64 7x7
0.99 / 0.99; case 4's forward 0.74-0.77 with blocks of 32 maps, 0.80 with 64. In the benchmark, case 4 ran
5.92 / 6.40 ms against torch's 8.43 / 8.37, its peak 7.0 MiB against F(2x2)'s 9.6 and torch's 10.4. The weight
gradient against F(2x2)'s, the same way, two runs: case 4 0.72-0.77, N4 0.89-0.91, N8 256->256 7x7 0.81-0.87,
10x10 0.87-0.93, N8 64->64 7x7 0.83-0.86 (with its products through OpenBLAS: 0.86-0.89, 0.93-0.94, 0.88-0.94,
0.99-1.00, 0.87-0.89). Case 4's 24 products of a block, (512 x 64) @ (64 x 32), one thread: sgemm 0.46 ms
(109 GFLOP/s), OpenBLAS with Mg^T transposed 0.62 (82); its adjoint kernel transform took 2.7 ms of a call,
the input transform 0.6, the gradient's 0.4.
"""

import numpy as np

from PuzzleLib.Engines.cpu import conv_winograd, sgemm
from PuzzleLib.Engines.cpu.conv_common import (
    biasVector,
    chunkWorkers,
    leadingView,
    pieces,
    ranges,
    shareItems,
    workspace,
)

try:
    from numba import njit, uintp
except ImportError:  # pragma: no cover - numba is a dependency; without it the algorithm is unavailable
    njit = None

available = njit is not None

POSITIONS = 24
# Output maps per block (its kernel slice U: 24 x maps x channels; its products M: 24 x maps x tiles).
BLOCK_MAPS = 32
# The input of all tiles is transformed at once while it takes at most this; above it, F(2x2) runs instead.
WHOLE_BYTES = 4 << 20
# Elements per vectorised pass of the transforms (conv_winograd.VECTOR_SPAN).
VECTOR_SPAN = conv_winograd.VECTOR_SPAN


def _tiles(h, w, pad):
    oh, ow = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
    return -(-oh // 4), -(-ow // 2)


def preferred(xShape, pad, groups, itemsize=4):
    """Whether the forward (and, with its own shapes, backward-data) of a convolution F(2x2) would run goes
    here instead: one group, V of all tiles within WHOLE_BYTES, and fewer products than F(2x2) (rows of 4
    outputs waste no more than rows of 2 would save: 3 * ceil(oh / 4) * 4 < 4 * ceil(oh / 2) * 2)."""
    if not available or groups != 1 or len(xShape) != 4:
        return False
    n, c, h, w = xShape
    oh = h + 2 * pad[0] - 2
    th, tw = _tiles(h, w, pad)
    return (oh > 0 and 3 * th * 4 < 4 * -(-oh // 2) * 2
            and POSITIONS * c * n * th * tw * itemsize <= WHOLE_BYTES)


def _inputTransform(x, V, ph, pw, th, tw, q0, q1, c0, c1, cst):
    """V[a * 4 + b, c * P + (q - q0) * tw + tx] = (B6^T d B4)[a, b] for the 6x4 tile d at rows 4 ty - ph ..,
    columns 2 tx - pw .. of channel c in [c0, c1) (tile row q = n * th + ty; P = (q1 - q0) * tw).

    As conv_winograd._inputTransform, with two columns per tile: per block of channels, each tile row's six
    input rows (padding fused) copied end to end into D[i] (the two columns past them, read by the last
    tile, into E), F(4, 3)'s B^T down the rows in one pass, then F(2, 3)'s B along the columns, tile t
    reading columns 2 t .. 2 t + 3 (stride-2 loads), the last tile of each row redone from E."""
    nq = q1 - q0
    P, S = nq * tw, 2 * tw
    cb = max(1, min(c1 - c0, VECTOR_SPAN // max(P, 1)))
    D = np.zeros((6, cb * nq * S + 4), dtype=x.dtype)
    T = np.empty((6, cb * nq * S + 4), dtype=x.dtype)
    E = np.empty((6, cb * nq * 2), dtype=x.dtype)
    F = np.empty((6, cb * nq * 2), dtype=x.dtype)
    two, four, five = cst[0], cst[1], cst[2]
    zero = cst[0] - cst[0]
    cs = c0
    while cs < c1:
        ce = min(c1, cs + cb)
        conv_winograd._copyTileRows(x, D, E, cs, ce, q0, q1, th, 4, ph, pw, S, zero)
        rows = (ce - cs) * nq
        conv_winograd._allRowsB(D, T, rows * S + 4, two, four, five)
        conv_winograd._allRowsB(E, F, 2 * rows, two, four, five)
        o0 = cs * P
        L = rows * tw
        for a in range(6):
            conv_winograd._columnsB2(T[a], F[a], V[4 * a, o0:o0 + L], V[4 * a + 1, o0:o0 + L],
                                     V[4 * a + 2, o0:o0 + L], V[4 * a + 3, o0:o0 + L], rows, tw)
        cs = ce


def _outputTransform(M, mb0, y, bias, th, tw, q0, q1, o0, o1, cst):
    """y[n, o, 4 ty + i, 2 tx + j] = (A6^T m A4)[i, j] + bias[o] for maps o in [o0, o1), m read from
    M[:, (o - mb0) * P + (q - q0) * tw + tx] (laid out as V in _inputTransform).

    Per block of maps: F(4, 3)'s A^T down the columns of the 6x4 tiles, then F(2, 3)'s A along the rows plus
    the bias into Y[i] (stride-2 stores: Y[i] holds the block's output rows end to end), copied into the map
    (the rows and columns of edge tiles past it dropped)."""
    nq = q1 - q0
    P, S = nq * tw, 2 * tw
    ob = max(1, min(o1 - o0, VECTOR_SPAN // max(P, 1)))
    R = np.empty((4, 4, ob * P), dtype=y.dtype)
    Y = np.empty((4, ob * P * 2), dtype=y.dtype)
    bt = np.empty(ob * P, dtype=y.dtype)
    two, four, eight = cst[0], cst[1], cst[3]
    os_ = o0
    while os_ < o1:
        oe = min(o1, os_ + ob)
        s0, L = (os_ - mb0) * P, (oe - os_) * P
        for bb in range(4):
            conv_winograd._columnsAT(M[bb, s0:s0 + L], M[4 + bb, s0:s0 + L], M[8 + bb, s0:s0 + L],
                                     M[12 + bb, s0:s0 + L], M[16 + bb, s0:s0 + L], M[20 + bb, s0:s0 + L],
                                     R[0, bb], R[1, bb], R[2, bb], R[3, bb], L, two, four, eight)
        conv_winograd._biasRun(bias, bt, os_, oe, P)
        for i in range(4):
            conv_winograd._rowsA2(R[i, 0], R[i, 1], R[i, 2], R[i, 3], bt, Y[i], L)
        conv_winograd._storeTileRows(Y, y, os_, oe, q0, q1, th, S)
        os_ = oe


def _kernelTransform(w, U, o0, o1, c0, c1, g, flip):
    """U[a * 4 + b, o - o0, c - c0] = (G6 k G4^T)[a, b] for maps o in [o0, o1) (rows of w) and c in [c0, c1), where
    k = w[o, c] or, with ``flip``, w[o, c] turned by 180 degrees (backward-data's kernel, whose GEMMs read U
    transposed). g: G6 (6 x 3) and a row holding 1/2, typed like w.

    Per map o, two flat passes over its row of w: F(2, 3)'s G along each kernel row (stride-3 loads) into T[b]
    (flipped: the row's taps reversed, which swaps T[0] and T[3]), then F(4, 3)'s G down the rows (flipped: the
    rows reversed) into U's 24 planes."""
    n = c1 - c0
    half = g[6, 0]
    T = np.empty((4, 3 * n), dtype=w.dtype)
    f = w.reshape(w.shape[0], -1)
    first, last = (3, 0) if flip else (0, 3)
    a00 = g[0, 0]
    a10, a11, a12 = g[1, 0], g[1, 1], g[1, 2]
    a20, a21, a22 = g[2, 0], g[2, 1], g[2, 2]
    a30, a31, a32 = g[3, 0], g[3, 1], g[3, 2]
    a40, a41, a42 = g[4, 0], g[4, 1], g[4, 2]
    for o in range(o0, o1):
        r, uo, s0 = uintp(o - o0), uintp(o), uintp(9 * c0)
        for p in range(3 * n):
            u = s0 + uintp(3 * p)
            g0, g1, g2 = f[uo, u], f[uo, u + uintp(1)], f[uo, u + uintp(2)]
            s = g0 + g2
            T[first, p] = g0
            T[1, p] = half * (s + g1)
            T[2, p] = half * (s - g1)
            T[last, p] = g2
        for b in range(4):
            ub = uintp(b)
            for j in range(n):
                v = uintp(3 * j)
                e0, e1, e2 = T[ub, v], T[ub, v + uintp(1)], T[ub, v + uintp(2)]
                if flip:
                    e0, e2 = e2, e0
                uj = uintp(j)
                U[uintp(b), r, uj] = a00 * e0
                U[uintp(4 + b), r, uj] = a10 * e0 + a11 * e1 + a12 * e2
                U[uintp(8 + b), r, uj] = a20 * e0 + a21 * e1 + a22 * e2
                U[uintp(12 + b), r, uj] = a30 * e0 + a31 * e1 + a32 * e2
                U[uintp(16 + b), r, uj] = a40 * e0 + a41 * e1 + a42 * e2
                U[uintp(20 + b), r, uj] = e2


def _gradTransform(dy, Mg, mb0, th, tw, q0, q1, o0, o1, cst):
    """Mg[a * 4 + b, (o - mb0) * P + (q - q0) * tw + tx] = (A6 g A4^T)[a, b] for the 4x2 gradient tile g at rows
    4 ty .., columns 2 tx .. of map o in [o0, o1) (zero past the map): the adjoint of _outputTransform, laid out
    as V in _inputTransform.

    Per block of maps: each tile row's four gradient rows copied end to end into G[i], F(4, 3)'s A down them
    (conv_winograd's weight gradient), then F(2, 3)'s A along the rows, tile t reading columns 2 t, 2 t + 1
    (conv_winograd2x2's)."""
    nq = q1 - q0
    P, S = nq * tw, 2 * tw
    ob = max(1, min(o1 - o0, VECTOR_SPAN // max(P, 1)))
    G = np.empty((4, ob * P * 2), dtype=dy.dtype)
    R = np.empty((6, ob * P * 2), dtype=dy.dtype)
    two, four, eight = cst[0], cst[1], cst[3]
    zero = cst[0] - cst[0]
    os_ = o0
    while os_ < o1:
        oe = min(o1, os_ + ob)
        s0, L = (os_ - mb0) * P, (oe - os_) * P
        conv_winograd._copyGradRows(dy, G, os_, oe, q0, q1, th, S, zero)
        conv_winograd._rowsAdjointA(G[0], G[1], G[2], G[3], R[0], R[1], R[2], R[3], R[4], R[5], 2 * L, two, four,
                                    eight)
        for a in range(6):
            conv_winograd._columnsAdjointA2(R[a], Mg[4 * a, s0:s0 + L], Mg[4 * a + 1, s0:s0 + L],
                                            Mg[4 * a + 2, s0:s0 + L], Mg[4 * a + 3, s0:s0 + L], L)
        os_ = oe


def _kernelGradient(dUT, dw, o0, o1, g):
    """dw[o, c] = G6^T dU[:, :, o, c] G4 (6x4 -> 3x3) for maps o in [o0, o1), from dUT (24, C, o1 - o0) = dU
    transposed (the adjoint of _kernelTransform). g: as _kernelTransform's.

    Per kernel column c (its row of every plane of dUT: all the block's maps): G6^T down the tiles' six rows
    into X[b] (map r's kernel row i at 3 r + i; G6's first row is (1/4, 0, 0), its last (0, 0, 1)), then G4^T
    along the rows, each map's nine taps stored straight into dw. G4^T's rows: (1, 1/2, 1/2, 0),
    (0, 1/2, -1/2, 0), (0, 1/2, 1/2, 1)."""
    half = g[6, 0]
    n = o1 - o0
    X = np.empty((4, 3 * n), dtype=dw.dtype)
    f = dw.reshape(dw.shape[0], -1)
    a00 = g[0, 0]
    a10, a11, a12 = g[1, 0], g[1, 1], g[1, 2]
    a20, a21, a22 = g[2, 0], g[2, 1], g[2, 2]
    a30, a31, a32 = g[3, 0], g[3, 1], g[3, 2]
    a40, a41, a42 = g[4, 0], g[4, 1], g[4, 2]
    for c in range(dw.shape[1]):
        uc = uintp(c)
        for b in range(4):
            ub = uintp(b)
            for r in range(n):
                ur, v = uintp(r), uintp(3 * r)
                d0, d1, d2 = dUT[ub, uc, ur], dUT[uintp(4 + b), uc, ur], dUT[uintp(8 + b), uc, ur]
                d3, d4, d5 = dUT[uintp(12 + b), uc, ur], dUT[uintp(16 + b), uc, ur], dUT[uintp(20 + b), uc, ur]
                X[ub, v] = a00 * d0 + a10 * d1 + a20 * d2 + a30 * d3 + a40 * d4
                X[ub, v + uintp(1)] = a11 * d1 + a21 * d2 + a31 * d3 + a41 * d4
                X[ub, v + uintp(2)] = a12 * d1 + a22 * d2 + a32 * d3 + a42 * d4 + d5
        conv_winograd._tapsAdjointG2(X, f, o0, c, n, half)


if available:
    _inputTransform = njit(cache=True, nogil=True)(_inputTransform)
    _outputTransform = njit(cache=True, nogil=True)(_outputTransform)
    _kernelTransform = njit(cache=True, nogil=True)(_kernelTransform)
    _gradTransform = njit(cache=True, nogil=True)(_gradTransform)
    _kernelGradient = njit(cache=True, nogil=True)(_kernelGradient)


def _constants(dtype):
    """G6 with a last row holding 1/2 (F(2, 3)'s G), typed like the data."""
    return np.vstack([conv_winograd._G, [[0.5, 0.0, 0.0]]]).astype(dtype)


def _blocks(maps):
    """The output maps in fixed blocks of about BLOCK_MAPS (at least two, so that two threads have work)."""
    return ranges(maps, max(2, -(-maps // BLOCK_MAPS)) if maps > 1 else 1)


def workspaceBytes(direction, xShape, wShape, pad, itemsize=4):
    """Bytes of one call's scratch: V of all tiles, and each thread's kernel slice (or its gradient) and products
    (or the gradient's transform)."""
    n, c, h, w = xShape
    o = wShape[0]
    if direction == "backwardData":  # the forward of dy (n, o, oh, ow) into c maps
        h, w = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
        pad = (2 - pad[0], 2 - pad[1])
        c, o = o, c
    th, tw = _tiles(h, w, pad)
    p = n * th * tw
    blocks = _blocks(o)
    ob = max(m1 - m0 for m0, m1 in blocks)
    copied = p if direction == "backwardParams" and sgemm.applies(np.dtype(f"f{itemsize}")) else 0  # Mg^T
    return (POSITIONS * c * p + chunkWorkers(len(blocks)) * POSITIONS * ob * (c + p + copied)) * itemsize


def forward(x, w, bias, pad):
    """Forward 3x3 stride-1 convolution of x (N, C, H, W) with w (O, C, 3, 3), one group; pad may be negative."""
    return _convolve(x, w, bias, pad, flip=False)


def backwardData(dy, w, xShape, pad):
    dx = _convolve(dy, w, None, (2 - pad[0], 2 - pad[1]), flip=True)
    assert dx.shape == tuple(xShape)
    return dx


def _transformAll(x, pad, th, tw, total, cst):
    """V (24, C, tiles) of every tile, the channels split between the threads (elementwise: any split gives the
    same bits)."""
    c, p = x.shape[1], total * tw
    v = workspace.get("w42-v", (POSITIONS, c * p), x.dtype)
    workers = chunkWorkers(c)
    shareItems(lambda k, r: _inputTransform(x, v, pad[0], pad[1], th, tw, 0, total, r[0], r[1], cst),
               pieces(c, workers), workers)
    return v.reshape(POSITIONS, c, p)


def backwardParams(x, dy, wShape, pad):
    """The weight gradient (O, C, 3, 3), one group: V of all tiles, then per block of maps the gradient's
    transform Mg (the adjoint of the output transform), dU^T = V Mg^T (24 products (C, tiles) @ (tiles, maps),
    as conv_winograd2x2's) and dW = G6^T dU G4 for the block's rows of dW."""
    n, c, h, wd = x.shape
    o = wShape[0]
    th, tw = _tiles(h, wd, pad)
    total = n * th
    p = total * tw
    if p == 0 or dy.size == 0:
        return np.zeros(wShape, dtype=x.dtype)
    dw = np.empty(wShape, dtype=x.dtype)  # every entry written by a block's kernel gradient
    xc, dyc = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    cst, g = conv_winograd.transformConstants(x.dtype), _constants(x.dtype)
    v = _transformAll(xc, pad, th, tw, total, cst)
    blocks = _blocks(o)
    ob = max(m1 - m0 for m0, m1 in blocks)
    workers = chunkWorkers(len(blocks))
    fast = sgemm.applies(x.dtype)
    bufs = [(workspace.get(f"w42-m{k}", (POSITIONS * ob * p,), x.dtype),
             workspace.get(f"w42-u{k}", (POSITIONS * c * ob,), x.dtype),
             workspace.get(f"w42-mt{k}", (POSITIONS * p * ob if fast else 1,), x.dtype)) for k in range(workers)]

    def block(k, item):
        (mb, ub, mtb), (m0, m1) = bufs[k], item
        mm = m1 - m0
        mg = leadingView(mb, (POSITIONS, mm * p))
        _gradTransform(dyc, mg, m0, th, tw, 0, total, m0, m1, cst)
        dut = leadingView(ub, (POSITIONS, c, mm))
        # sgemm with Mg^T copied (case 4: 109 GFLOP/s against OpenBLAS's 82 reading it transposed)
        conv_winograd.gradProducts(v, mg.reshape(POSITIONS, mm, p).transpose(0, 2, 1), dut, mtb, False)
        _kernelGradient(dut, dw, m0, m1, g)

    shareItems(block, blocks, workers)
    return dw


def _convolve(x, w, bias, pad, flip):
    """The forward convolution of x with w, or (``flip``) with w flipped and transposed (backward-data)."""
    n, c, h, wd = x.shape
    o = w.shape[1] if flip else w.shape[0]
    oh, ow = h + 2 * pad[0] - 2, wd + 2 * pad[1] - 2
    y = np.empty((n, o, oh, ow), dtype=x.dtype)
    if n == 0 or oh <= 0 or ow <= 0:
        return y
    th, tw = _tiles(h, wd, pad)
    total = n * th
    p = total * tw
    xc, wc = np.ascontiguousarray(x), np.ascontiguousarray(w)
    biasv = biasVector(bias, o, x.dtype)
    cst, g = conv_winograd.transformConstants(x.dtype), _constants(x.dtype)
    v = _transformAll(xc, pad, th, tw, total, cst)
    blocks = _blocks(o)
    ob = max(m1 - m0 for m0, m1 in blocks)
    workers = chunkWorkers(len(blocks))
    bufs = [(workspace.get(f"w42-u{k}", (POSITIONS * ob * c,), x.dtype),
             workspace.get(f"w42-m{k}", (POSITIONS * ob * p,), x.dtype)) for k in range(workers)]

    def block(k, item):
        (ub, mb), (m0, m1) = bufs[k], item
        if flip:  # w's rows are this call's input channels, its columns [m0, m1) the block's maps
            u = leadingView(ub, (POSITIONS, c, m1 - m0))
            _kernelTransform(wc, u, 0, c, m0, m1, g, True)
            u = u.transpose(0, 2, 1)
        else:
            u = leadingView(ub, (POSITIONS, m1 - m0, c))
            _kernelTransform(wc, u, m0, m1, 0, c, g, False)
        m = leadingView(mb, (POSITIONS, m1 - m0, p))
        if sgemm.applies(m.dtype):
            sgemm.batched(u, v, m)
        else:
            np.matmul(u, v, out=m)
        _outputTransform(m.reshape(POSITIONS, -1), m0, y, biasv, th, tw, 0, total, m0, m1, cst)

    shareItems(block, blocks, workers)
    return y
