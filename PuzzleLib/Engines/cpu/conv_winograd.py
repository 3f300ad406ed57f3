"""Winograd F(4x4, 3x3) for 2-D 3x3 stride-1 convolutions without dilation, in all three directions.

Each 4x4 block of outputs is computed from a 6x6 input tile: V = B^T d B (input transform),
U = G g G^T (kernel transform), then for each of the 36 tile positions one GEMM
M[k] = U[k] (O, C) @ V[k] (C, tiles), and Y = A^T M A (output transform). That is 36 multiplies per
16 outputs and input channel instead of 144: the GEMM work drops 4x.
Backward-data of a stride-1 convolution is the forward convolution of the gradient with the
flipped, transposed kernel and padding 2 - pad (negative padding crops), so the same code serves it.
The weight gradient is the adjoint: dW = G^T [sum over tiles (A g A^T) * V] G, 36 GEMMs
(O, tiles) @ (tiles, C).

The transforms are memory-bound loops over tiles, compiled with numba (cache on disk): image rows are
copied end to end into flat buffers and transformed in long unit-stride (or stride-4 interleaved)
passes that LLVM vectorises; copies index with unsigned integers (numba's negative-index wrap-around on
signed ones kept LLVM from vectorising them: 4x slower).
Tiles are processed in chunks of tile rows (across batch items) so the V and M buffers stay under a
bound (``chunkBytes``); they are reused across the chunks of one call and released when it returns.

Accuracy: the points 0, +-1, +-2 bring coefficients up to 8 (and 1/24 in G), which amplify rounding,
so the error is about 10x a direct convolution's. Measured against a float64 direct reference
(standard normal data, 16 to 256 input channels), max |error| / max |result| was at most 7e-6 in
float32 and 1.2e-14 in float64 in every direction (im2col: 5e-7 and 1e-15). The tests assert the
stated bound, 5e-5 (float32) and 1e-12 (float64).
"""


import numpy as np

from PuzzleLib.Engines.cpu import sgemm
from PuzzleLib.Engines.cpu.conv_common import (
    biasVector,
    chunkWorkers,
    dealParts,
    leadingView,
    oneBlasThread,
    workspace,
)

try:
    from numba import njit, uintp
except ImportError:  # pragma: no cover - numba is a dependency; without it the algorithm is unavailable
    njit = None

available = njit is not None

_BT = np.array([
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
], dtype=np.float64)

_G = np.array([
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
], dtype=np.float64)

_AT = np.array([
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
], dtype=np.float64)

M_OUT, TILE = 4, 6


def transformConstants(dtype):
    """The transforms' coefficients 2, 4, 5, 8, typed like the data (a Python literal would promote float32)."""
    return np.array([2, 4, 5, 8], dtype=dtype)

# Fewest tiles per weight-gradient chunk (the inner dimension of its GEMMs).
_MIN_GRAD_TILES = 24
# Parts of the weight gradient (fixed, so the result does not depend on the thread count; _gradUnits;
# conv_winograd3d's partial sums).
_GRAD_PARTS = 2
# Runs of chunks of the forward (fixed for the same reason; the threads take whole runs).
_PARTS = 2
# Elements per vectorised pass of the transforms: channels are taken in blocks so a pass is this long
# (a chunk's tiles alone can be fewer than one unrolled vector loop iteration, which then runs scalar).
VECTOR_SPAN = 256
# Bound of the V and M buffers of one call, all threads together (see chunkBytes).
CHUNK_BYTES = 2 << 20
# Bound of the weight gradient's V and Mg buffers, all parts together (see gradChunkBytes).
GRAD_CHUNK_BYTES = 4 << 20


def applies(kernel, stride, dilation):
    return len(kernel) == 2 and tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)


def _rowB(d0, d1, d2, d3, d4, d5, t, a, n, two, four, five):
    """t[:n] = row a of B^T applied to the rows d0..d5 (one row of the fused loop in _inputTransform)."""
    if a == 0:
        for p in range(n):
            t[p] = four * d0[p] - five * d2[p] + d4[p]
    elif a == 1:
        for p in range(n):
            t[p] = -(four * (d1[p] + d2[p])) + d3[p] + d4[p]
    elif a == 2:
        for p in range(n):
            t[p] = four * (d1[p] - d2[p]) - d3[p] + d4[p]
    elif a == 3:
        for p in range(n):
            t[p] = two * (d3[p] - d1[p]) - d2[p] + d4[p]
    elif a == 4:
        for p in range(n):
            t[p] = two * (d1[p] - d3[p]) - d2[p] + d4[p]
    else:
        for p in range(n):
            t[p] = four * d1[p] - five * d3[p] + d5[p]


def _allRowsB(D, T, n, two, four, five):
    """T[:, :n] = B^T applied down the six rows of D: all six rows in one pass, each input read once
    (the same arithmetic, in the same order, as _rowB row by row)."""
    d0, d1, d2, d3, d4, d5 = D[0], D[1], D[2], D[3], D[4], D[5]
    t0, t1, t2, t3, t4, t5 = T[0], T[1], T[2], T[3], T[4], T[5]
    for p in range(n):
        t0[p] = four * d0[p] - five * d2[p] + d4[p]
        t1[p] = -(four * (d1[p] + d2[p])) + d3[p] + d4[p]
        t2[p] = four * (d1[p] - d2[p]) - d3[p] + d4[p]
        t3[p] = two * (d3[p] - d1[p]) - d2[p] + d4[p]
        t4[p] = two * (d1[p] - d3[p]) - d2[p] + d4[p]
        t5[p] = four * d1[p] - five * d3[p] + d5[p]


def _rowA(g0, g1, g2, g3, s, a, n, two, four, eight):
    """s[:n] = row a of A applied to the rows g0..g3 (one row of the fused loop in _gradTransform)."""
    if a == 0:
        for p in range(n):
            s[p] = g0[p]
    elif a == 1:
        for p in range(n):
            s[p] = g0[p] + g1[p] + g2[p] + g3[p]
    elif a == 2:
        for p in range(n):
            s[p] = g0[p] - g1[p] + g2[p] - g3[p]
    elif a == 3:
        for p in range(n):
            s[p] = g0[p] + two * g1[p] + four * g2[p] + eight * g3[p]
    elif a == 4:
        for p in range(n):
            s[p] = g0[p] - two * g1[p] + four * g2[p] - eight * g3[p]
    else:
        for p in range(n):
            s[p] = g3[p]


