"""Winograd F(4x4, 3x3) for 2-D 3x3 stride-1 convolutions without dilation, in all three directions.

Each 4x4 block of outputs is computed from a 6x6 input tile: V = B^T d B (input transform),
U = G g G^T (kernel transform), then for each of the 36 tile positions one GEMM
M[k] = U[k] (O, C) @ V[k] (C, tiles), and Y = A^T M A (output transform). That is 36 multiplies per
16 outputs and input channel instead of 144: the GEMM work drops 4x.
Backward-data of a stride-1 convolution is the forward convolution of the gradient with the
flipped, transposed kernel and padding 2 - pad (negative padding crops), so the same code serves it.
The weight gradient is the adjoint: dW = G^T [sum over tiles (A g A^T) * V] G, 36 GEMMs
(O, tiles) @ (tiles, C).

The transforms are memory-bound loops over tiles, compiled with numba (cache on disk), vectorised
along rows of tiles. Tiles are processed in chunks of tile rows (across batch items) so the V and M
buffers stay under a bound (``chunkBytes``: at most 1 MiB, a quarter of the call's result); they are
reused across the chunks of one call and released when it returns.

Accuracy: the points 0, +-1, +-2 bring coefficients up to 8 (and 1/24 in G), which amplify rounding,
so the error is about 10x a direct convolution's. Measured against a float64 direct reference
(standard normal data, 16 to 256 input channels), max |error| / max |result| was at most 7e-6 in
float32 and 1.2e-14 in float64 in every direction (im2col: 5e-7 and 1e-15). The tests assert the
stated bound, 5e-5 (float32) and 1e-12 (float64).
"""

import functools

import numpy as np

from PuzzleLib.Engines.cpu import conv_common
from PuzzleLib.Engines.cpu.conv_common import parallel, workspace

try:
    from numba import njit
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
# Tile positions per GEMM batch when a weight-gradient chunk is added to the running sum (divides 36).
_DU_BLOCK = 12
# Fewest tiles per weight-gradient chunk (the inner dimension of its GEMMs).
_MIN_GRAD_TILES = 24


def applies(kernel, stride, dilation):
    return len(kernel) == 2 and tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)


def _inputTransform(x, V, ph, pw, th, tw, q0, q1, cst, c0, c1):
    """V[a * 6 + b, c, (q - q0) * tw + tx] = (B^T d B)[a, b] for the tile (row q = n * th + ty, column tx).

    Per (channel, row of tiles): the 6 input rows are copied into a zero-bordered buffer, transformed
    down the rows (B^T, vectorised along the row), then along each tile's 6 columns (B).
    """
    h, w = x.shape[2], x.shape[3]
    wp = 4 * tw + 2
    rows = np.zeros((6, wp), dtype=x.dtype)
    t = np.empty((6, wp), dtype=x.dtype)
    kLo, kHi = max(0, pw), min(wp, w + pw)
    # Constants typed like the data, so float32 stays float32 (a literal would promote to float64).
    two, four, five = cst[0], cst[1], cst[2]
    for c in range(c0, c1):
        for q in range(q0, q1):
            b, ty = q // th, q % th
            for i in range(6):
                r = ty * 4 + i - ph
                row = rows[i]
                if r < 0 or r >= h or kHi <= kLo:
                    row[:] = 0
                else:
                    row[:kLo] = 0
                    row[kLo:kHi] = x[b, c, r, kLo - pw:kHi - pw]
                    row[kHi:] = 0
            for k in range(wp):
                d0, d1, d2, d3, d4, d5 = rows[0, k], rows[1, k], rows[2, k], rows[3, k], rows[4, k], rows[5, k]
                t[0, k] = four * d0 - five * d2 + d4
                t[1, k] = -(four * (d1 + d2)) + d3 + d4
                t[2, k] = four * (d1 - d2) - d3 + d4
                t[3, k] = two * (d3 - d1) - d2 + d4
                t[4, k] = two * (d1 - d3) - d2 + d4
                t[5, k] = four * d1 - five * d3 + d5
            base = (q - q0) * tw
            for a in range(6):
                for tx in range(tw):
                    k = 4 * tx
                    e0, e1, e2, e3, e4, e5 = t[a, k], t[a, k + 1], t[a, k + 2], t[a, k + 3], t[a, k + 4], t[a, k + 5]
                    V[a * 6, c, base + tx] = four * e0 - five * e2 + e4
                    V[a * 6 + 1, c, base + tx] = -(four * (e1 + e2)) + e3 + e4
                    V[a * 6 + 2, c, base + tx] = four * (e1 - e2) - e3 + e4
                    V[a * 6 + 3, c, base + tx] = two * (e3 - e1) - e2 + e4
                    V[a * 6 + 4, c, base + tx] = two * (e1 - e3) - e2 + e4
                    V[a * 6 + 5, c, base + tx] = four * e1 - five * e3 + e5


