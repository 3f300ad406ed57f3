"""Winograd F(2x2, 3x3) for 2-D 3x3 stride-1 convolutions without dilation, in all three directions.

Each 2x2 block of outputs is computed from a 4x4 input tile: V = B^T d B, U = G g G^T, then for each of
the 16 tile positions one GEMM M[k] = U[k] (O, C) @ V[k] (C, tiles), and Y = A^T M A: 16 multiplies per
4 outputs and input channel instead of 36 (2.25x fewer). conv_winograd's F(4x4, 3x3) saves 4x, but on
small maps it gains little of that: a 7x7 map takes 2x2 of its tiles (64 outputs for 49, as 4x4 of
these), its 36 GEMMs get 4 tiles per item (N8 512->512 7x7: 512x512x32, too thin to run near peak)
and its transformed kernel is 36/9 of the kernel (here 16/9).

Built for many channels on small maps, where the transformed kernel U (16 O C values) is larger than
the transformed input: the input of all tiles is transformed once (V), and the output maps are taken
in fixed blocks, each transforming its own slice of the kernel (U is never whole), multiplying and
transforming back. The weight gradient goes the same way: per block of output maps,
dU^T = sum over tiles V (C, tiles) @ (A g A^T)^T (tiles, maps), then dW = G^T dU G for the block's rows.
When V of all tiles would be large, the tiles are taken in chunks instead. Blocks and chunks are fixed
by the shape, each run whole by one thread with single-threaded BLAS (runChunks), the threads taking the
next one as they finish: results do not depend on the thread count or on which thread ran what.

In one group, all three directions go to F(4x2, 3x3) (conv_winograd4x2) on the maps where it makes fewer
products (7x7: 3 per output instead of 4).

Backward-data of a stride-1 convolution is the forward convolution of the gradient with the flipped,
transposed kernel and padding 2 - pad (negative padding crops). With the points 0, 1, -1, the flipped
kernel's transform is the kernel's with the tile positions permuted (G J = P G, _kernelTransform), so
it is transformed from w block by block and multiplied transposed: no flipped copy of the kernel.

Accuracy: the transforms' coefficients are 0, +-1 and 1/2 (exact), so the error is close to a direct
convolution's. Measured against a float64 reference (standard normal data, 16 to 512 input channels,
7x7 to 14x14 maps), max |error| / max |result| was at most 8e-7 in float32 and 5e-15 in float64 in every
direction. The tests assert the stated bound, 1e-5 (float32) and 1e-13 (float64).
"""


import numpy as np

from PuzzleLib.Engines.cpu import conv_winograd, conv_winograd4x2, sgemm
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
applies = conv_winograd.applies

M_OUT, TILE, POSITIONS = 2, 4, 16
# Elements per vectorised pass of the transforms (conv_winograd.VECTOR_SPAN).
VECTOR_SPAN = conv_winograd.VECTOR_SPAN
# The input of all tiles is transformed at once (V whole) while it takes at most this; above it, chunks.
WHOLE_BYTES = 4 << 20
# Bound of one block's transformed kernel slice (U block, 16 x maps x channels) in forward and backward-data,
# and of its gradient (dU^T) in the weight gradient, whose result (dW) is large too: smaller blocks keep the
# call's peak memory under torch's there (N8 512->512 7x7: blocks of 32 maps; the GEMMs of blocks of 64 ran
# ~10% faster, 70 vs 64 GFLOP/s, single-threaded).
BLOCK_BYTES = 2 << 20
GRAD_BLOCK_BYTES = 1 << 20
# Bound of one chunk's V and M buffers (chunked mode, per thread).
CHUNK_BYTES = 1 << 20
# Fewest blocks the output maps are cut into (fixed, so the blocks do not depend on the thread count),
# so that two threads have work when there are few maps and one group.
_MIN_BLOCKS = 2