def _copyTileRows(x, D, E, cs, ce, q0, q1, th, step, ph, pw, S, zero):
    """The input rows of tile rows [q0, q1) (q = n * th + ty) of channels [cs, ce), end to end: row i of the tile
    (input row step * ty + i - ph; zero outside the map) gives padded columns [0, S) to D[i] at (c - cs) * nq +
    (q - q0) times S, and columns S and S + 1 to E[i] at twice that index (read by the row's last tile). The
    copy stage of the input transforms (D.shape[0] rows per tile: 6 for F(4, 3) down the columns, 4 for F(2, 3)).
    """
    h, w = x.shape[2], x.shape[3]
    nq = q1 - q0
    lo = min(S + 2, max(0, pw))             # padded columns [lo, hi) lie inside the map
    hi = max(lo, min(S + 2, pw + w))
    for c in range(cs, ce):
        for q in range(q0, q1):
            b, ty = q // th, q % th
            rr = (c - cs) * nq + (q - q0)
            base = rr * S
            for i in range(D.shape[0]):
                r = ty * step + i - ph
                if r < 0 or r >= h:
                    for k in range(S):
                        D[i, base + k] = zero
                    E[i, 2 * rr] = zero
                    E[i, 2 * rr + 1] = zero
                    continue
                for k in range(min(lo, S)):
                    D[i, base + k] = zero
                # Unsigned indices: numba then drops its negative-index wrap-around, and LLVM vectorises
                # the copy (4x faster than signed indices).
                ub, uc, ur, ui = uintp(b), uintp(c), uintp(r), uintp(i)
                for k in range(lo, min(hi, S)):
                    D[ui, uintp(base + k)] = x[ub, uc, ur, uintp(k - pw)]
                for k in range(max(hi, lo), S):
                    D[i, base + k] = zero
                for k in range(2):
                    col = S + k
                    E[i, 2 * rr + k] = x[b, c, r, col - pw] if lo <= col < hi else zero


def _copyGradRows(dy, G, os_, oe, q0, q1, th, S, zero):
    """The gradient rows of tile rows [q0, q1) (q = n * th + ty) of maps [os_, oe), end to end: row i of the tile
    (gradient row G.shape[0] * ty + i; zero past the map) gives columns [0, S) to G[i] at ((o - os_) * nq +
    (q - q0)) times S. The copy stage of the gradient transforms (4 rows per tile for F(4, 3), 2 for F(2, 3))."""
    oh, ow = dy.shape[2], dy.shape[3]
    nq = q1 - q0
    rows = G.shape[0]
    for o in range(os_, oe):
        for q in range(q0, q1):
            b, ty = q // th, q % th
            base = ((o - os_) * nq + (q - q0)) * S
            for i in range(rows):
                row = ty * rows + i
                gi = G[i]
                if row >= oh:
                    for k in range(S):
                        gi[base + k] = zero
                    continue
                ub, uo, ur = uintp(b), uintp(o), uintp(row)
                for k in range(ow):
                    gi[uintp(base + k)] = dy[ub, uo, ur, uintp(k)]
                for k in range(ow, S):
                    gi[base + k] = zero


def _rowsAdjointA(g0, g1, g2, g3, s0, s1, s2, s3, s4, s5, n, two, four, eight):
    """F(4, 3)'s A applied down four gradient rows into six (the adjoint of _columnsAT), n columns."""
    for p in range(n):
        s0[p] = g0[p]
        s1[p] = g0[p] + g1[p] + g2[p] + g3[p]
        s2[p] = g0[p] - g1[p] + g2[p] - g3[p]
        s3[p] = g0[p] + two * g1[p] + four * g2[p] + eight * g3[p]
        s4[p] = g0[p] - two * g1[p] + four * g2[p] - eight * g3[p]
        s5[p] = g3[p]


def _columnsAdjointA2(e, m0, m1, m2, m3, n):
    """F(2, 3)'s A along the rows (the adjoint of _rowsA2): tile p's two gradient columns 2 p, 2 p + 1 of e into
    its four transformed ones, n tiles."""
    for p in range(n):
        u = uintp(2 * p)
        e0, e1 = e[u], e[u + uintp(1)]
        m0[p] = e0
        m1[p] = e0 + e1
        m2[p] = e0 - e1
        m3[p] = -e1


def _tapsAdjointG2(X, f, o0, c, n, half):
    """F(2, 3)'s G^T along the kernel rows (4 -> 3): kernel row i of map r (X[b, 3 r + i], b the tile column)
    into taps 9 c + 3 i .. + 2 of row o0 + r of f (dw as (O, C/g * 9)), maps r in [0, n). G^T's rows:
    (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0), (0, 1/2, 1/2, 1). The last pass of the F(2x2) and F(4x2) kernel
    gradients."""
    for r in range(n):
        uo = uintp(o0 + r)
        for i in range(3):
            p = uintp(3 * r + i)
            x1, x2 = X[1, p], X[2, p]
            s, m = half * (x1 + x2), half * (x1 - x2)
            t = uintp(9 * c + 3 * i)
            f[uo, t] = X[0, p] + s
            f[uo, t + uintp(1)] = m
            f[uo, t + uintp(2)] = s + X[3, p]