def _outputTransform(M, y, bias, th, tw, q0, q1, cst, o0, o1):
    """y[n, o, 4 ty + i, 4 tx + j] = (A^T m A)[i, j] + bias[o] for the tiles of rows [q0, q1)."""
    oh, ow = y.shape[2], y.shape[3]
    t = np.empty((4, 6, tw), dtype=y.dtype)
    yrow = np.empty(4 * tw, dtype=y.dtype)
    two, four, eight = cst[0], cst[1], cst[3]
    for o in range(o0, o1):
        bv = bias[o]
        for q in range(q0, q1):
            b, ty = q // th, q % th
            base = (q - q0) * tw
            for bb in range(6):
                for tx in range(tw):
                    p = base + tx
                    m0, m1, m2 = M[bb, o, p], M[6 + bb, o, p], M[12 + bb, o, p]
                    m3, m4, m5 = M[18 + bb, o, p], M[24 + bb, o, p], M[30 + bb, o, p]
                    t[0, bb, tx] = m0 + m1 + m2 + m3 + m4
                    t[1, bb, tx] = m1 - m2 + two * (m3 - m4)
                    t[2, bb, tx] = m1 + m2 + four * (m3 + m4)
                    t[3, bb, tx] = m1 - m2 + eight * (m3 - m4) + m5
            for i in range(4):
                row = ty * 4 + i
                if row >= oh:
                    break
                for tx in range(tw):
                    e0, e1, e2 = t[i, 0, tx], t[i, 1, tx], t[i, 2, tx]
                    e3, e4, e5 = t[i, 3, tx], t[i, 4, tx], t[i, 5, tx]
                    yrow[4 * tx] = e0 + e1 + e2 + e3 + e4 + bv
                    yrow[4 * tx + 1] = e1 - e2 + two * (e3 - e4) + bv
                    yrow[4 * tx + 2] = e1 + e2 + four * (e3 + e4) + bv
                    yrow[4 * tx + 3] = e1 - e2 + eight * (e3 - e4) + e5 + bv
                y[b, o, row, :] = yrow[:ow]


def _gradTransform(dy, Mg, th, tw, q0, q1, cst, o0, o1):
    """Mg[a * 6 + b, o, (q - q0) * tw + tx] = (A g A^T)[a, b] for the 4x4 gradient tile g (zero past the map).

    The adjoint of the output transform: the weight gradient in the transformed domain is the
    elementwise product of this with the input transform, summed over tiles.
    """
    oh, ow = dy.shape[2], dy.shape[3]
    wide = 4 * tw
    rows = np.zeros((4, wide), dtype=dy.dtype)
    r = np.empty((6, wide), dtype=dy.dtype)
    two, four, eight = cst[0], cst[1], cst[3]
    for o in range(o0, o1):
        for q in range(q0, q1):
            b, ty = q // th, q % th
            for i in range(4):
                row = ty * 4 + i
                if row < oh:
                    rows[i, :ow] = dy[b, o, row]
                else:
                    rows[i, :] = 0
            for k in range(wide):
                g0, g1, g2, g3 = rows[0, k], rows[1, k], rows[2, k], rows[3, k]
                r[0, k] = g0
                r[1, k] = g0 + g1 + g2 + g3
                r[2, k] = g0 - g1 + g2 - g3
                r[3, k] = g0 + two * g1 + four * g2 + eight * g3
                r[4, k] = g0 - two * g1 + four * g2 - eight * g3
                r[5, k] = g3
            base = (q - q0) * tw
            for a in range(6):
                for tx in range(tw):
                    k = 4 * tx
                    e0, e1, e2, e3 = r[a, k], r[a, k + 1], r[a, k + 2], r[a, k + 3]
                    p = base + tx
                    Mg[a * 6, o, p] = e0
                    Mg[a * 6 + 1, o, p] = e0 + e1 + e2 + e3
                    Mg[a * 6 + 2, o, p] = e0 - e1 + e2 - e3
                    Mg[a * 6 + 3, o, p] = e0 + two * e1 + four * e2 + eight * e3
                    Mg[a * 6 + 4, o, p] = e0 - two * e1 + four * e2 - eight * e3
                    Mg[a * 6 + 5, o, p] = e3


