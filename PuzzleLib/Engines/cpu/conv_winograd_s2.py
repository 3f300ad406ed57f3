"""3x3 stride-2 convolutions (2-D, undilated) by a Winograd-style split of the taps by parity, in all three
directions: 25 multiplies per 2x2 block of outputs and input channel instead of 36.

Along one axis, outputs 2t and 2t + 1 of a stride-2 3-tap convolution read the five inputs x0..x4 at
4t - pad .. 4t - pad + 4: y0 = w0 x0 + w1 x1 + w2 x2, y1 = w0 x2 + w1 x3 + w2 x4. The even taps (w0, w2) over
the even inputs (x0, x2, x4) are a 2-tap stride-1 convolution, done as F(2, 2) with the points 0, 1 and
infinity: m0 = (x0 - x2) w0, m1 = x2 (w0 + w2), m2 = (x4 - x2) w2, y0 = m0 + m1, y1 = m1 + m2. The odd tap adds
x1 w1 to y0 and x3 w1 to y1, and only m0 reaches y0 alone and m2 y1 alone: it is folded into them as second
products, m0 = (x0 - x2) w0 + x1 w1, m2 = (x4 - x2) w2 + x3 w1. So five input components

    0a = x0 - x2 (with w0), 0b = x1 (w1), 1 = x2 (w0 + w2), 2a = x4 - x2 (w2), 2b = x3 (w1)

meet five kernel components at three points (0: 0a, 0b; 1: 1; 2: 2a, 2b): 5 products for 2 outputs instead
of 6. In 2-D each of the 3 x 3 points (P, Q) is one GEMM over the products of its row and column components,
K = 4, 2 or 1 components times the channels (25 in all, 36 for im2col), and output (i, j) of a block is the sum
of the points' products that reach it (A^T = [[1, 1, 0], [0, 1, 1]] along each axis). Every coefficient is
+-1: the transforms only add and subtract, and the error stays near a direct convolution's: max |error| / max
|result| against the float64 reference was at most 3.1e-6 in float32 and 3.2e-15 in float64 (16 to 512 input
channels, every direction; im2col's forward 0.4e-6 to 1.5e-6 and 0.9e-15 to 4.5e-15 on the same data). The
tests assert 1e-5 and 1e-13.

Scratch memory stays under torch's on case 5 (N8 128->256 28x28 p1) in every direction: the points are taken
a row (P) at a time, so only one row's transformed input (10 components at most) exists at once.
- Forward: the tiles are cut into fixed parts (rows of tiles; two on case 5), each run by one thread on its
  own: per row of points, its transformed input, then per block of maps and per point the transformed kernel
  (from a tap-major copy of w, made a block of maps at a time by the thread that first needs it) and one GEMM
  adding into two sums (the block's two output columns), which are then added into the output rows the row of
  points reaches. The GEMMs' rows are padded to whole tiles of sgemm (``_padded``).
- Backward-data and the weight gradient: the input channels are cut into fixed ranges, each run by one thread
  on its own: per row of points, the gradient's transform of all maps (each range makes its own: cheap), and
  per point dV = U^T dM (then the adjoint input transform added into the range's channels of dx), or
  dU^T = V dM^T (then the adjoint kernel transform added into the range's columns of dw). Results do not depend
  on the thread count: the parts are fixed by the shape, and every sum runs in one fixed order.
"""

import threading

import numpy as np

from PuzzleLib.Engines.cpu import sgemm
from PuzzleLib.Engines.cpu.conv_common import (
    biasVector,
    chunkWorkers,
    leadingView,
    outputShape,
    prod,
    ranges,
    shareItems,
    workspace,
)
from PuzzleLib.Engines.cpu.vectorops import LINE_BYTES, VECTOR_BYTES, interleavePairs, prefetch

try:
    from numba import njit, uintp
except ImportError:  # pragma: no cover - numba is a dependency; without it the algorithm is unavailable
    njit = None

available = njit is not None

# The five 1-D components (0a, 0b, 1, 2a, 2b): the input position each adds, the one it subtracts (-1: none),
# and the kernel taps it sums.
_PLUS = np.array([0, 1, 2, 4, 3])
_MINUS = np.array([2, -1, -1, 2, -1])
_TAP0 = np.array([0, 1, 0, 2, 1])
_TAP1 = np.array([-1, -1, 2, -1, -1])
# The components of each point (-1: none), and how many it has.
_COMPS = np.array([[0, 1], [2, -1], [3, 4]])
_COUNT = (2, 1, 2)
# Where point (P, Q)'s block starts in the transformed input of row P, in components per row component.
_QOFF = np.array([0, 2, 3])
# Floats of one block of tile rows in the input transform's row components (end to end).
SPAN = 8192


def applies(kernel, stride, dilation):
    return (len(kernel) == 2 and tuple(kernel) == (3, 3) and tuple(stride) == (2, 2)
            and tuple(dilation) == (1, 1))


def _componentRows(V, ii, kp, C, c, n):
    """The rows of V (a row of points' transformed input, laid out as _inputRow's) that hold the five column
    components 0a, 0b (point 0), 1 (point 1), 2a, 2b (point 2) of row component ii, for the n channels from
    channel c (of C): five (n, pitch) views, a channel's tiles along each row."""
    o0 = (2 * ii) * C + c
    o1 = (2 * kp + ii) * C + c
    o2 = (3 * kp + 2 * ii) * C + c
    return V[o0:o0 + n], V[o0 + C:o0 + C + n], V[o1:o1 + n], V[o2:o2 + n], V[o2 + C:o2 + C + n]