def _storeTileRows(Y, y, os_, oe, q0, q1, th, S):
    """y[n, o, Y.shape[0] * ty + i, :] = Y[i] at ((o - os_) * nq + q - q0) * S, for maps [os_, oe) and tile rows
    [q0, q1), inside the map (the rows and columns of edge tiles past it dropped): the output transforms' last
    stage, Y[i] holding row i of every tile row end to end."""
    oh, ow = y.shape[2], y.shape[3]
    rows = Y.shape[0]
    nq = q1 - q0
    for o in range(os_, oe):
        for q in range(q0, q1):
            b, ty = q // th, q % th
            base = ((o - os_) * nq + (q - q0)) * S
            for i in range(rows):
                row = ty * rows + i
                if row >= oh:
                    break
                ub, uo, ur, ui = uintp(b), uintp(o), uintp(row), uintp(i)
                for k in range(ow):
                    y[ub, uo, ur, uintp(k)] = Y[ui, uintp(base + k)]


def _biasRun(bias, bt, os_, oe, P):
    """bt[(o - os_) * P + t] = bias[o]: each map's bias over its P tiles (added in the output transforms' row pass)."""
    for o in range(os_, oe):
        bv = bias[o]
        for p in range((o - os_) * P, (o - os_ + 1) * P):
            bt[p] = bv


def _columnsAT(m0, m1, m2, m3, m4, m5, r0, r1, r2, r3, n, two, four, eight):
    """r_i[:n] = row i of F(4, 3)'s A^T applied down the six rows m0..m5 (the output transforms' first pass)."""
    for p in range(n):
        r0[p] = m0[p] + m1[p] + m2[p] + m3[p] + m4[p]
        r1[p] = m1[p] - m2[p] + two * (m3[p] - m4[p])
        r2[p] = m1[p] + m2[p] + four * (m3[p] + m4[p])
        r3[p] = m1[p] - m2[p] + eight * (m3[p] - m4[p]) + m5[p]


def _columnsB2(e, f, v0, v1, v2, v3, rows, tw):
    """v_b[p] = row b of F(2, 3)'s B^T applied along the flat row e, tile p reading columns 2 p .. 2 p + 3
    (stride-2 loads), for the rows * tw tiles; the last tile of each row is redone with its columns 2 and 3
    from f (2 per row). The column pass of conv_winograd2x2's and conv_winograd4x2's input transforms."""
    for p in range(rows * tw):
        u = uintp(2 * p)
        e0, e1, e2, e3 = e[u], e[u + uintp(1)], e[u + uintp(2)], e[u + uintp(3)]
        v0[p] = e0 - e2
        v1[p] = e1 + e2
        v2[p] = e2 - e1
        v3[p] = e1 - e3
    for rr in range(rows):  # the last tile of each row: its columns 2 and 3 are in f
        p = rr * tw + tw - 1
        e0, e1, e2, e3 = e[2 * p], e[2 * p + 1], f[2 * rr], f[2 * rr + 1]
        v0[p] = e0 - e2
        v1[p] = e1 + e2
        v2[p] = e2 - e1
        v3[p] = e1 - e3


def _rowsA2(e0, e1, e2, e3, bt, yi, n):
    """yi[2 p], yi[2 p + 1] = F(2, 3)'s A applied along the four columns e0..e3 of tile p, plus bt[p] (stride-2
    stores): the row pass of conv_winograd2x2's and conv_winograd4x2's output transforms."""
    for p in range(n):
        bv, u = bt[p], uintp(2 * p)
        yi[u] = e0[p] + e1[p] + e2[p] + bv
        yi[u + uintp(1)] = e1[p] - e2[p] - e3[p] + bv