def _kernelTransform(w, U, u0, o0, o1, c0, c1, cst, order):
    """U[4 order[a] + b, o - u0, c - c0] = (G g G^T)[a, b] for g = w[o, c], o in [o0, o1), c in [c0, c1).

    ``order`` (0, 1, 2, 3) gives the transform; (3, 1, 2, 0) gives the transform of the flipped kernel
    (with the points 0, 1, -1, G J = P G for the reversal J, P swapping rows 0 and 3). Per kernel row
    w[o, c0:c1], two flat passes with stride-3 interleaved loads: G along each 3-tap row into T[b], then
    G down the columns into U's 16 planes. U must be C-contiguous, as every array handed to these
    kernels: numba compiles a strided view ('A' layout) into loops LLVM does not vectorise (planes 32
    elements apart ran this 3x slower, case 4's whole calls 5-15%).
    """
    half = cst[0]
    n = c1 - c0
    T = np.empty((4, 3 * n), dtype=w.dtype)
    f = w.reshape(w.shape[0], -1)
    p0, p1, p2, p3 = order[0], order[1], order[2], order[3]
    for o in range(o0, o1):
        r, uo, s0 = uintp(o - u0), uintp(o), uintp(9 * c0)
        for p in range(3 * n):
            u = s0 + uintp(3 * p)
            g0, g1, g2 = f[uo, u], f[uo, u + uintp(1)], f[uo, u + uintp(2)]
            s = g0 + g2
            T[p0, p] = g0
            T[p1, p] = half * (s + g1)
            T[p2, p] = half * (s - g1)
            T[p3, p] = g2
        for b in range(4):
            k0, k1, k2, k3 = uintp(4 * p0 + b), uintp(4 * p1 + b), uintp(4 * p2 + b), uintp(4 * p3 + b)
            ub = uintp(b)
            for j in range(n):
                v = uintp(3 * j)
                e0, e1, e2 = T[ub, v], T[ub, v + uintp(1)], T[ub, v + uintp(2)]
                a = e0 + e2
                uj = uintp(j)
                U[k0, r, uj] = e0
                U[k1, r, uj] = half * (a + e1)
                U[k2, r, uj] = half * (a - e1)
                U[k3, r, uj] = e2


def _kernelGradient(dUT, dw, o0, o1, cst):
    """dw[o, c] = G^T dU[:, o, c] G (4x4 -> 3x3) for o in [o0, o1), from dUT (16, C/g, o1 - o0) = dU transposed.

    Per kernel column c (its row of every plane of dUT: all the block's maps), two flat passes: G^T down
    the tiles' columns into X[b] (map r's kernel row i at 3 r + i, stride-3 stores), then G^T along the
    rows, each map's nine taps stored straight into dw. G^T's rows: (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0),
    (0, 1/2, 1/2, 1).
    """
    half = cst[0]
    n = o1 - o0
    X = np.empty((4, 3 * n), dtype=dw.dtype)
    f = dw.reshape(dw.shape[0], -1)
    for c in range(dw.shape[1]):
        uc = uintp(c)
        for b in range(4):
            k0, k1, k2, k3, ub = uintp(b), uintp(4 + b), uintp(8 + b), uintp(12 + b), uintp(b)
            for r in range(n):
                ur, v = uintp(r), uintp(3 * r)
                d1, d2 = dUT[k1, uc, ur], dUT[k2, uc, ur]
                s, m = half * (d1 + d2), half * (d1 - d2)
                X[ub, v] = dUT[k0, uc, ur] + s
                X[ub, v + uintp(1)] = m
                X[ub, v + uintp(2)] = s + dUT[k3, uc, ur]
        conv_winograd._tapsAdjointG2(X, f, o0, c, n, half)