def _inputRow(x, V, P, ph, pw, th, tw, q0, q1, c0, c1, cbase, C):
    """The transformed input of the points (P, 0), (P, 1), (P, 2), tile rows q in [q0, q1) (q = n * th + ty),
    channels c in [c0, c1) of the C from cbase: point Q's block of V (from row kp * QOFF[Q] * C) holds component
    (COMPS[P, ii], COMPS[Q, jj]) of channel c at row (ii * kq + jj) * C + c - cbase, of tile column tx of tile row q
    at column (q - q0) * tw + tx.

    Per block of channels: for each tile row, the row component (a difference of two input rows, padding
    fused) goes end to end into R[ii] (4 tw columns per tile row; column 4 tw, read by the last tile, into E),
    then one pass over all the block's tiles makes the five column components, tile p reading columns
    4 p .. 4 p + 4 (interleaved loads), the last tile of each row redone from E. Columns past the tiles of V's
    rows (its pitch, V.shape[1], padded for sgemm: _padded) are zeroed.

    The first row component's pass prefetches the next channel's rows as it goes (``vectorops.prefetch``): each plane
    is a few short rows, too little for the hardware prefetcher, and x is out of cache after the previous row of
    points' GEMMs. Case 5's forward, same process, median of paired ratios against no prefetch: 0.94 on one
    thread, 0.96-0.97 on two (``/tmp/s10/fwab2.py``; the input transform alone, caches flushed before each call:
    1.72 ms a call to 1.17; caches warm: 0.67 to 0.78 with a first version that computed more per prefetch).
    """
    h, w = x.shape[2], x.shape[3]
    nq = q1 - q0
    T, pitch = nq * tw, V.shape[1]
    S = 4 * tw
    kp = 1 if P == 1 else 2
    cb = max(1, min(C, SPAN // max(nq * S, 1)))
    R = np.empty((kp, cb * nq * S + 4), dtype=x.dtype)
    E = np.empty((kp, cb * nq), dtype=x.dtype)
    lo = min(S, max(0, pw))          # columns [lo, hi) of a row lie inside the map
    hi = max(lo, min(S, pw + w))
    eIn = 0 <= S - pw < w
    src = x.reshape(-1)
    channels = x.shape[1]
    top, bottom = (0, 2) if P == 0 else (2, 2) if P == 1 else (2, 4)  # the rows of a tile's five the row reads
    cs = c0
    while cs < c1:
        ce = min(c1, cs + cb)
        for ii in range(kp):
            i = _COMPS[P, ii]
            ra, rb = _PLUS[i], _MINUS[i]
            r, e = R[ii], E[ii]
            for c in range(cs, ce):
                for q in range(q0, q1):
                    b, ty = q // th, q % th
                    if ii == 0 and c + 1 < c1:  # the next channel's rows, a tile row's time ahead (nq of them)
                        first = (((b * channels + c + 1) * h + min(max(4 * ty + top - ph, 0), h - 1)) * w)
                        last = (((b * channels + c + 1) * h + min(max(4 * ty + bottom - ph, 0), h - 1)) * w) + w
                        for k in range(first, last, LINE_BYTES // x.itemsize):
                            prefetch(src, k)
                        prefetch(src, last - 1)
                    s = (c - cs) * nq + q - q0
                    base = uintp(s * S)
                    ya, yb = 4 * ty + ra - ph, 4 * ty + rb - ph
                    va = 0 <= ya < h
                    vb = rb >= 0 and 0 <= yb < h
                    for k in range(lo):
                        r[base + uintp(k)] = 0
                    for k in range(hi, S):
                        r[base + uintp(k)] = 0
                    plane = (b * channels + c) * h
                    sa = uintp((plane + max(ya, 0)) * w + lo - pw)  # flat indices (as _gradRow)
                    sb = uintp((plane + max(yb, 0)) * w + lo - pw)
                    d = base + uintp(lo)
                    if va and vb:
                        for k in range(hi - lo):
                            u = uintp(k)
                            r[d + u] = src[sa + u] - src[sb + u]
                    elif va:
                        for k in range(hi - lo):
                            r[d + uintp(k)] = src[sa + uintp(k)]
                    elif vb:
                        for k in range(hi - lo):
                            r[d + uintp(k)] = -src[sb + uintp(k)]
                    else:
                        for k in range(hi - lo):
                            r[d + uintp(k)] = 0
                    ev = x.dtype.type(0)
                    if eIn and va:
                        ev = x[b, c, ya, S - pw]
                    if eIn and vb:
                        ev = ev - x[b, c, yb, S - pw]
                    e[s] = ev
        n = ce - cs
        for ii in range(kp):
            r, e = R[ii], E[ii]
            v0a, v0b, v1, v2a, v2b = _componentRows(V, ii, kp, C, cs - cbase, n)
            for ch in range(n):
                first = ch * T
                for t in range(T):
                    u = uintp(4 * (first + t))
                    a0, a1, a2 = r[u], r[u + uintp(1)], r[u + uintp(2)]
                    a3, a4 = r[u + uintp(3)], r[u + uintp(4)]
                    v0a[ch, t] = a0 - a2
                    v0b[ch, t] = a1
                    v1[ch, t] = a2
                    v2a[ch, t] = a4 - a2
                    v2b[ch, t] = a3
                for tq in range(nq):  # column 4 of each row's last tile is in E
                    t = tq * tw + tw - 1
                    v2a[ch, t] = e[ch * nq + tq] - r[4 * (first + t) + 2]
                for t in range(T, pitch):  # the GEMMs' padding columns
                    v0a[ch, t] = v0b[ch, t] = v1[ch, t] = v2a[ch, t] = v2b[ch, t] = 0
        cs = ce


def _kernelPoint(wt, U, P, Q, m0, m1, c0, c1):
    """U[m - m0, (ii * kq + jj) * C + c - c0] (C = c1 - c0) = sum of w[m, c, a, b] over the taps a of row component
    COMPS[P, ii] and b of column component COMPS[Q, jj], for maps m in [m0, m1) and channels c in [c0, c1).

    wt is w tap-major, (9, O, C) (``_tapMajor``): the sums run along contiguous rows. (Read from w itself, nine
    floats apart, the nine points' transforms of a part of case 5's forward took 0.53 ms; from wt, 0.15: each
    timed alone, caches warm.)"""
    kp = 1 if P == 1 else 2
    kq = 1 if Q == 1 else 2
    C = c1 - c0
    for m in range(m0, m1):
        um = uintp(m)
        for ii in range(kp):
            i = _COMPS[P, ii]
            a0, a1 = _TAP0[i], _TAP1[i]
            for jj in range(kq):
                j = _COMPS[Q, jj]
                b0, b1 = _TAP0[j], _TAP1[j]
                out = U[m - m0, (ii * kq + jj) * C:(ii * kq + jj + 1) * C]
                g = wt[3 * a0 + b0, um, c0:c1]
                if a1 < 0 and b1 < 0:
                    for c in range(C):
                        out[c] = g[c]
                elif a1 < 0:
                    h = wt[3 * a0 + b1, um, c0:c1]
                    for c in range(C):
                        out[c] = g[c] + h[c]
                elif b1 < 0:
                    h = wt[3 * a1 + b0, um, c0:c1]
                    for c in range(C):
                        out[c] = g[c] + h[c]
                else:
                    h, k, e = wt[3 * a0 + b1, um, c0:c1], wt[3 * a1 + b0, um, c0:c1], wt[3 * a1 + b1, um, c0:c1]
                    for c in range(C):
                        out[c] = g[c] + h[c] + k[c] + e[c]


def _tapMajor(w, out, m0, m1, c0, c1):
    """out[k, m, c] = w[m, c, k // 3, k % 3] for maps [m0, m1) and channels [c0, c1): w (O, C, 3, 3) tap-major.
    Per map, its kernels are read in order and written to nine rows. Case 5's whole kernel, single calls: 0.12 ms
    against numpy's transposed copy's 0.23 with caches warm, but 0.32 against 0.24 with a 64 MiB array read before
    each call (one script, not kept). The callers share it between their threads (``_TapMajorChunks``)."""
    f = w.reshape(w.shape[0], -1)
    for m in range(m0, m1):
        um = uintp(m)
        for c in range(c0, c1):
            uc = uintp(c)
            s = uintp(9 * c)
            for k in range(9):
                out[uintp(k), um, uc] = f[um, s + uintp(k)]


def _kernelPointAdjoint(dUT, dw, P, Q, c0, c1):
    """dw[m, c, a, b] += dUT[(ii * kq + jj) * C + c - c0, m] for every tap a of row component COMPS[P, ii] and b of
    column component COMPS[Q, jj] (the adjoint of _kernelPoint, from dU transposed), all maps m, channels c in
    [c0, c1). In blocks of 16 maps, whose rows of dw stay in cache while dUT's rows are read 16 maps at a time."""
    kp = 1 if P == 1 else 2
    kq = 1 if Q == 1 else 2
    C = c1 - c0
    maps = dw.shape[0]
    f = dw.reshape(maps, -1)
    for mb in range(0, maps, 16):
        me = min(maps, mb + 16)
        for ii in range(kp):
            i = _COMPS[P, ii]
            a0, a1 = _TAP0[i], _TAP1[i]
            for jj in range(kq):
                j = _COMPS[Q, jj]
                b0, b1 = _TAP0[j], _TAP1[j]
                for c in range(C):
                    src = dUT[(ii * kq + jj) * C + c]
                    base = uintp(9 * (c0 + c))
                    for m in range(mb, me):
                        um = uintp(m)
                        v = src[um]
                        f[um, base + uintp(3 * a0 + b0)] += v
                        if b1 >= 0:
                            f[um, base + uintp(3 * a0 + b1)] += v
                        if a1 >= 0:
                            f[um, base + uintp(3 * a1 + b0)] += v
                            if b1 >= 0:
                                f[um, base + uintp(3 * a1 + b1)] += v


def _inputRowAdjoint(dV, dx, P, ph, pw, th, tw, q0, q1, c0, c1, cbase, C):
    """dx += the adjoint of _inputRow (dV laid out as its V) for tile rows [q0, q1) and channels [c0, c1).

    Per block of channels: the five column components of each row component are added back into rows of
    4 tw columns (R[ii], column 4 tw of each row into E: it is column 0 of the next tile), then each row is
    added into the input rows the row component read (the second one subtracted), padding dropped."""
    h, w = dx.shape[2], dx.shape[3]
    nq = q1 - q0
    T = nq * tw
    S = 4 * tw
    kp = 1 if P == 1 else 2
    cb = max(1, min(c1 - c0, SPAN // max(nq * S, 1)))
    R = np.empty((kp, cb * nq * S), dtype=dx.dtype)
    E = np.empty((kp, cb * nq), dtype=dx.dtype)
    lo = min(S, max(0, pw))
    hi = max(lo, min(S, pw + w))
    eIn = 0 <= S - pw < w
    dst = dx.reshape(-1)
    channels = dx.shape[1]
    cs = c0
    while cs < c1:
        ce = min(c1, cs + cb)
        n = ce - cs
        for ii in range(kp):
            r, e = R[ii], E[ii]
            v0a, v0b, v1, v2a, v2b = _componentRows(dV, ii, kp, C, cs - cbase, n)
            for ch in range(n):
                first = ch * T
                for t in range(T):
                    u = uintp(4 * (first + t))
                    d0, d2 = v0a[ch, t], v2a[ch, t]
                    r[u] = d0
                    r[u + uintp(1)] = v0b[ch, t]
                    r[u + uintp(2)] = v1[ch, t] - d0 - d2
                    r[u + uintp(3)] = v2b[ch, t]
                for tq in range(nq):  # column 4 of a tile is column 0 of the next; the last tile's goes to E
                    t0 = tq * tw
                    for tx in range(tw - 1):
                        r[4 * (first + t0 + tx) + 4] += v2a[ch, t0 + tx]
                    e[ch * nq + tq] = v2a[ch, t0 + tw - 1]
        for ii in range(kp):
            i = _COMPS[P, ii]
            ra, rb = _PLUS[i], _MINUS[i]
            r, e = R[ii], E[ii]
            for c in range(cs, ce):
                for q in range(q0, q1):
                    b, ty = q // th, q % th
                    s = (c - cs) * nq + q - q0
                    base = uintp(s * S + lo)
                    plane = (b * channels + c) * h
                    ya = 4 * ty + ra - ph
                    if 0 <= ya < h:
                        t = uintp((plane + ya) * w + lo - pw)  # flat indices (as _gradRow)
                        for k in range(hi - lo):
                            dst[t + uintp(k)] += r[base + uintp(k)]
                        if eIn:
                            dx[b, c, ya, S - pw] += e[s]
                    yb = 4 * ty + rb - ph
                    if rb >= 0 and 0 <= yb < h:
                        t = uintp((plane + yb) * w + lo - pw)
                        for k in range(hi - lo):
                            dst[t + uintp(k)] -= r[base + uintp(k)]
                        if eIn:
                            dx[b, c, yb, S - pw] -= e[s]
        cs = ce


def _gradRow(dy, G, P, th, tw, q0, q1, m0, m1):
    """G[j, m - m0, (q - q0) * tw + tx] = sum over the output rows i the points of row P reach of dy[n, m, 2 ty + i,
    2 tx + j] (zero past the map), for maps m in [m0, m1) and tile rows q = n * th + ty in [q0, q1): the adjoint
    of the output sums, before the columns' (point Q = 0 takes G[0], Q = 2 takes G[1], Q = 1 their sum).

    Flat indices throughout, no view per tile row: with 7 tiles a row the views' setup was half the time (the
    three rows of points of a part of case 5's backward-data, timed alone: 0.97 ms with views, 0.50 without)."""
    oh, ow = dy.shape[2], dy.shape[3]
    full = ow // 2
    odd = ow % 2
    i0 = 0 if P < 2 else 1
    i1 = 1 if P == 0 else 2
    T = (q1 - q0) * tw
    src = dy.reshape(-1)
    g0, g1 = G[0].reshape(-1), G[1].reshape(-1)
    zero = dy.dtype.type(0)
    plane, item = oh * ow, dy.shape[1] * oh * ow
    for m in range(m0, m1):
        for q in range(q0, q1):
            b, ty = q // th, q % th
            d = uintp((m - m0) * T + (q - q0) * tw)
            ra, rb = 2 * ty + i0, 2 * ty + i1 - 1
            inA, inB = ra < oh, rb < oh and i1 - i0 == 2
            sa = uintp(b * item + m * plane + ra * ow)
            sb = uintp(b * item + m * plane + rb * ow)
            if inA and inB:
                for tx in range(full):
                    u = uintp(2 * tx)
                    g0[d + uintp(tx)] = src[sa + u] + src[sb + u]
                    g1[d + uintp(tx)] = src[sa + u + uintp(1)] + src[sb + u + uintp(1)]
                if odd:
                    g0[d + uintp(full)] = src[sa + uintp(2 * full)] + src[sb + uintp(2 * full)]
                    g1[d + uintp(full)] = zero
            elif inA:
                for tx in range(full):
                    u = uintp(2 * tx)
                    g0[d + uintp(tx)] = src[sa + u]
                    g1[d + uintp(tx)] = src[sa + u + uintp(1)]
                if odd:
                    g0[d + uintp(full)] = src[sa + uintp(2 * full)]
                    g1[d + uintp(full)] = zero
            else:
                for tx in range(tw):
                    g0[d + uintp(tx)] = zero
                    g1[d + uintp(tx)] = zero


def _gradRowT(dy, G, P, th, tw, q0, q1, m0, m1):
    """_gradRow transposed: G[j, (q - q0) * tw + tx, m - m0], maps innermost (the B operand of dU^T = V G^T).
    Blocks of 16 maps: each tile row's dy rows of those maps stay in cache while their sums are stored 16 at a
    time."""
    oh, ow = dy.shape[2], dy.shape[3]
    i0 = 0 if P < 2 else 1
    i1 = 1 if P == 0 else 2
    zero = dy.dtype.type(0)
    for mb in range(m0, m1, 16):
        me = min(m1, mb + 16)
        for q in range(q0, q1):
            b, ty = q // th, q % th
            t0 = (q - q0) * tw
            ra, rb = 2 * ty + i0, 2 * ty + i1 - 1
            inA, inB = ra < oh, rb < oh and i1 - i0 == 2
            for tx in range(tw):
                g0 = G[0, t0 + tx]
                g1 = G[1, t0 + tx]
                c0, c1 = 2 * tx, 2 * tx + 1
                for m in range(mb, me):
                    um = uintp(m)
                    r = m - m0
                    if not inA:
                        g0[r] = zero
                        g1[r] = zero
                        continue
                    e = dy[b, um, ra, c0]
                    f = dy[b, um, ra, c1] if c1 < ow else zero
                    if inB:
                        e += dy[b, um, rb, c0]
                        if c1 < ow:
                            f += dy[b, um, rb, c1]
                    g0[r] = e
                    g1[r] = f


def _scatterRows(Z, y, bias, th, tw, q0, q1, o0, o1, i0, i1, init):
    """For the output rows i in [i0, i1) of each block, y[n, o, 2 ty + i, 2 tx + j] = Z[j, o - o0, t] + bias[o]
    (``init``) or += Z[j, o - o0, t], for maps o in [o0, o1) and tile rows q = n * th + ty in [q0, q1) (tile
    t = (q - q0) * tw + tx), inside the map. Flat indices, as _gradRow.

    Each output row goes in vectors of the two sums interleaved (``vectorops.interleavePairs``): a loop over a
    row's 7 tiles (case 5) stayed scalar. Case 5's scatters of a forward, one thread: 0.31 ms against 0.55 for
    that loop (``/tmp/s10/sc.py``, alternated, median of 15 rounds)."""
    oh, ow = y.shape[2], y.shape[3]
    T = Z.shape[2]  # the sums' pitch (tiles, padded)
    dst = y.reshape(-1)
    z0, z1 = Z[0].reshape(-1), Z[1].reshape(-1)
    plane, item = oh * ow, y.shape[1] * oh * ow
    lanes = VECTOR_BYTES // y.itemsize
    for o in range(o0, o1):
        bv = bias[o]
        b, ty = q0 // th, q0 % th  # of tile row q, stepped along with it
        d = (o - o0) * T
        for _ in range(q0, q1):
            t = b * item + o * plane + 2 * ty * ow
            for i in range(i0, i1):
                if 2 * ty + i >= oh:
                    break
                for k in range(0, ow, lanes):
                    interleavePairs(dst, t + i * ow + k, z0, z1, d + k // 2, min(lanes, ow - k), bv, not init)
            d += tw
            ty += 1
            if ty == th:
                ty, b = 0, b + 1


def _rowProducts(wt, ub, V, zb, y, bias, P, th, tw, q0, q1, mg, cg, blocks, zeros, edgeA, edgeB, edgeC):
    """The forward's work on one row of points P after its transformed input V (tile rows [q0, q1), group maps
    from mg, cg channels): per block of maps [m0, m1) (``blocks``, group-relative), the three points' kernel
    transforms and sgemm products into the two sums, added into the output rows P reaches (_scatterRows).

    One compiled call per row of points instead of ~30 from Python (each a few microseconds under the GIL,
    which the two threads share: case 5's forward on one thread, 8.3 ms a call, spent ~0.3 ms outside its
    kernels: the call's time less the kernels' own, timed by wrapping them)."""
    kp = _COUNT[P]
    T = V.shape[1]
    for b in range(blocks.shape[0]):
        m0, m1 = blocks[b, 0], blocks[b, 1]
        Z = zb[:2 * (m1 - m0) * T].reshape((2, m1 - m0, T))
        for Q in (1, 0, 2):  # the middle point sets both sums, the others add into the one they reach
            kk = kp * _COUNT[Q]
            U = ub[:(m1 - m0) * kk * cg].reshape((m1 - m0, kk * cg))
            _kernelPoint(wt, U, P, Q, mg + m0, mg + m1, 0, cg)
            start = kp * _QOFF[Q] * cg
            sgemm.columns(U, False, V[start:start + kk * cg], Z[1 if Q == 2 else 0], zeros, Q != 1, 0, T,
                           edgeA, edgeB, edgeC)
            if Q == 1:
                Z[1][...] = Z[0]
        _scatterRows(Z, y, bias, th, tw, q0, q1, mg + m0, mg + m1, 0 if P < 2 else 1, 1 if P == 0 else 2, P == 1)


def _rowProductsBlas(wt, ub, V, zb, y, bias, P, th, tw, q0, q1, mg, cg, blocks, zeros, edgeA, edgeB, edgeC):
    """_rowProducts with the products through BLAS (float64, or no sgemm on this host): the same steps, the
    compiled kernels called from Python (compiled code cannot call numpy's BLAS without SciPy, nor take the
    product as an argument). Same arguments as _rowProducts; zeros and the edge tiles go unused."""
    kp = _COUNT[P]
    T = V.shape[1]
    for m0, m1 in blocks:
        Z = leadingView(zb, (2, m1 - m0, T))
        for Q in (1, 0, 2):
            kk = kp * _COUNT[Q]
            U = leadingView(ub, (m1 - m0, kk * cg))
            _kernelPoint(wt, U, P, Q, mg + m0, mg + m1, 0, cg)
            start = kp * _QOFF[Q] * cg
            _gemm(U, V[start:start + kk * cg], Z[1 if Q == 2 else 0], Q != 1, False, None)
            if Q == 1:
                Z[1][...] = Z[0]
        _scatterRows(Z, y, bias, th, tw, q0, q1, mg + m0, mg + m1, 0 if P < 2 else 1, 1 if P == 0 else 2, P == 1)


if available:
    _componentRows = njit(cache=True, nogil=True, inline="always")(_componentRows)
    _inputRow = njit(cache=True, nogil=True)(_inputRow)
    _kernelPoint = njit(cache=True, nogil=True)(_kernelPoint)
    _tapMajor = njit(cache=True, nogil=True)(_tapMajor)
    _kernelPointAdjoint = njit(cache=True, nogil=True)(_kernelPointAdjoint)
    _inputRowAdjoint = njit(cache=True, nogil=True)(_inputRowAdjoint)
    _gradRow = njit(cache=True, nogil=True)(_gradRow)
    _gradRowT = njit(cache=True, nogil=True)(_gradRowT)
    _scatterRows = njit(cache=True, nogil=True)(_scatterRows)
    _rowProducts = njit(cache=True, nogil=True)(_rowProducts)


def _tiles(h, w, pad):
    """The output map (oh, ow) and its grid of 2x2 blocks (th, tw)."""
    oh, ow = outputShape((h, w), (3, 3), (2, 2), pad, (1, 1))
    return oh, ow, -(-oh // 2), -(-ow // 2)


# Bound of one part's transformed row of points (10 components of its tiles, or of its channels): the parts are
# cut to keep it under this, and there are at least _MIN_PARTS of them so that two threads have work.
PART_BYTES = 1 << 20
_MIN_PARTS = 2
# Maps per block in the forward: case 5's scratch under torch's (4 blocks of 64 maps: 3.8 MiB, tracemalloc;
# 2 of 128: 4.3, torch's scratch 4.2); the GEMMs of 128 ran 2% faster.
MAP_BLOCK = 64
# Rows of points in the order they are summed: the middle row reaches both output rows (it sets them), the
# others one each. Within a row, the middle point reaches both output columns (its product sets both sums),
# the others one each (their GEMMs add into that column's sum).
_ROWS = (1, 0, 2)


def _padded(tiles, itemsize):
    """The forward's row pitch for ``tiles`` tiles: with sgemm, a whole number of its narrowest tile (8 columns),
    whose last columns then run in place, not through its edge copies (case 5's (64 x 512) @ (512 x 196): 125 us,
    padded to 200: 116; sgemm alone, median of 300 calls, caches warm). BLAS (float64) gets the rows unpadded:
    nothing measured there, and its results keep their bits (OpenBLAS rounds a column's last bits by the width)."""
    return sgemm.wholeTiles(tiles) if sgemm.applies(np.dtype(f"f{itemsize}")) else tiles


def _tileParts(total, tw, cg, itemsize):
    """Forward: ranges of tile rows [(q0, q1)] of about equal size, fixed by the shape."""
    count = max(_MIN_PARTS, -(-total * 10 * cg * tw * itemsize // PART_BYTES))
    count = max(1, min(total, count))
    return ranges(total, count)


def _mapBlocks(og):
    """Forward: a part's maps in blocks of at most MAP_BLOCK (one block's kernel and sums at a time)."""
    count = -(-og // MAP_BLOCK)
    return ranges(og, count)


def _channelParts(groups, cg, T, itemsize):
    """Backward: [(group, c0, c1)], each group's channels in equal ranges whose transformed row (10 components,
    all T tiles) stays under PART_BYTES, at least _MIN_PARTS ranges in all, fixed by the shape."""
    count = max(-(-10 * cg * T * itemsize // PART_BYTES), -(-_MIN_PARTS // groups))
    count = max(1, min(cg, count))
    return [(g, c0, c1) for g in range(groups) for c0, c1 in ranges(cg, count)]


def _plan(direction, xShape, wShape, pad, groups, itemsize):
    """The parts of a call, its workers, the size of the buffer they share and of each worker's own three buffers,
    and of each worker's temporaries in the compiled kernels and sgemm (sizes in elements)."""
    n, c, h, w = xShape
    o = wShape[0]
    og, cg = o // groups, c // groups
    _, _, th, tw = _tiles(h, w, pad)
    if direction == "forward":
        parts = _tileParts(n * th, tw, cg, itemsize)
        rows = max(q1 - q0 for q0, q1 in parts)
        tp = _padded(rows * tw, itemsize)
        mb = max(m1 - m0 for m0, m1 in _mapBlocks(og))
        own = (10 * cg * tp, 4 * mb * cg, 2 * mb * tp)  # V of a row of points, U of a point, the two sums
        shared, depth = 9 * o * cg, 4 * cg
    else:
        T = n * th * tw
        parts = _channelParts(groups, cg, T, itemsize)
        cb = max(c1 - c0 for _, c0, c1 in parts)
        rows = n * th
        own = (2 * og * T, 10 * cb * T, 4 * og * cb)  # dM of a row of points, V (or dV), U (or dU^T) of a point
        shared, depth = (9 * o * cg, og) if direction == "backwardData" else (0, T)
    # The input transforms' rows (R, E) and sgemm's edge tiles.
    temporaries = 2 * (max(SPAN, rows * 4 * tw) + 4 + rows * max(1, SPAN // (rows * 4 * tw)))
    if sgemm.applies(np.dtype(f"f{itemsize}")):
        temporaries += sgemm.Scratch.elements(depth)
    return parts, chunkWorkers(len(parts)), shared, own, temporaries


def workspaceBytes(direction, xShape, wShape, pad, groups, itemsize=4):
    """Bytes of one call's scratch: the tap-major kernel, each worker's buffers and its kernels' temporaries."""
    _, workers, shared, own, temporaries = _plan(direction, xShape, wShape, pad, groups, itemsize)
    return (shared + workers * (sum(own) + temporaries)) * itemsize


def forward(x, w, bias, pad, groups):
    """The output (N, O, oh, ow): per part of tile rows and row of points, its transformed input, then per block
    of maps the three points' GEMMs into two sums, added into the output rows the row of points reaches."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    og, cg = o // groups, c // groups
    oh, ow, th, tw = _tiles(h, wd, pad)
    y = np.empty((n, o, oh, ow), dtype=x.dtype)
    if y.size == 0:
        return y
    xc, wc = np.ascontiguousarray(x), np.ascontiguousarray(w)
    biasv = biasVector(bias, o, x.dtype)
    dt = x.dtype
    parts, workers, _, own, _ = _plan("forward", x.shape, w.shape, pad, groups, x.itemsize)
    blocks = np.array(_mapBlocks(og), dtype=np.int64).reshape(-1, 2)
    nb = len(blocks)
    wt = workspace.get("s2-wt", (9, o, cg), dt)
    chunks = _TapMajorChunks(wc, wt, [(g * og + m0, g * og + m1) for g in range(groups) for m0, m1 in blocks])
    bufs = [[workspace.get(f"s2-{tag}{k}", (size,), dt) for tag, size in zip("vuz", own)] for k in range(workers)]
    fast = sgemm.applies(dt)
    rowProducts = _rowProducts if fast else _rowProductsBlas
    zeros = sgemm.biasRows(None, MAP_BLOCK) if fast else None
    scratch = [sgemm.Scratch().forDepth(4 * cg) if fast else (None,) * 3 for _ in range(workers)]  # edge tiles

    def part(k, item):
        (vb, ub, zb), (q0, q1) = bufs[k], item
        T = _padded((q1 - q0) * tw, x.itemsize)
        edges = scratch[k]
        first = k * nb // workers  # each worker starts on other maps, so that it makes their chunk itself
        for g in range(groups):
            for P in _ROWS:
                V = leadingView(vb, (_COUNT[P] * 5 * cg, T))
                _inputRow(xc, V, P, pad[0], pad[1], th, tw, q0, q1, g * cg, (g + 1) * cg, g * cg, cg)
                if chunks.made(g * nb, (g + 1) * nb):
                    rowProducts(wt, ub, V, zb, y, biasv, P, th, tw, q0, q1, g * og, cg, blocks, zeros, *edges)
                    continue
                for b in [*range(first, nb), *range(first)]:  # disjoint maps: the order changes no bits
                    chunks.need(g * nb + b)
                    rowProducts(wt, ub, V, zb, y, biasv, P, th, tw, q0, q1, g * og, cg, blocks[b:b + 1], zeros,
                                *edges)

    shareItems(part, parts, workers)
    return y


class _TapMajorChunks:
    """The forward's tap-major kernel, made a chunk of maps at a time by the threads that need it: the first
    thread to need a chunk makes it, the others wait for it. The workers start on different chunks, so that
    the copy runs on both threads, beside the input transform, instead of alone before them (case 5: 0.2-0.3 ms
    of 4.4, serial)."""

    def __init__(self, w, wt, ranges):
        self.w, self.wt, self.ranges = w, wt, ranges
        self.ready = [threading.Event() for _ in ranges]
        self.claimed = [False] * len(ranges)
        self.lock = threading.Lock()

    def made(self, i0, i1):
        """Whether chunks [i0, i1) are all made."""
        return all(event.is_set() for event in self.ready[i0:i1])

    def need(self, i):
        """Chunk i made (by this thread, or by the one that claimed it first)."""
        if self.ready[i].is_set():
            return
        with self.lock:
            mine = not self.claimed[i]
            self.claimed[i] = True
        if not mine:
            self.ready[i].wait()
            return
        try:
            m0, m1 = self.ranges[i]
            _tapMajor(self.w, self.wt, m0, m1, 0, self.w.shape[1])
        finally:  # a failure surfaces from this thread; the others must not wait for ever
            self.ready[i].set()


def _backwardPlan(direction, xShape, wShape, pad, groups, dtype):
    """What both backward directions start from: the group sizes, the tile grid (th, tw, tile rows, tiles), the
    ranges of channels, the workers and their buffers (gradient transform, transformed row, kernel or its
    gradient), and whether the products go through sgemm."""
    n, c, h, w = xShape
    og, cg = wShape[0] // groups, c // groups
    _, _, th, tw = _tiles(h, w, pad)
    parts, workers, _, own, _ = _plan(direction, xShape, wShape, pad, groups, np.dtype(dtype).itemsize)
    bufs = [[workspace.get(f"s2-{tag}{k}", (size,), dtype) for tag, size in zip("gvu", own)]
            for k in range(workers)]
    return og, cg, th, tw, n * th, n * th * tw, parts, workers, bufs, sgemm.applies(np.dtype(dtype))


def backwardData(dy, w, xShape, pad, groups):
    """The gradient of the input (xShape): per range of input channels and row of points, the gradient's
    transform of all maps, dV = U^T dM for the three points, the adjoint input transform added into dx."""
    if prod(xShape) == 0 or dy.size == 0:
        return np.zeros(xShape, dtype=dy.dtype)
    dx = np.empty(xShape, dtype=dy.dtype)  # each part zeroes its own channels (below)
    dyc, wc = np.ascontiguousarray(dy), np.ascontiguousarray(w)
    og, cg, th, tw, total, T, parts, workers, bufs, fast = _backwardPlan("backwardData", xShape, w.shape, pad,
                                                                          groups, dy.dtype)
    wt = workspace.get("s2-wt", (9, og * groups, cg), dy.dtype)

    def part(k, item):
        (gb, vb, ub), (g, c0, c1) = bufs[k], item
        nc = c1 - c0
        # Zeroed here, not by np.zeros before the threads start: split between them, and already in this thread's
        # cache when the first row of points adds into it.
        dx[:, g * cg + c0:g * cg + c1] = 0
        _tapMajor(wc, wt, g * og, (g + 1) * og, c0, c1)  # the part's own channels: no wait on other threads
        G = leadingView(gb, (2, og, T))
        scratch = sgemm.Scratch() if fast else None
        for P in _ROWS:
            kp = _COUNT[P]
            _gradRow(dyc, G, P, th, tw, 0, total, g * og, (g + 1) * og)
            dV = leadingView(vb, (kp * 5 * nc, T))
            for Q in (0, 2, 1):
                if Q == 1:  # the middle point's gradient is the sum of the other two's (G[0] is no longer needed)
                    G[0] += G[1]
                kk = kp * _COUNT[Q]
                U = leadingView(ub, (og, kk * nc))
                _kernelPoint(wt, U, P, Q, g * og, (g + 1) * og, c0, c1)
                start = kp * _QOFF[Q] * nc
                _gemm(U.T, G[1] if Q == 2 else G[0], dV[start:start + kk * nc], False, fast, scratch)
            _inputRowAdjoint(dV, dx, P, pad[0], pad[1], th, tw, 0, total, g * cg + c0, g * cg + c1, g * cg + c0, nc)

    shareItems(part, parts, workers)
    return dx


def backwardParams(x, dy, wShape, pad, groups):
    """The weight gradient (wShape): per range of input channels and row of points, its transformed input, the
    gradient's transform of all maps, dU^T = V dM^T for the three points, the adjoint kernel transform added
    into the range's columns of dw. The gradient's transform is made transposed (tiles by maps), so that dM^T is
    a B operand the tile kernel reads (sgemm, ~113 GFLOP/s on case 5's (256 x 392) @ (392 x 256) against single-
    threaded OpenBLAS's ~95 on dM V^T; the whole weight gradient ran 0.87-0.89 of its time, same process,
    caches warm or cold)."""
    dw = np.zeros(wShape, dtype=x.dtype)
    if x.size == 0 or dy.size == 0:
        return dw
    xc, dyc = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    og, cg, th, tw, total, T, parts, workers, bufs, fast = _backwardPlan("backwardParams", x.shape, wShape, pad,
                                                                          groups, x.dtype)

    def part(k, item):
        (gb, vb, ub), (g, c0, c1) = bufs[k], item
        nc = c1 - c0
        G = leadingView(gb, (2, T, og))
        rows = dw[g * og:(g + 1) * og]
        scratch = sgemm.Scratch() if fast else None
        for P in _ROWS:
            kp = _COUNT[P]
            V = leadingView(vb, (kp * 5 * nc, T))
            _inputRow(xc, V, P, pad[0], pad[1], th, tw, 0, total, g * cg + c0, g * cg + c1, g * cg + c0, nc)
            _gradRowT(dyc, G, P, th, tw, 0, total, g * og, (g + 1) * og)
            for Q in (0, 2, 1):
                if Q == 1:
                    G[0] += G[1]
                kk = kp * _COUNT[Q]
                dUT = leadingView(ub, (kk * nc, og))
                start = kp * _QOFF[Q] * nc
                _gemm(V[start:start + kk * nc], G[1] if Q == 2 else G[0], dUT, False, fast, scratch)
                _kernelPointAdjoint(dUT, rows, P, Q, c0, c1)

    shareItems(part, parts, workers)
    return dw


def _gemm(a, b, out, accumulate, fast, scratch):
    """out (+)= a @ b on this thread: the float32 tile kernel where it applies, else BLAS (float64: the
    gradient checks; its temporary for the sum is not worth a buffer)."""
    if fast:
        sgemm.gemm(a, b, out, accumulate=accumulate, scratch=scratch)
    elif accumulate:
        out += np.matmul(a, b)
    else:
        np.matmul(a, b, out=out)