def _inputTransform(x, V, off, gStride, cg, ph, pw, th, tw, q0, q1, cst, c0, c1, a0, a1):
    """V[(a - a0) * 6 + b, at(c) + (q - q0) * tw + tx] = (B^T d B)[a, b] for the tile (row q = n * th + ty,
    column tx) and the transform rows a in [a0, a1) (all six, or a weight-gradient part's share).

    V is (36, ...) flat per tile position; channel c's P = (q1 - q0) * tw tiles start at
    at(c) = off + (c // cg) * gStride + (c % cg) * P (a plain (36, C, P) array: off 0, gStride cg * P;
    conv_winograd3d lays out several depth slices per group).

    Per block of channels, three flat passes: copy each tile row's six input rows (padding fused) into
    D[i], rows of 4 tw columns laid end to end (the two columns past them, read by the last tile, go to
    E); B^T down the rows, contiguous over the whole block; then B along the columns: tile t reads
    columns 4 t .. 4 t + 5 of that flat row, a stride-4 interleaved load LLVM vectorises over the whole
    block (the last tile of each row, whose columns 4 and 5 are in E, is redone afterwards). No
    fast-math: every value is computed in the order written (rows first, then columns), so results are
    the same on every run.
    """
    nq = q1 - q0
    P, S = nq * tw, 4 * tw
    cb = max(1, min(c1 - c0, VECTOR_SPAN // max(P, 1)))
    # D/T rows end to end, and 4 spare columns: the last tile's flat reads run two columns past the end.
    D = np.zeros((6, cb * nq * S + 4), dtype=x.dtype)
    T = np.empty((6, cb * nq * S + 4), dtype=x.dtype)
    E = np.empty((6, cb * nq * 2), dtype=x.dtype)
    F = np.empty((6, cb * nq * 2), dtype=x.dtype)
    Q = np.empty((4, cb * P + 1), dtype=x.dtype)
    # Constants typed like the data, so float32 stays float32 (a literal would promote to float64).
    two, four, five = cst[0], cst[1], cst[2]
    zero = cst[0] - cst[0]
    cs = c0
    while cs < c1:
        ce = min(c1, cs + cb, (cs // cg + 1) * cg)  # a block stays within its group (contiguous in V)
        _copyTileRows(x, D, E, cs, ce, q0, q1, th, 4, ph, pw, S, zero)
        rows = (ce - cs) * nq
        L4 = rows * S + 4
        if a1 - a0 < 6:  # a share of the tile positions (the weight gradient's parts): their rows only
            for a in range(a0, a1):
                _rowB(D[0], D[1], D[2], D[3], D[4], D[5], T[a], a, L4, two, four, five)
                _rowB(E[0], E[1], E[2], E[3], E[4], E[5], F[a], a, 2 * rows, two, four, five)
        else:
            _allRowsB(D, T, L4, two, four, five)
            _allRowsB(E, F, 2 * rows, two, four, five)
        o0 = off + (cs // cg) * gStride + (cs % cg) * P
        L = rows * tw
        for a in range(a0, a1):
            e, f = T[a], F[a]
            # Columns 4 t + j of the flat row into Q[j][t] (one interleaved load, vectorised), so that the
            # column transform reads unit-stride: columns 4 and 5 of tile t are columns 0 and 1 of t + 1.
            q0_, q1_, q2_, q3_ = Q[0], Q[1], Q[2], Q[3]
            for p in range(L + 1):
                u = uintp(4 * p)
                q0_[p] = e[u]
                q1_[p] = e[u + uintp(1)]
                q2_[p] = e[u + uintp(2)]
                q3_[p] = e[u + uintp(3)]
            z = (a - a0) * 6
            v0, v1, v2 = V[z, o0:o0 + L], V[z + 1, o0:o0 + L], V[z + 2, o0:o0 + L]
            v3, v4, v5 = V[z + 3, o0:o0 + L], V[z + 4, o0:o0 + L], V[z + 5, o0:o0 + L]
            for p in range(L):
                e0, e1, e2, e3, e4, e5 = q0_[p], q1_[p], q2_[p], q3_[p], q0_[p + 1], q1_[p + 1]
                v0[p] = four * e0 - five * e2 + e4
                v1[p] = -(four * (e1 + e2)) + e3 + e4
                v2[p] = four * (e1 - e2) - e3 + e4
                v3[p] = two * (e3 - e1) - e2 + e4
                v4[p] = two * (e1 - e3) - e2 + e4
                v5[p] = four * e1 - five * e3 + e5
            for rr in range(rows):  # the last tile of each row: its columns 4 and 5 are in F
                p = rr * tw + tw - 1
                e0, e1, e2, e3 = q0_[p], q1_[p], q2_[p], q3_[p]
                e4, e5 = f[2 * rr], f[2 * rr + 1]
                v0[p] = four * e0 - five * e2 + e4
                v1[p] = -(four * (e1 + e2)) + e3 + e4
                v2[p] = four * (e1 - e2) - e3 + e4
                v3[p] = two * (e3 - e1) - e2 + e4
                v4[p] = two * (e1 - e3) - e2 + e4
                v5[p] = four * e1 - five * e3 + e5
        cs = ce


def _outputTransform(M, off, gStride, og, y, bias, th, tw, q0, q1, cst, o0, o1):
    """y[n, o, 4 ty + i, 4 tx + j] = (A^T m A)[i, j] + bias[o] for the tiles of rows [q0, q1).

    M is (36, ...) flat per tile position, laid out as V in _inputTransform (maps in groups of og).

    Per block of output maps, flat passes over its tiles: A^T down the columns of M's 6x6 tiles, then
    A along the rows plus the bias into Y[i], whose tile t holds columns 4 t .. 4 t + 3 (a stride-4
    interleaved store, vectorised), so that Y[i] is the block's output rows laid end to end; they are
    then copied into the map (the columns and rows of edge tiles past the map are dropped).
    """
    nq = q1 - q0
    P, S = nq * tw, 4 * tw
    ob = max(1, min(o1 - o0, VECTOR_SPAN // max(P, 1)))
    T = np.empty((4, 6, ob * P), dtype=y.dtype)
    Y = np.empty((4, ob * P * 4), dtype=y.dtype)
    bt = np.empty(ob * P, dtype=y.dtype)
    two, four, eight = cst[0], cst[1], cst[3]
    os_ = o0
    while os_ < o1:
        oe = min(o1, os_ + ob, (os_ // og + 1) * og)
        s0, L = off + (os_ // og) * gStride + (os_ % og) * P, (oe - os_) * P
        for bb in range(6):
            _columnsAT(M[bb, s0:s0 + L], M[6 + bb, s0:s0 + L], M[12 + bb, s0:s0 + L], M[18 + bb, s0:s0 + L],
                       M[24 + bb, s0:s0 + L], M[30 + bb, s0:s0 + L], T[0, bb], T[1, bb], T[2, bb], T[3, bb], L,
                       two, four, eight)
        _biasRun(bias, bt, os_, oe, P)
        for i in range(4):
            e0, e1, e2, e3, e4, e5 = T[i, 0], T[i, 1], T[i, 2], T[i, 3], T[i, 4], T[i, 5]
            yi = Y[i]
            for p in range(L):
                bv, u = bt[p], uintp(4 * p)
                yi[u] = e0[p] + e1[p] + e2[p] + e3[p] + e4[p] + bv
                yi[u + uintp(1)] = e1[p] - e2[p] + two * (e3[p] - e4[p]) + bv
                yi[u + uintp(2)] = e1[p] + e2[p] + four * (e3[p] + e4[p]) + bv
                yi[u + uintp(3)] = e1[p] - e2[p] + eight * (e3[p] - e4[p]) + e5[p] + bv
        _storeTileRows(Y, y, os_, oe, q0, q1, th, S)
        os_ = oe


def _gradTransform(dy, Mg, off, gStride, og, th, tw, q0, q1, cst, o0, o1, a0, a1):
    """Mg[(a - a0) * 6 + b, at(o) + (q - q0) * tw + tx] = (A g A^T)[a, b] for the 4x4 gradient tile g (zero past
    the map), rows a in [a0, a1); Mg flat and laid out as V in _inputTransform (at(o) from off, gStride, og).

    The adjoint of the output transform: the weight gradient in the transformed domain is the
    elementwise product of this with the input transform, summed over tiles. Per block of maps: the
    tile rows' four gradient rows are copied end to end into G[i] (zero past the map), A down the rows
    (contiguous), then along the columns, tile t reading columns 4 t .. 4 t + 3 (stride-4 interleaved
    loads, vectorised); Mg is laid out as V in _inputTransform.
    """
    nq = q1 - q0
    P, S = nq * tw, 4 * tw
    ob = max(1, min(o1 - o0, VECTOR_SPAN // max(P, 1)))
    G = np.empty((4, ob * P * 4), dtype=dy.dtype)
    R = np.empty((6, ob * P * 4), dtype=dy.dtype)
    two, four, eight = cst[0], cst[1], cst[3]
    zero = cst[0] - cst[0]
    os_ = o0
    while os_ < o1:
        oe = min(o1, os_ + ob, (os_ // og + 1) * og)
        s0, L = off + (os_ // og) * gStride + (os_ % og) * P, (oe - os_) * P
        _copyGradRows(dy, G, os_, oe, q0, q1, th, S, zero)
        if a1 - a0 < 6:  # a share of the tile positions (the weight gradient's parts): their rows only
            for a in range(a0, a1):
                _rowA(G[0], G[1], G[2], G[3], R[a], a, 4 * L, two, four, eight)
        else:
            _rowsAdjointA(G[0], G[1], G[2], G[3], R[0], R[1], R[2], R[3], R[4], R[5], 4 * L, two, four, eight)
        for a in range(a0, a1):
            e, z = R[a], (a - a0) * 6
            m0, m1, m2 = Mg[z, s0:s0 + L], Mg[z + 1, s0:s0 + L], Mg[z + 2, s0:s0 + L]
            m3, m4, m5 = Mg[z + 3, s0:s0 + L], Mg[z + 4, s0:s0 + L], Mg[z + 5, s0:s0 + L]
            for p in range(L):
                u = uintp(4 * p)
                e0, e1, e2, e3 = e[u], e[u + uintp(1)], e[u + uintp(2)], e[u + uintp(3)]
                m0[p] = e0
                m1[p] = e0 + e1 + e2 + e3
                m2[p] = e0 - e1 + e2 - e3
                m3[p] = e0 + two * e1 + four * e2 + eight * e3
                m4[p] = e0 - two * e1 + four * e2 - eight * e3
                m5[p] = e3
        os_ = oe


if available:
    _copyTileRows = njit(cache=True, nogil=True, inline="always")(_copyTileRows)
    _storeTileRows = njit(cache=True, nogil=True, inline="always")(_storeTileRows)
    _biasRun = njit(cache=True, nogil=True, inline="always")(_biasRun)
    _columnsAT = njit(cache=True, nogil=True, inline="always")(_columnsAT)
    _columnsB2 = njit(cache=True, nogil=True, inline="always")(_columnsB2)
    _rowsA2 = njit(cache=True, nogil=True, inline="always")(_rowsA2)
    _copyGradRows = njit(cache=True, nogil=True, inline="always")(_copyGradRows)
    _rowsAdjointA = njit(cache=True, nogil=True, inline="always")(_rowsAdjointA)
    _columnsAdjointA2 = njit(cache=True, nogil=True, inline="always")(_columnsAdjointA2)
    _tapsAdjointG2 = njit(cache=True, nogil=True, inline="always")(_tapsAdjointG2)
    _rowB = njit(cache=True, nogil=True)(_rowB)
    _allRowsB = njit(cache=True, nogil=True)(_allRowsB)
    _rowA = njit(cache=True, nogil=True)(_rowA)
    _inputTransform = njit(cache=True, nogil=True)(_inputTransform)
    _outputTransform = njit(cache=True, nogil=True)(_outputTransform)
    _gradTransform = njit(cache=True, nogil=True)(_gradTransform)


# The kernel-space transforms (kernelTransform, kernelGradient: thin products, memory-bound) run with BLAS on one
# thread: threaded, OpenBLAS's workers go on spinning after the call and take the cores from the chunk threads
# that follow (N8 256->256 14x14 forward, two threads: 97 ms of CPU per call, 164 ms wall; with these products
# on one thread 37 ms and 66 ms, im2col 35 and 54 in the same run).
@oneBlasThread
def kernelTransform(w, groups):
    """U (36, groups, O // groups, C // groups) = G g G^T for every (o, c), in the workspace (the caller's scratch
    for the rest of its call).

    Built in U's own layout (no transposed copy at the end), from w tap-major; the two temporaries are carved
    after U and rewound, so the caller's next buffers take their memory.
    """
    g = _G.astype(w.dtype)
    o, cg = w.shape[:2]
    u = workspace.get("wino-kt-u", (6, 6, o * cg), w.dtype)
    mark = workspace.mark()
    taps = workspace.get("wino-kt-w", (3, 3, o, cg), w.dtype)
    np.copyto(taps, w.transpose(2, 3, 0, 1))
    t = workspace.get("wino-kt-t", (6, 3 * o * cg), w.dtype)
    np.matmul(g, taps.reshape(3, 3 * o * cg), out=t)                                     # (6, 3, O, Cg)
    np.matmul(g, t.reshape(6, 3, o * cg), out=u)                                        # (6, 6, O * Cg)
    workspace.rewind(mark)
    return u.reshape(36, groups, o // groups, cg)


def gradProducts(v, mgt, out, buf, accumulate):
    """out (+)= v @ mgt for every leading index: the F(2x2) and F(4x2) weight gradients' dU^T = V Mg^T, mgt a
    transposed view. In float32 through sgemm, which reads B by rows (Mg^T copied contiguous into ``buf``) and adds
    into out itself; else BLAS, a later chunk's products summed through ``buf``."""
    if sgemm.applies(out.dtype):
        copy = leadingView(buf, mgt.shape)
        np.copyto(copy, mgt)
        sgemm.batched(v, copy, out, accumulate=accumulate)
    elif not accumulate:
        np.matmul(v, mgt, out=out)
    else:
        t = leadingView(buf, out.shape)
        np.matmul(v, mgt, out=t)
        out += t


def _chunkRows(rows, tw, c, o, itemsize, limit):
    perRow = 36 * (c + o) * tw * itemsize
    return max(1, min(rows, limit // max(perRow, 1)))


def chunkBytes(resultBytes):
    """Bound of the V and M buffers of one call (all threads): a chunk per thread small enough to stay in
    its core's L2 between the transforms and the GEMMs (case 1 of benchmarks/conv.py ran 17 ms forward
    with 1 MiB, 30 ms with 16 MiB), and scratch under the call's result: three quarters of it from 2 MiB up,
    a quarter below (case 9 runs as fast with a quarter, and its scratch then stays under torch's).

    Case 7 forward (3.2 MB result) ran 4.5 ms with a quarter, 3.4 ms with half (an earlier session); with three
    quarters (2 MiB: two chunks of 14 tile rows per thread instead of three of 9-10) 1.74-2.06 ms against
    1.93-2.69 with half, backward-data 1.78-2.12 against 2.49-2.58 (the benchmark's worker, two alternations),
    its peak 5.2 MiB against torch's 6.1."""
    return min(CHUNK_BYTES, max(1, resultBytes * 3 // 4 if resultBytes >= CHUNK_BYTES else resultBytes // 4))


def gradChunkBytes(operandBytes):
    """Bound of the weight gradient's V and Mg buffers (all parts): for an x or dy of 2 MiB and more, up to
    GRAD_CHUNK_BYTES and 1.25x the larger of the two (torch's weight gradient peaked at about twice it on case
    7); below, chunkBytes' (case 9, 0.8 MB: 1.0 MB of buffers took 1.17 ms against 1.52, but its peak then
    tied torch's, 1.6 MiB).

    Its chunks' tiles are the inner dimension of its GEMMs, and fewer, longer chunks also mean fewer partial
    sums added. Against chunkBytes' bound, 4 MiB took (two interleaved runs, two threads, ms): case 7 2.95
    and 2.20 against 3.94 and 2.81, N8 32->32 112x112 7.9 and 7.6 against 8.9 and 8.5, case 1 7.7 and 7.4
    against 7.9 and 7.6, N8 128->128 28x28 6.4 and 6.5 against 7.1 and 6.5 (and N8 256->256 14x14, whose
    1.6 MB operands keep chunkBytes' bound, 10.7 and 9.5 against 12.0 and 10.9). In the benchmark's worker,
    case 7 2.17-2.55 against 3.06-3.47; its peak 4.0 MiB against torch's 6.0."""
    if operandBytes < CHUNK_BYTES:
        return chunkBytes(operandBytes)
    return min(GRAD_CHUNK_BYTES, max(chunkBytes(operandBytes), operandBytes * 5 // 4))


def _chunkRanges(total, step, workers):
    """Runs of chunks [(q0, q1)], one run per worker: the tile rows are split evenly between the runs
    first, then each run into equal chunks of at most ``step`` rows (dealing whole ``step``-row chunks
    left case 7's five chunks as two against three: one thread idle a sixth of the call)."""
    runs = []
    for k in range(workers):
        a, b = total * k // workers, total * (k + 1) // workers
        m = -(-(b - a) // step)
        runs.append([(a + (b - a) * i // m, a + (b - a) * (i + 1) // m) for i in range(m)])
    return runs


def workspaceBytes(xShape, o, pad, itemsize=4, resultBytes=None, tileBytes=None, grad=False, groups=None):
    """Bytes of the V and M buffers of forward (and backward-data, with its own shapes) on this input;
    ``grad``: of the weight gradient's (at least _MIN_GRAD_TILES tiles per chunk). The buffers hold one
    group's channels at a time (``groups``; without it, the estimate counts all channels in one group,
    which comes to about the same bound)."""
    n, c, h, w = xShape
    g = groups or 1
    c, o = c // g, o // g
    th, tw = _tiles(h, w, pad)
    if tileBytes is None:
        bound = resultBytes or n * o * g * (h + 2 * pad[0] - 2) * (w + 2 * pad[1] - 2) * itemsize
        tileBytes = (gradChunkBytes if grad else chunkBytes)(bound)

    def scratchRows(rows, threads):  # two (36, span) transform scratch arrays per thread (VECTOR_SPAN)
        return threads * 72 * max(VECTOR_SPAN, tw * rows) * itemsize

    if grad:
        # Each part's buffers (its share of the tile positions), copy of Mg^T and GEMM temporary, a part
        # per thread (conv.workspaceBytes counts dU itself).
        pos = 36 if g % _GRAD_PARTS == 0 else 36 // _GRAD_PARTS
        rows = _chunkRows(n * th, tw, c * pos // 36, o * pos // 36, itemsize, tileBytes // _GRAD_PARTS)
        rows = min(n * th, max(rows, -(-_MIN_GRAD_TILES // tw)))
        threads = chunkWorkers(_GRAD_PARTS)
        copy = pos * o * tw * rows if rows * tw < o else 0  # Mg^T (see backwardParams)
        return (threads * (pos * (c + o) * tw * rows + copy + pos // 3 * o * c) * itemsize
                + scratchRows(rows, threads))
    rows = _chunkRows(n * th, tw, c, o, itemsize, tileBytes)
    # Each thread's chunk (rounded to whole rows) and two (36, span) transform scratch arrays (VECTOR_SPAN).
    threads = chunkWorkers(-(-n * th // rows))
    rows = max(1, min(rows, _chunkRows(n * th, tw, c, o, itemsize, tileBytes // threads)))
    return threads * 36 * (c + o) * tw * rows * itemsize + scratchRows(rows, threads)


def _tiles(h, w, pad):
    oh, ow = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
    return -(-oh // M_OUT), -(-ow // M_OUT)


def forward(x, w, bias, pad, groups, tileBytes=None, u=None, out=None, strided=False):
    """Forward 3x3 stride-1 convolution of x (N, C, H, W) with w (O, C // groups, 3, 3); pad may be negative.

    ``u``: w's kernel transform when the caller already has it (w is then not read: None will do); ``out``: an
    (N, O, OH, OW) view (any strides) to write into instead of a new array; ``strided``: x is read where it
    lies, whatever its strides (a polyphase view of a dilated convolution's input), not first copied
    contiguous.
    """
    n, c, h, wd = x.shape
    o = w.shape[0] if u is None else u.shape[1] * u.shape[2]
    oh, ow = h + 2 * pad[0] - 2, wd + 2 * pad[1] - 2
    y = np.empty((n, o, oh, ow), dtype=x.dtype) if out is None else out
    assert y.shape == (n, o, oh, ow)
    if n == 0 or oh <= 0 or ow <= 0:
        return y
    th, tw = _tiles(h, wd, pad)
    cg, og = c // groups, o // groups
    if u is None:
        u = kernelTransform(w, groups)
    biasv = biasVector(bias, o, x.dtype)
    xc = x if strided else np.ascontiguousarray(x)
    cst = transformConstants(x.dtype)
    total = n * th
    limit = tileBytes or chunkBytes(y.nbytes)
    # A chunk is transformed and multiplied one group at a time: its buffers hold one group's channels,
    # so a chunk has groups x more tiles for the same bytes, and the GEMMs (O/g, C/g) @ (C/g, tiles) get
    # a longer tile dimension (case 7, 4 groups of 32: 144 GEMMs of 21 tiles per chunk ran at ~70
    # GFLOP/s single-threaded, 36 of 84 tiles at ~95).
    # The chunks are fixed by the shape (_PARTS runs), not by the thread count: OpenBLAS's products differ in
    # the last bits with the number of columns (tiles) they get (its small-matrix kernels), so chunks cut per
    # thread made the result depend on the thread count.
    parts = max(1, min(_PARTS, -(-total // _chunkRows(total, tw, cg, og, x.itemsize, limit))))
    step = _chunkRows(total, tw, cg, og, x.itemsize, limit // parts)
    runs = _chunkRanges(total, step, parts)
    workers = chunkWorkers(parts)
    # Buffers are taken here, in the calling thread (the workspace is not thread-safe).
    bufs = [(workspace.get(f"wino-v{k}", (36 * cg * step * tw,), x.dtype),
             workspace.get(f"wino-m{k}", (36 * og * step * tw,), x.dtype)) for k in range(workers)]

    def work(k, r):
        vb, mb = bufs[k]
        for q0, q1 in runs[r]:
            p = (q1 - q0) * tw
            v, m = vb[:36 * cg * p].reshape(36, cg, p), mb[:36 * og * p].reshape(36, og, p)
            for gi in range(groups):
                c0, o0 = gi * cg, gi * og
                _inputTransform(xc, v.reshape(36, cg * p), 0, 0, cg, pad[0], pad[1], th, tw, q0, q1, cst,
                                c0, c0 + cg, 0, 6)
                np.matmul(u[:, gi], v, out=m)
                _outputTransform(m.reshape(36, og * p), 0, 0, og, y, biasv, th, tw, q0, q1, cst, o0, o0 + og)

    dealParts(work, parts, workers)
    return y


def backwardData(dy, w, xShape, pad, groups, tileBytes=None):
    from PuzzleLib.Engines.cpu.conv_im2col import flippedKernel

    # The flipped kernel lives only for its transform (case 9: 0.13 MB less at the call's peak).
    u = kernelTransform(flippedKernel(w, groups), groups)
    dx = forward(dy, None, None, (2 - pad[0], 2 - pad[1]), groups, tileBytes, u=u)
    assert dx.shape == tuple(xShape)
    return dx


def _gradUnits(groups):
    """The weight gradient's work split into _GRAD_PARTS fixed parts: [[(group, a0, a1), ...] per part],
    each owning disjoint entries of dU: whole groups when they split evenly between the parts, else rows
    [a0, a1) of every group's 6x6 tile positions (each part then transforms only its positions'
    rows: the copies of the input and gradient rows are done twice, the arithmetic and GEMMs once)."""
    if groups % _GRAD_PARTS == 0:
        per = groups // _GRAD_PARTS
        return [[(gi, 0, 6) for gi in range(k * per, (k + 1) * per)] for k in range(_GRAD_PARTS)]
    return [[(gi, 6 * k // _GRAD_PARTS, 6 * (k + 1) // _GRAD_PARTS) for gi in range(groups)]
            for k in range(_GRAD_PARTS)]


def backwardParams(x, dy, wShape, pad, groups, tileBytes=None, byChunks=False):
    """Weight gradient (O, C // groups, 3, 3): dW = G^T [sum over tiles (A g A^T) * (B^T d B)] G.

    36 GEMMs over the tiles, (O, tiles) @ (tiles, C), accumulated chunk by chunk in a fixed order.
    The work is split in _GRAD_PARTS fixed parts that own disjoint entries of dU (_gradUnits): each
    walks every chunk and adds its GEMMs into its own entries, so no part keeps a partial sum of the
    whole dU (case 9: 0.6 MB more, and an addition). Every entry is summed over the chunks in order, in
    the same GEMM shapes on any thread count: the result does not depend on it.

    ``byChunks`` (conv_polyphase, whose stacked phases make many chunks): the parts split the chunks instead
    (each part a fixed contiguous run of them, all tile positions), each summing into its own dU, added in
    part order afterwards. A part splitting the positions copies every input and gradient row once per part
    and transforms them row by row; whole chunks transform each row once, in the fused passes (case 8's
    stacked calls: transforms 2.0 -> 1.2 ms of CPU per call, for one more dU, 0.6 MB).
    """
    n, c = x.shape[:2]
    o = dy.shape[1]
    og, cg = o // groups, c // groups
    oh, ow = dy.shape[2], dy.shape[3]
    th, tw = -(-oh // M_OUT), -(-ow // M_OUT)
    xc, dyc = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    cst = transformConstants(x.dtype)
    total = n * th
    limit = tileBytes or gradChunkBytes(max(x.nbytes, dy.nbytes))

    def plan(units):
        """Tile positions per unit, and the chunks of tile rows their buffers allow."""
        pos = max(6 * (a1 - a0) for part in units for _, a0, a1 in part)
        step = _chunkRows(total, tw, cg * pos // 36, og * pos // 36, x.itemsize, limit // _GRAD_PARTS)
        if tileBytes is None:
            # The tiles are these GEMMs' inner dimension: fewer than a couple of dozen starve them (N1 56x56:
            # one row of 14 tiles ran 2.6 ms, two rows 2.0 ms; benchmarks/conv.py case 9).
            step = min(total, max(step, -(-_MIN_GRAD_TILES // tw)))
        return pos, step, _chunkRanges(total, step, 1)[0]

    requested = byChunks
    units = [[(gi, 0, 6) for gi in range(groups)]] * _GRAD_PARTS if byChunks else _gradUnits(groups)
    pos, step, chunks = plan(units)
    byChunks = byChunks and len(chunks) >= _GRAD_PARTS
    if requested and not byChunks:  # too few chunks to split: back to the positions
        units = _gradUnits(groups)
        pos, step, chunks = plan(units)
    # byChunks: the tile rows split evenly between the parts, each part's into chunks of at most step rows.
    runs = _chunkRanges(total, step, _GRAD_PARTS) if byChunks else [chunks] * _GRAD_PARTS
    workers = chunkWorkers(_GRAD_PARTS if chunks else 1)
    block = pos // 3  # tile positions per GEMM batch (the temporary is a third of the unit's dU)
    # The GEMMs per tile position: Mg (O/g, tiles) @ V^T (tiles, C/g) hands OpenBLAS a transposed right
    # operand, which it ran at ~70 GFLOP/s on case 9's (64, 28) @ (28, 64); V @ Mg^T with Mg^T copied
    # contiguous ran at ~100, more than paying for the copy. With more tiles than maps (case 7: 84 tiles,
    # 32 maps) the copy costs more than it saves. Chosen per call, so the same on any thread count.
    copied = step * tw < og
    # dU (36, groups, O/g, C/g), or transposed (36, groups, C/g, O/g) when copied, from the workspace ahead of
    # the transform buffers (they are rewound before the kernel-space transform, dU stays).
    # Not zeroed: the first chunk's GEMMs write every entry (zeroed only when there are no chunks).
    duShape = (36, groups, cg, og) if copied else (36, groups, og, cg)
    holder = [workspace.get("wino-dU", duShape, x.dtype, zero=not chunks)]
    # byChunks: each part's own dU (part 0 sums into holder's).
    sums = [holder[0]] + [workspace.get(f"wino-dU{r}", duShape, x.dtype) for r in range(1, _GRAD_PARTS)] \
        if byChunks else None
    mark = workspace.mark()
    bufs = [(workspace.get(f"wino-v{k}", (pos * cg * step * tw,), x.dtype),
             workspace.get(f"wino-m{k}", (pos * og * step * tw,), x.dtype),
             workspace.get(f"wino-mt{k}", (pos * og * step * tw if copied else 1,), x.dtype),
             workspace.get(f"wino-du{k}", (block, cg, og) if copied else (block, og, cg), x.dtype))
            for k in range(workers)]

    def work(k, r):
        vb, mb, mtb, part = bufs[k]
        du = sums[r] if byChunks else holder[0]
        for ci, (q0, q1) in enumerate(runs[r]):
            p = (q1 - q0) * tw
            for gi, a0, a1 in units[r]:
                c0, o0, np_ = gi * cg, gi * og, 6 * (a1 - a0)
                v, mg = vb[:np_ * cg * p].reshape(np_, cg, p), mb[:np_ * og * p].reshape(np_, og, p)
                _inputTransform(xc, v.reshape(np_, cg * p), 0, 0, cg, pad[0], pad[1], th, tw, q0, q1, cst,
                                c0, c0 + cg, a0, a1)
                _gradTransform(dyc, mg.reshape(np_, og * p), 0, 0, og, th, tw, q0, q1, cst, o0, o0 + og, a0, a1)
                if copied:
                    lhs, rhs = v, mtb[:np_ * og * p].reshape(np_, p, og)
                    np.copyto(rhs, mg.transpose(0, 2, 1))
                else:
                    lhs, rhs = mg, v.transpose(0, 2, 1)
                for k0 in range(0, np_, block):
                    entries = du[6 * a0 + k0:6 * a0 + k0 + block, gi]
                    if ci == 0:
                        np.matmul(lhs[k0:k0 + block], rhs[k0:k0 + block], out=entries)
                    else:
                        np.matmul(lhs[k0:k0 + block], rhs[k0:k0 + block], out=part)
                        entries += part

    dealParts(work, _GRAD_PARTS, workers)
    bufs.clear()  # the transform buffers are dead (the list is shared with work: its views go too) and
    workspace.rewind(mark)  # the kernel-space transform reuses their memory
    if byChunks:
        for r in range(1, _GRAD_PARTS):  # in part order: deterministic
            holder[0] += sums[r]
        del sums
    return kernelGradient(holder, wShape, transposed=copied)


@oneBlasThread  # see kernelTransform
def kernelGradient(holder, wShape, transposed=False):
    """dW (wShape: O, C/g, 3, 3) from the transformed-domain gradient dU (36, groups, O/g, C/g), or
    (36, groups, C/g, O/g) with ``transposed``.

    ``holder``: [dU], emptied here, so that dU (when it is not scratch) is freed as soon as the first product
    exists.
    """
    du = holder.pop()
    groups = du.shape[1]
    o, cg = wShape[0], wShape[1]
    gt = np.ascontiguousarray(_G.T.astype(du.dtype))  # (3, 6)
    # dW[o, c, i, j] = sum_ab G[a, i] dU[a, b, o, c] G[b, j], as two products with no transposed copies; dU is
    # dropped as soon as the first exists. The products are scratch (the workspace: the callers rewind it
    # first, so they take the memory of their transform buffers).
    t = workspace.get("wino-kg-t", (3, 6 * o * cg), du.dtype)
    np.matmul(gt, du.reshape(6, 6 * o * cg), out=t)             # [i, b, oc]
    del du
    r = workspace.get("wino-kg-r", (3, 3, o * cg), t.dtype)
    np.matmul(gt, t.reshape(3, 6, o * cg), out=r)               # [i, j, oc]
    if transposed:
        r = r.reshape(3, 3, groups, cg, o // groups).transpose(2, 4, 3, 0, 1)
    else:
        r = r.reshape(3, 3, o, cg).transpose(2, 3, 0, 1)
    return np.array(r, order="C").reshape(wShape)  # a copy even where the view is contiguous (O = C/g = 1)