if available:
    _inputTransform = njit(cache=True, nogil=True)(_inputTransform)
    _outputTransform = njit(cache=True, nogil=True)(_outputTransform)
    _gradTransform = njit(cache=True, nogil=True)(_gradTransform)


def kernelTransform(w, groups):
    """U (36, groups, O // groups, C // groups) = G g G^T for every (o, c).

    Built in U's own layout (no transposed copy at the end): at most U plus half of it is alive at once.
    """
    g = _G.astype(w.dtype)
    o, cg = w.shape[:2]
    t = np.tensordot(g, np.ascontiguousarray(w.transpose(2, 3, 0, 1)), axes=([1], [0]))  # (6, 3, O, Cg)
    u = np.matmul(g, t.reshape(6, 3, o * cg))                                           # (6, 6, O * Cg)
    return u.reshape(36, groups, o // groups, cg)


def _chunkRows(rows, tw, c, o, itemsize, limit):
    perRow = 36 * (c + o) * tw * itemsize
    return max(1, min(rows, limit // max(perRow, 1)))


def chunkBytes(resultBytes):
    """Bound of the V and M buffers of one call: small chunks stay in cache between the transforms and
    the GEMMs (measured no slower than 16 MiB ones), and scratch stays well under the call's result."""
    return min(conv_common.WINOGRAD_BYTES, max(1, resultBytes // 4))


def workspaceBytes(xShape, o, pad, itemsize=4, resultBytes=None, tileBytes=None, grad=False):
    """Bytes of the V and M buffers of forward (and backward-data, with its own shapes) on this input;
    ``grad``: of the weight gradient's (at least _MIN_GRAD_TILES tiles per chunk)."""
    n, c, h, w = xShape
    th, tw = _tiles(h, w, pad)
    if tileBytes is None:
        tileBytes = chunkBytes(n * o * (h + 2 * pad[0] - 2) * (w + 2 * pad[1] - 2) * itemsize
                               if resultBytes is None else resultBytes)
    rows = _chunkRows(n * th, tw, c, o, itemsize, tileBytes)
    if grad:
        rows = min(n * th, max(rows, -(-_MIN_GRAD_TILES // tw)))
    return 36 * (c + o) * tw * rows * itemsize


def _tiles(h, w, pad):
    oh, ow = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
    return -(-oh // M_OUT), -(-ow // M_OUT)


def forward(x, w, bias, pad, groups, tileBytes=None, u=None, out=None):
    """Forward 3x3 stride-1 convolution of x (N, C, H, W) with w (O, C // groups, 3, 3); pad may be negative.

    ``u``: w's kernel transform when the caller already has it; ``out``: an (N, O, OH, OW) view (any
    strides) to write into instead of a new array.
    """
    n, c, h, wd = x.shape
    o = w.shape[0]
    oh, ow = h + 2 * pad[0] - 2, wd + 2 * pad[1] - 2
    y = np.empty((n, o, oh, ow), dtype=x.dtype) if out is None else out
    assert y.shape == (n, o, oh, ow)
    if n == 0 or oh <= 0 or ow <= 0:
        return y
    th, tw = _tiles(h, wd, pad)
    if u is None:
        u = kernelTransform(w, groups)
    biasv = np.zeros(o, dtype=x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype).reshape(o)
    xc = np.ascontiguousarray(x)
    cst = np.array([2, 4, 5, 8], dtype=x.dtype)
    total = n * th
    step = _chunkRows(total, tw, c, o, x.itemsize, tileBytes or chunkBytes(y.nbytes))
    for q0 in range(0, total, step):
        q1 = min(total, q0 + step)
        p = (q1 - q0) * tw
        v = workspace.get("wino-v", (36, c, p), x.dtype)
        m = workspace.get("wino-m", (36, o, p), x.dtype)
        # Channels (then output maps) are split between threads; the transforms release the GIL.
        parallel(functools.partial(_inputTransform, xc, v, pad[0], pad[1], th, tw, q0, q1, cst), c, v.size)
        np.matmul(u, v.reshape(36, groups, c // groups, p), out=m.reshape(36, groups, o // groups, p))
        parallel(functools.partial(_outputTransform, m, y, biasv, th, tw, q0, q1, cst), o, m.size)
    return y


def backwardData(dy, w, xShape, pad, groups, tileBytes=None):
    from PuzzleLib.Engines.cpu.conv_im2col import flippedKernel

    dx = forward(dy, flippedKernel(w, groups), None, (2 - pad[0], 2 - pad[1]), groups, tileBytes)
    assert dx.shape == tuple(xShape)
    return dx


def backwardParams(x, dy, wShape, pad, groups, tileBytes=None):
    """Weight gradient (O, C // groups, 3, 3): dW = G^T [sum over tiles (A g A^T) * (B^T d B)] G.

    36 GEMMs over the tiles, (O, tiles) @ (tiles, C), accumulated chunk by chunk in a fixed order.
    """
    n, c = x.shape[:2]
    o = dy.shape[1]
    og, cg = o // groups, c // groups
    oh, ow = dy.shape[2], dy.shape[3]
    th, tw = -(-oh // M_OUT), -(-ow // M_OUT)
    xc, dyc = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    cst = np.array([2, 4, 5, 8], dtype=x.dtype)
    du = np.empty((36, groups, og, cg), dtype=x.dtype)
    total = n * th
    step = _chunkRows(total, tw, c, o, x.itemsize, tileBytes or chunkBytes(max(x.nbytes, dy.nbytes)))
    if tileBytes is None:
        # The tiles are these GEMMs' inner dimension: fewer than a couple of dozen starve them (N1 56x56:
        # one row of 14 tiles ran 2.6 ms, two rows 2.0 ms; benchmarks/conv.py case 9).
        step = min(total, max(step, -(-_MIN_GRAD_TILES // tw)))
    for q0 in range(0, total, step):
        q1 = min(total, q0 + step)
        p = (q1 - q0) * tw
        v = workspace.get("wino-v", (36, c, p), x.dtype)
        mg = workspace.get("wino-m", (36, o, p), x.dtype)
        parallel(functools.partial(_inputTransform, xc, v, pad[0], pad[1], th, tw, q0, q1, cst), c, v.size)
        parallel(functools.partial(_gradTransform, dyc, mg, th, tw, q0, q1, cst), o, mg.size)
        mgs, vts = mg.reshape(36, groups, og, p), v.reshape(36, groups, cg, p).transpose(0, 1, 3, 2)
        if q0 == 0:
            np.matmul(mgs, vts, out=du)
            continue
        # Later chunks add their products a block of tile positions at a time: the temporary is a
        # third of dU, not all of it (the GEMMs stay batched).
        for k0 in range(0, 36, _DU_BLOCK):
            part = workspace.get("wino-du", (_DU_BLOCK,) + du.shape[1:], x.dtype)
            np.matmul(mgs[k0:k0 + _DU_BLOCK], vts[k0:k0 + _DU_BLOCK], out=part)
            du[k0:k0 + _DU_BLOCK] += part
    workspace.release()  # the transform buffers are dead; the kernel-space transform below needs its own
    if total == 0:
        du.fill(0)
    gt = np.ascontiguousarray(_G.T.astype(x.dtype))  # (3, 6)
    # dW[o, c, i, j] = sum_ab G[a, i] dU[a, b, o, c] G[b, j], as two products with no transposed copies
    # (each temporary is dropped as soon as the next exists: at most dU plus half of it is alive).
    t = np.matmul(gt, du.reshape(6, 6 * o * cg))                # (3, 6 * O * Cg): [i, b, oc]
    del du
    r = np.matmul(gt, t.reshape(3, 6, o * cg))                  # (3, 3, O * Cg): [i, j, oc]
    del t
    return np.ascontiguousarray(r.reshape(3, 3, o, cg).transpose(2, 3, 0, 1)).reshape(wShape)