def _inputTransform(x, V, cb0, ph, pw, th, tw, q0, q1, c0, c1):
    """V[a * 4 + b, (c - cb0) * P + (q - q0) * tw + tx] = (B^T d B)[a, b] for the tile (row q = n * th + ty,
    column tx) of channel c in [c0, c1); P = (q1 - q0) * tw.

    As conv_winograd's: per block of channels, each tile row's four input rows (padding fused) are
    copied end to end into D[i] (2 tw columns per row; the two past them, read by the last tile, go to
    E), B^T is applied down the rows in one contiguous pass, then B along the columns, tile t reading
    columns 2 t .. 2 t + 3 (a stride-2 interleaved load, vectorised); the last tile of each row is redone
    with its columns 2 and 3 from E. Additions only, in the order written: the same bits on every run.
    """
    nq = q1 - q0
    P, S = nq * tw, 2 * tw
    cb = max(1, min(c1 - c0, VECTOR_SPAN // max(P, 1)))
    D = np.zeros((4, cb * nq * S + 4), dtype=x.dtype)
    T = np.empty((4, cb * nq * S + 4), dtype=x.dtype)
    E = np.empty((4, cb * nq * 2), dtype=x.dtype)
    F = np.empty((4, cb * nq * 2), dtype=x.dtype)
    zero = np.zeros(1, dtype=x.dtype)[0]
    cs = c0
    while cs < c1:
        ce = min(c1, cs + cb)
        conv_winograd._copyTileRows(x, D, E, cs, ce, q0, q1, th, 2, ph, pw, S, zero)
        rows = (ce - cs) * nq
        for src, dst, n in ((D, T, rows * S + 4), (E, F, 2 * rows)):
            d0, d1, d2, d3 = src[0], src[1], src[2], src[3]
            t0, t1, t2, t3 = dst[0], dst[1], dst[2], dst[3]
            for p in range(n):
                t0[p] = d0[p] - d2[p]
                t1[p] = d1[p] + d2[p]
                t2[p] = d2[p] - d1[p]
                t3[p] = d1[p] - d3[p]
        o0 = (cs - cb0) * P
        L = rows * tw
        for a in range(4):
            conv_winograd._columnsB2(T[a], F[a], V[4 * a, o0:o0 + L], V[4 * a + 1, o0:o0 + L],
                                     V[4 * a + 2, o0:o0 + L], V[4 * a + 3, o0:o0 + L], rows, tw)
        cs = ce


def _outputTransform(M, mb0, y, bias, th, tw, q0, q1, o0, o1):
    """y[n, o, 2 ty + i, 2 tx + j] = (A^T m A)[i, j] + bias[o] for maps o in [o0, o1) and tile rows [q0, q1),
    m read from M[:, (o - mb0) * P + (q - q0) * tw + tx] (laid out as V in _inputTransform).

    Per block of maps: A^T down the columns of the 4x4 tiles (contiguous), then A along the rows plus
    the bias into Y[i], tile t holding columns 2 t, 2 t + 1 (a stride-2 store), so that Y[i] holds the
    block's output rows end to end; they are copied into the map (edge tiles' extra row/column dropped).
    """
    nq = q1 - q0
    P, S = nq * tw, 2 * tw
    ob = max(1, min(o1 - o0, VECTOR_SPAN // max(P, 1)))
    R = np.empty((2, 4, ob * P), dtype=y.dtype)
    Y = np.empty((2, ob * P * 2), dtype=y.dtype)
    bt = np.empty(ob * P, dtype=y.dtype)
    os_ = o0
    while os_ < o1:
        oe = min(o1, os_ + ob)
        s0, L = (os_ - mb0) * P, (oe - os_) * P
        for b in range(4):
            m0, m1, m2, m3 = M[b, s0:s0 + L], M[4 + b, s0:s0 + L], M[8 + b, s0:s0 + L], M[12 + b, s0:s0 + L]
            r0, r1 = R[0, b], R[1, b]
            for p in range(L):
                r0[p] = m0[p] + m1[p] + m2[p]
                r1[p] = m1[p] - m2[p] - m3[p]
        conv_winograd._biasRun(bias, bt, os_, oe, P)
        for i in range(2):
            conv_winograd._rowsA2(R[i, 0], R[i, 1], R[i, 2], R[i, 3], bt, Y[i], L)
        conv_winograd._storeTileRows(Y, y, os_, oe, q0, q1, th, S)
        os_ = oe


def _gradTransform(dy, Mg, mb0, th, tw, q0, q1, o0, o1):
    """Mg[a * 4 + b, (o - mb0) * P + (q - q0) * tw + tx] = (A g A^T)[a, b] for the 2x2 gradient tile g of
    map o in [o0, o1) (zero past the map): the adjoint of the output transform. Per block of maps: the
    two gradient rows of each tile row copied end to end into G[i], A down the rows (contiguous), then
    along the columns, tile t reading columns 2 t, 2 t + 1 (stride-2 loads)."""
    nq = q1 - q0
    P, S = nq * tw, 2 * tw
    ob = max(1, min(o1 - o0, VECTOR_SPAN // max(P, 1)))
    G = np.empty((2, ob * P * 2), dtype=dy.dtype)
    R = np.empty((4, ob * P * 2), dtype=dy.dtype)
    os_ = o0
    while os_ < o1:
        oe = min(o1, os_ + ob)
        s0, L = (os_ - mb0) * P, (oe - os_) * P
        conv_winograd._copyGradRows(dy, G, os_, oe, q0, q1, th, S, dy.dtype.type(0))
        g0, g1 = G[0], G[1]
        r0, r1, r2, r3 = R[0], R[1], R[2], R[3]
        for p in range(2 * L):
            r0[p] = g0[p]
            r1[p] = g0[p] + g1[p]
            r2[p] = g0[p] - g1[p]
            r3[p] = -g1[p]
        for a in range(4):
            conv_winograd._columnsAdjointA2(R[a], Mg[4 * a, s0:s0 + L], Mg[4 * a + 1, s0:s0 + L],
                                            Mg[4 * a + 2, s0:s0 + L], Mg[4 * a + 3, s0:s0 + L], L)
        os_ = oe


if available:
    _kernelTransform = njit(cache=True, nogil=True)(_kernelTransform)
    _kernelGradient = njit(cache=True, nogil=True)(_kernelGradient)
    _inputTransform = njit(cache=True, nogil=True)(_inputTransform)
    _outputTransform = njit(cache=True, nogil=True)(_outputTransform)
    _gradTransform = njit(cache=True, nogil=True)(_gradTransform)


# Output maps narrower than this (on either axis) run F(2x2, 3x3) rather than F(4x4, 3x3) (preferred).
SMALL_MAP = 12


def preferred(xShape, wShape, pad):
    """Whether a 2-D 3x3 stride-1 undilated convolution should run F(2x2, 3x3) rather than conv_winograd's
    F(4x4, 3x3): on output maps under SMALL_MAP on either axis."""
    if len(wShape) != 4 or len(xShape) != 4:
        return False
    oh, ow = xShape[2] + 2 * pad[0] - 2, xShape[3] + 2 * pad[1] - 2
    return min(oh, ow) < SMALL_MAP


# -- plans: blocks of output maps, chunks of tile rows (fixed by the shape, not by the thread count) -----
def _tiles(h, w, pad):
    oh, ow = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
    return -(-oh // M_OUT), -(-ow // M_OUT)


def _blocks(groups, maps, channels, itemsize, limit):
    """[(group, m0, m1)]: each group's output maps (``maps`` per group) in equal blocks whose kernel slice
    (16 x block x ``channels``) stays under ``limit`` bytes; at least _MIN_BLOCKS blocks in all."""
    count = max(-(-POSITIONS * maps * channels * itemsize // limit), -(-_MIN_BLOCKS // groups))
    count = max(1, min(maps, count))
    return [(g, m0, m1) for g in range(groups) for m0, m1 in ranges(maps, count)]


def _chunks(total, tw, perTileBytes, whole):
    """Chunks of tile rows [(q0, q1)]: one when all tiles' buffers take at most WHOLE_BYTES (``whole``: the
    bytes per tile of what is kept for all tiles), else equal chunks of at most CHUNK_BYTES."""
    if total * tw * whole <= WHOLE_BYTES:
        return [(0, total)]
    step = max(1, min(total, CHUNK_BYTES // max(perTileBytes * tw, 1)))
    m = -(-total // step)
    return [(total * i // m, total * (i + 1) // m) for i in range(m)]


def workspaceBytes(direction, xShape, wShape, pad, groups, itemsize=4):
    """Bytes of the scratch buffers of one call (V, and each thread's kernel slice and products)."""
    n, c, h, w = xShape
    o, cg = wShape[0], wShape[1]
    og = o // groups
    if direction != "backwardData" and conv_winograd4x2.preferred(xShape, pad, groups, itemsize):
        return conv_winograd4x2.workspaceBytes(direction, xShape, wShape, pad, itemsize)
    dyShape = (n, o, h + 2 * pad[0] - 2, w + 2 * pad[1] - 2)
    if direction == "backwardData" and conv_winograd4x2.preferred(dyShape, (2 - pad[0], 2 - pad[1]), groups, itemsize):
        return conv_winograd4x2.workspaceBytes(direction, xShape, wShape, pad, itemsize)
    if direction == "backwardData":  # the forward of dy (n, o, oh, ow) into c maps
        h, w = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
        pad = (2 - pad[0], 2 - pad[1])
        c, og, cg = o, cg, og
    th, tw = _tiles(h, w, pad)
    blocks = _blocks(groups, og, cg, itemsize, GRAD_BLOCK_BYTES if direction == "backwardParams" else BLOCK_BYTES)
    ob = max(m1 - m0 for _, m0, m1 in blocks)
    threads = chunkWorkers(len(blocks))
    if direction == "backwardParams":
        chunks = _chunks(n * th, tw, POSITIONS * (cg + ob) * itemsize, POSITIONS * c * itemsize)
        p = max(q1 - q0 for q0, q1 in chunks) * tw
        shared = POSITIONS * c * p if len(chunks) == 1 else 0
        fast = sgemm.applies(np.dtype(f"f{itemsize}"))  # Mg^T copied, else a sum of each chunk's products
        own = POSITIONS * (ob * p + ob * cg + (ob * p if fast else 0 if len(chunks) == 1 else ob * cg)
                           + (0 if len(chunks) == 1 else cg * p))
        return (shared + threads * own) * itemsize
    chunks = _chunks(n * th, tw, POSITIONS * (c + og * groups) * itemsize, POSITIONS * c * itemsize)
    p = max(q1 - q0 for q0, q1 in chunks) * tw
    if len(chunks) == 1:
        return (POSITIONS * c * p + threads * POSITIONS * ob * (cg + p)) * itemsize
    return (POSITIONS * og * groups * cg + threads * POSITIONS * (c + og * groups) * p) * itemsize


_ORDER = np.arange(4)
_FLIPPED = np.array([3, 1, 2, 0])


def _transformAll(x, v, pad, th, tw, total):
    """V (16, C * tiles) of every tile, the channels split between the threads (elementwise: any split
    gives the same bits)."""
    workers = chunkWorkers(x.shape[1])
    shareItems(lambda k, r: _inputTransform(x, v, 0, pad[0], pad[1], th, tw, 0, total, r[0], r[1]),
               pieces(x.shape[1], workers), workers)


# -- the three directions ---------------------------------------------------------------------------------
def forward(x, w, bias, pad, groups):
    """Forward 3x3 stride-1 convolution of x (N, C, H, W) with w (O, C // groups, 3, 3); pad may be negative.
    Where F(4x2, 3x3) makes fewer products (conv_winograd4x2.preferred), it runs that instead."""
    if conv_winograd4x2.preferred(x.shape, pad, groups, x.itemsize):
        return conv_winograd4x2.forward(x, w, bias, pad)
    return _convolve(x, w, bias, pad, groups, flip=False)


def backwardData(dy, w, xShape, pad, groups):
    """As forward, of dy with the flipped, transposed kernel and padding 2 - pad (F(4x2) where preferred)."""
    if conv_winograd4x2.preferred(dy.shape, (2 - pad[0], 2 - pad[1]), groups, dy.itemsize):
        return conv_winograd4x2.backwardData(dy, w, xShape, pad)
    dx = _convolve(dy, w, None, (2 - pad[0], 2 - pad[1]), groups, flip=True)
    assert dx.shape == tuple(xShape)
    return dx


def _convolve(x, w, bias, pad, groups, flip):
    """The forward convolution of x with w, or (``flip``) with w flipped and transposed per group.

    Group g's kernel matrix per tile position is (maps, channels): U[:, g * og:(g + 1) * og], or with
    ``flip`` the transpose of the flipped kernel's U[:, g * cg:(g + 1) * cg] (U of w (O, C/g) either way).
    """
    n, c, h, wd = x.shape
    og, cg = (w.shape[1], w.shape[0] // groups) if flip else (w.shape[0] // groups, w.shape[1])
    o = og * groups
    oh, ow = h + 2 * pad[0] - 2, wd + 2 * pad[1] - 2
    y = np.empty((n, o, oh, ow), dtype=x.dtype)
    if n == 0 or oh <= 0 or ow <= 0:
        return y
    th, tw = _tiles(h, wd, pad)
    total = n * th
    biasv = biasVector(bias, o, x.dtype)
    xc, wc = np.ascontiguousarray(x), np.ascontiguousarray(w)
    cst = np.array([0.5], dtype=x.dtype)
    order = _FLIPPED if flip else _ORDER
    isz = x.itemsize
    blocks = _blocks(groups, og, cg, isz, BLOCK_BYTES)
    chunks = _chunks(total, tw, POSITIONS * (c + o) * isz, POSITIONS * c * isz)

    def kernelMatrix(u, g, m0, m1):
        """Group g's kernel matrices for its maps [m0, m1) into u ((16, m1 - m0, cg), or (16, cg, m1 - m0)
        with ``flip``); returns them as (16, m1 - m0, cg)."""
        if flip:  # this group's input (dy) channels are w's rows, its output maps w's columns
            _kernelTransform(wc, u, g * cg, g * cg, (g + 1) * cg, m0, m1, cst, order)
            return u.transpose(0, 2, 1)
        _kernelTransform(wc, u, g * og + m0, g * og + m0, g * og + m1, 0, cg, cst, order)
        return u

    if len(chunks) == 1:
        # V of all tiles, transformed once (channels split between threads), then the blocks of maps, each
        # thread transforming its blocks' kernel slices.
        p = total * tw
        v = workspace.get("w2-v", (POSITIONS, c, p), x.dtype)
        _transformAll(xc, v.reshape(POSITIONS, -1), pad, th, tw, total)
        ob = max(m1 - m0 for _, m0, m1 in blocks)
        workers = chunkWorkers(len(blocks))
        bufs = [(workspace.get(f"w2-u{k}", (POSITIONS * ob * cg,), x.dtype),
                 workspace.get(f"w2-m{k}", (POSITIONS * ob * p,), x.dtype)) for k in range(workers)]

        def block(k, item):
            (ub, mb), (g, m0, m1) = bufs[k], item
            mm = m1 - m0
            u = leadingView(ub, (POSITIONS, cg, mm) if flip else (POSITIONS, mm, cg))
            m = leadingView(mb, (POSITIONS, mm, p))
            _product(kernelMatrix(u, g, m0, m1), v[:, g * cg:(g + 1) * cg], m)
            _outputTransform(m.reshape(POSITIONS, -1), g * og + m0, y, biasv, th, tw, 0, total, g * og + m0,
                             g * og + m1)

        shareItems(block, blocks, workers)
        return y

    # Many tiles: the whole transformed kernel (blocks split between threads), then chunks of tiles, each
    # thread its own, group by group.
    rows = cg * groups if flip else o
    u = workspace.get("w2-u", (POSITIONS, rows, og if flip else cg), x.dtype)
    workers = chunkWorkers(rows)
    shareItems(lambda k, r: _kernelTransform(wc, u, 0, r[0], r[1], 0, u.shape[2], cst, order),
               pieces(rows, workers), workers)
    mats = [u[:, g * cg:(g + 1) * cg].transpose(0, 2, 1) if flip else u[:, g * og:(g + 1) * og]
            for g in range(groups)]
    step = max(q1 - q0 for q0, q1 in chunks) * tw
    workers = chunkWorkers(len(chunks))
    bufs = [(workspace.get(f"w2-v{k}", (POSITIONS, c * step), x.dtype),
             workspace.get(f"w2-m{k}", (POSITIONS, o * step), x.dtype)) for k in range(workers)]

    def chunk(k, item):
        (vb, mb), (q0, q1) = bufs[k], item
        p = (q1 - q0) * tw
        v, m = vb[:, :c * p].reshape(POSITIONS, c, p), mb[:, :o * p].reshape(POSITIONS, o, p)
        _inputTransform(xc, vb, 0, pad[0], pad[1], th, tw, q0, q1, 0, c)
        for g in range(groups):
            _product(mats[g], v[:, g * cg:(g + 1) * cg], m[:, g * og:(g + 1) * og])
        _outputTransform(mb, 0, y, biasv, th, tw, q0, q1, 0, o)

    shareItems(chunk, chunks, workers)
    return y


def _product(a, b, out):
    """out = a @ b for the 16 tile positions, on this thread: the float32 kernel (sgemm) reads the kernel
    matrices in place (transposed ones too) and runs N8 512->512 7x7's (64 x 512) @ (512 x 128) products at
    ~110 GFLOP/s against OpenBLAS's ~100 (one thread); other dtypes stay on BLAS."""
    if sgemm.applies(out.dtype):
        sgemm.batched(a, b, out)
    else:
        np.matmul(a, b, out=out)


def backwardParams(x, dy, wShape, pad, groups):
    """Weight gradient (O, C // groups, 3, 3): per block of output maps, dU^T = sum over tiles
    (B^T d B) @ (A g A^T)^T, 16 GEMMs (C/g, tiles) @ (tiles, maps) per chunk of tiles, summed in the
    chunks' order, then dW = G^T dU G for the block's rows of dW. (dU^T, not dU: OpenBLAS ran
    (maps, tiles) @ (tiles, C/g) with the right operand transposed 1.2-1.5x slower on N8 512->512 7x7.)
    In float32 the products run through sgemm, Mg^T copied contiguous, each chunk's added in by the tile:
    against OpenBLAS (F(4x2) off, same process, two threads, median of 15 paired ratios, two runs) N16
    512->512 7x7 0.86-0.87, N8 512->512 6x6 0.88-0.89, N8 256->256 5x5 0.94-0.98, N8 64->64 11x11 0.97-1.02.
    Where F(4x2, 3x3) makes fewer products (conv_winograd4x2.preferred), it runs that instead."""
    if conv_winograd4x2.preferred(x.shape, pad, groups, x.itemsize):
        return conv_winograd4x2.backwardParams(x, dy, wShape, pad)
    n, c = x.shape[:2]
    o = dy.shape[1]
    og, cg = o // groups, c // groups
    oh, ow = dy.shape[2], dy.shape[3]
    th, tw = -(-oh // M_OUT), -(-ow // M_OUT)
    total = n * th
    xc, dyc = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    cst = np.array([0.5], dtype=x.dtype)
    isz = x.itemsize
    dw = np.empty(wShape, dtype=x.dtype)
    blocks = _blocks(groups, og, cg, isz, GRAD_BLOCK_BYTES)
    ob = max(m1 - m0 for _, m0, m1 in blocks)
    chunks = _chunks(total, tw, POSITIONS * (cg + ob) * isz, POSITIONS * c * isz)
    step = max(q1 - q0 for q0, q1 in chunks) * tw
    shared = None
    if len(chunks) == 1:  # V of all tiles, transformed once (channels split between threads)
        shared = workspace.get("w2-v", (POSITIONS, c, step), x.dtype)
        _transformAll(xc, shared.reshape(POSITIONS, -1), pad, th, tw, total)
    workers = chunkWorkers(len(blocks))
    several = len(chunks) > 1
    fast = sgemm.applies(x.dtype)  # Mg^T copied contiguous for sgemm, which adds each chunk's products itself
    bufs = [(workspace.get(f"w2-m{k}", (POSITIONS, ob * step), x.dtype),
             workspace.get(f"w2-du{k}", (POSITIONS * ob * cg,), x.dtype),
             workspace.get(f"w2-t{k}", (POSITIONS * (ob * step if fast else ob * cg if several else 1),), x.dtype),
             workspace.get(f"w2-v{k}", (POSITIONS, cg * step if several else 1), x.dtype))
            for k in range(workers)]

    def block(k, item):
        (mb, dub, tb, vb), (g, m0, m1) = bufs[k], item
        mm = m1 - m0
        dut = leadingView(dub, (POSITIONS, cg, mm))  # the planes of mb and vb keep their full strides
        for ci, (q0, q1) in enumerate(chunks):
            p = (q1 - q0) * tw
            mgt = mb[:, :mm * p].reshape(POSITIONS, mm, p).transpose(0, 2, 1)
            _gradTransform(dyc, mb, g * og + m0, th, tw, q0, q1, g * og + m0, g * og + m1)
            if several:
                v = vb[:, :cg * p].reshape(POSITIONS, cg, p)
                _inputTransform(xc, vb, g * cg, pad[0], pad[1], th, tw, q0, q1, g * cg, (g + 1) * cg)
            else:
                v = shared[:, g * cg:(g + 1) * cg]
            conv_winograd.gradProducts(v, mgt, dut, tb, accumulate=ci > 0)
        _kernelGradient(dut, dw, g * og + m0, g * og + m1, cst)

    shareItems(block, blocks, workers)
    return dw
