"""Winograd F(6, 3) for 1-D convolutions with 3-tap kernels and unit stride, all three directions.

Each run of 6 outputs is computed from an 8-sample input window (tile t of an item reads input samples
6 t - pad .. 6 t - pad + 7): v = B^T d (input transform), u = G g (kernel transform), then for each of
the 8 transform points one GEMM M[k] = U[k] (O, C) @ V[k] (C, tiles), and y = A^T m (output
transform). That is 8 multiplies per 6 outputs and input channel instead of 18: the GEMM work drops
2.25x. The tiles of all batch items are laid end to end (tile q = item * tilesPerItem + t), so one GEMM
per point serves a chunk of tiles across items (no loop over batch items).
Backward-data of a stride-1 convolution is the forward convolution of the gradient with the flipped,
transposed kernel and padding 2 - pad (negative padding crops), so the same code serves it.
The weight gradient is the adjoint: dW = G^T [sum over tiles (A g) * (B^T d)], 8 GEMMs (O, tiles) @ (tiles, C).
Undilated only (``applies``): dilated 1-D convolutions run im2col. Running each output phase (every d-th
output) as an undilated convolution of one input phase was measured on N8 64->64 L4096 (a loaded host,
same-process interleaved, vs im2col): d=2 forward 14.7 vs 30.1 ms and backward-data 9.2 vs 13.1 (minima),
but backward-params 21.1 vs 19.3, and d=4 tied or lost; it was not kept.

The transforms are numba loops over tiles (cache on disk). The input transform first splits a channel's
samples into their six phases modulo 6 (one interleaved load, vectorised), so that the transform itself
reads unit-stride: samples 6 and 7 of tile t are phases 0 and 1 of tile t + 1. The transform constants
are hoisted into scalars before the loops (loaded from an array inside them, LLVM could not prove the
stores do not alias them and left the loops scalar: 2.4 vs 1.5 ms on 8 x 64 x 4096). No fast-math: every
value is computed in the order written, so results are bit-identical on every run.

Chunks of tiles are fixed by the shape alone (not by the thread count) and dealt to the threads whole,
each thread with a single-threaded BLAS (conv_common.runChunks); the weight gradient sums two fixed
halves of the chunks separately and adds them at the end, so no result depends on the thread count.

Accuracy: the points 0, +-1, +-2, +-1/2 bring coefficients up to 32 (and 1/90 in G), which amplify rounding.
Measured against a float64 reference (standard normal data, 3 to 512 input channels, every direction),
max |error| / max |result| was at most 3e-6 in float32 and 7e-15 in float64 (im2col: about 5e-7 and
1e-15). The tests assert the stated bound, 2e-5 (float32) and 1e-13 (float64).
"""


import numpy as np

from PuzzleLib.Engines.cpu.conv_common import biasVector, chunkWorkers, dealParts, ranges, runs, shareItems, workspace

try:
    from numba import njit, uintp
except ImportError:  # pragma: no cover - numba is a dependency; without it the algorithm is unavailable
    njit = None

available = njit is not None

M_OUT, TILE, POINTS = 6, 8, 8

# Kernel transform G (points 0, 1, -1, 2, -2, 1/2, -1/2, infinity); B^T and A^T, written out in the loops
# below, are here for the tests and for reading them.
G = np.array([
    [1, 0, 0],
    [-2 / 9, -2 / 9, -2 / 9],
    [-2 / 9, 2 / 9, -2 / 9],
    [1 / 90, 1 / 45, 2 / 45],
    [1 / 90, -1 / 45, 2 / 45],
    [32 / 45, 16 / 45, 8 / 45],
    [32 / 45, -16 / 45, 8 / 45],
    [0, 0, 1],
], dtype=np.float64)

BT = np.array([
    [1, 0, -21 / 4, 0, 21 / 4, 0, -1, 0],
    [0, 1, 1, -17 / 4, -17 / 4, 1, 1, 0],
    [0, -1, 1, 17 / 4, -17 / 4, -1, 1, 0],
    [0, 1 / 2, 1 / 4, -5 / 2, -5 / 4, 2, 1, 0],
    [0, -1 / 2, 1 / 4, 5 / 2, -5 / 4, -2, 1, 0],
    [0, 2, 4, -5 / 2, -5, 1 / 2, 1, 0],
    [0, -2, 4, 5 / 2, -5, -1 / 2, 1, 0],
    [0, -1, 0, 21 / 4, 0, -21 / 4, 0, 1],
], dtype=np.float64)
AT = np.array([[p ** i for p in (0, 1, -1, 2, -2, 1 / 2, -1 / 2)] + [1 if i == 5 else 0] for i in range(6)],
              dtype=np.float64)

# Bound of the V and M buffers per thread: a chunk stays in its core's L2 (1 MiB here) or close to it
# between the transforms and the GEMMs (N8 64->64 L4096 forward, same-process interleaved, three runs:
# 0.5 / 1 / 2 MiB 7.0 / 7.1 / 6.8 ms; minima 3.50 / 3.52 / 3.40).
CHUNK_BYTES = 2 << 20
# The weight gradient's bound: larger chunks ran its GEMMs (whose transposed operand OpenBLAS packs more
# slowly) about 7% faster (N8 64->64 L4096, same-process interleaved: 9.3 vs 10.0 ms with 1 MiB; 8 MiB no
# better), and its scratch stays far under torch's peak there (~8 vs 16 MiB).
GRAD_CHUNK_BYTES = 4 << 20
# From this many tiles on, at least two chunks (one per thread) even when one would fit CHUNK_BYTES.
_SPLIT_TILES = 256
# Fixed parts of the weight gradient (partial sums added at the end; see module docstring).
_GRAD_PARTS = 2


def applies(kernel, stride, dilation):
    return tuple(kernel) == (3,) and tuple(stride) == (1,) and tuple(dilation) == (1,)


def _constants(dtype):
    # Typed like the data, so float32 stays float32 (a Python literal would promote to float64).
    return np.array([21 / 4, 17 / 4, 1 / 2, 1 / 4, 5 / 2, 5 / 4, 2, 4, 5, 8, 16, 32, 1 / 8, 1 / 16, 1 / 32],
                    dtype=dtype)


def _bt(d0, d1, d2, d3, d4, d5, d6, d7, k):
    """B^T d, with pairs of rows sharing their even and odd halves."""
    k21, k17, half, quarter, k5h, k5q, two, four, five = k
    a = d2 + d6 - k17 * d4
    b = d1 + d5 - k17 * d3
    c = quarter * d2 - k5q * d4 + d6
    e = half * d1 - k5h * d3 + two * d5
    f = four * d2 - five * d4 + d6
    g = two * d1 - k5h * d3 + half * d5
    return ((d0 - d6) + k21 * (d4 - d2), a + b, a - b, c + e, c - e, f + g, f - g, (d7 - d1) + k21 * (d3 - d5))


def _inputTransform(x, V, pad, tiles, q0, q1, c0, c1, cst):
    """V[k, c - c0, q - q0] = (B^T d)[k] for tile q = item * tiles + t of channel c, d = x[item, c, 6 t - pad + j]
    (zero outside the input)."""
    size = x.shape[2]
    zero = cst[0] - cst[0]
    k = (cst[0], cst[1], cst[2], cst[3], cst[4], cst[5], cst[6], cst[7], cst[8])
    first = -(-pad // 6)                                             # first tile whose window starts in bounds
    stop = (size + pad - 8) // 6 + 1 if size + pad - 8 >= 0 else 0   # tiles before it end in bounds
    D = np.empty((6, q1 - q0 + 1), dtype=x.dtype)
    E = np.empty(8, dtype=x.dtype)                                   # an edge tile's window
    for c in range(c0, c1):
        cc = c - c0
        q = q0
        while q < q1:
            item, t0 = q // tiles, q % tiles
            t1 = min(tiles, t0 + q1 - q)
            col = q - q0 - t0                                        # V column of tile t: col + t
            row = x[item, c]
            ta = min(t1, max(t0, first))
            tb = max(ta, min(t1, stop))
            for side in range(2):                                    # edge tiles: bounds-checked reads
                lo, hi = (t0, ta) if side == 0 else (tb, t1)
                for t in range(lo, hi):
                    s = 6 * t - pad
                    for j in range(8):
                        E[j] = row[s + j] if 0 <= s + j < size else zero
                    v = _bt(E[0], E[1], E[2], E[3], E[4], E[5], E[6], E[7], k)
                    for j in range(8):
                        V[j, cc, col + t] = v[j]
            if tb > ta:
                # The six phases of the interior windows: D[r, i] = row[6 (ta + i) + r - pad], one more
                # tile's phases 0 and 1 at the end (samples 6 and 7 of the last window).
                base = uintp(6 * ta - pad)
                for i in range(tb - ta):
                    s = base + uintp(6 * i)
                    D[0, i] = row[s]
                    D[1, i] = row[s + uintp(1)]
                    D[2, i] = row[s + uintp(2)]
                    D[3, i] = row[s + uintp(3)]
                    D[4, i] = row[s + uintp(4)]
                    D[5, i] = row[s + uintp(5)]
                s = base + uintp(6 * (tb - ta))
                D[0, tb - ta] = row[s]
                D[1, tb - ta] = row[s + uintp(1)]
                o = col + ta
                for i in range(tb - ta):
                    v0, v1, v2, v3, v4, v5, v6, v7 = _bt(D[0, i], D[1, i], D[2, i], D[3, i], D[4, i], D[5, i],
                                                         D[0, i + 1], D[1, i + 1], k)
                    u = uintp(o + i)
                    V[0, cc, u] = v0
                    V[1, cc, u] = v1
                    V[2, cc, u] = v2
                    V[3, cc, u] = v3
                    V[4, cc, u] = v4
                    V[5, cc, u] = v5
                    V[6, cc, u] = v6
                    V[7, cc, u] = v7
            q += t1 - t0


def _at(m0, m1, m2, m3, m4, m5, m6, m7, bv, k):
    """A^T m + bias, with pairs of points sharing their sums and differences."""
    half, quarter, two, four, eight, sixteen, thirtytwo, eighth, sixteenth, thirtysecond = k
    a1, a2 = m1 + m2, m1 - m2
    b1, b2 = m3 + m4, m3 - m4
    g1, g2 = m5 + m6, m5 - m6
    return (m0 + a1 + b1 + g1 + bv, a2 + two * b2 + half * g2 + bv, a1 + four * b1 + quarter * g1 + bv,
            a2 + eight * b2 + eighth * g2 + bv, a1 + sixteen * b1 + sixteenth * g1 + bv,
            a2 + thirtytwo * b2 + thirtysecond * g2 + m7 + bv)


def _outputTransform(Mb, y, bias, tiles, q0, q1, o0, o1, cst):
    """y[item, o, 6 t + i] = (A^T m)[i] + bias[o] for tile q = item * tiles + t (outputs past the end dropped);
    m = Mb[:, o - o0, q - q0]."""
    size = y.shape[2]
    k = (cst[2], cst[3], cst[6], cst[7], cst[9], cst[10], cst[11], cst[12], cst[13], cst[14])
    full = size // 6
    for o in range(o0, o1):
        oc = o - o0
        bv = bias[o]
        q = q0
        while q < q1:
            item, t0 = q // tiles, q % tiles
            t1 = min(tiles, t0 + q1 - q)
            col = q - q0 - t0
            row = y[item, o]
            tf = max(t0, min(t1, full))
            for t in range(t0, tf):
                u = uintp(col + t)
                r0, r1, r2, r3, r4, r5 = _at(Mb[0, oc, u], Mb[1, oc, u], Mb[2, oc, u], Mb[3, oc, u], Mb[4, oc, u],
                                             Mb[5, oc, u], Mb[6, oc, u], Mb[7, oc, u], bv, k)
                s = uintp(6 * t)
                row[s] = r0
                row[s + uintp(1)] = r1
                row[s + uintp(2)] = r2
                row[s + uintp(3)] = r3
                row[s + uintp(4)] = r4
                row[s + uintp(5)] = r5
            for t in range(tf, t1):                                  # the last, partial tile
                u = col + t
                r = _at(Mb[0, oc, u], Mb[1, oc, u], Mb[2, oc, u], Mb[3, oc, u], Mb[4, oc, u], Mb[5, oc, u],
                        Mb[6, oc, u], Mb[7, oc, u], bv, k)
                for i in range(6):
                    if 6 * t + i < size:
                        row[6 * t + i] = r[i]
            q += t1 - t0


def _ag(g0, g1, g2, g3, g4, g5, k):
    """A g (the adjoint of the output transform), even and odd halves shared."""
    half, quarter, two, four, eight, sixteen, thirtytwo, eighth, sixteenth, thirtysecond = k
    e1, o1 = g0 + g2 + g4, g1 + g3 + g5
    e2, o2 = g0 + four * g2 + sixteen * g4, two * g1 + eight * g3 + thirtytwo * g5
    e3, o3 = g0 + quarter * g2 + sixteenth * g4, half * g1 + eighth * g3 + thirtysecond * g5
    return g0, e1 + o1, e1 - o1, e2 + o2, e2 - o2, e3 + o3, e3 - o3, g5


def _gradTransform(dy, Mg, tiles, q0, q1, o0, o1, cst):
    """Mg[k, o - o0, q - q0] = (A g)[k] for the gradient run g = dy[item, o, 6 t + i] (zero past the end)."""
    size = dy.shape[2]
    zero = cst[0] - cst[0]
    k = (cst[2], cst[3], cst[6], cst[7], cst[9], cst[10], cst[11], cst[12], cst[13], cst[14])
    full = size // 6
    E = np.empty(6, dtype=dy.dtype)                                  # the last, partial run
    for o in range(o0, o1):
        oc = o - o0
        q = q0
        while q < q1:
            item, t0 = q // tiles, q % tiles
            t1 = min(tiles, t0 + q1 - q)
            col = q - q0 - t0
            row = dy[item, o]
            tf = max(t0, min(t1, full))
            for t in range(t0, tf):
                s = uintp(6 * t)
                m0, m1, m2, m3, m4, m5, m6, m7 = _ag(row[s], row[s + uintp(1)], row[s + uintp(2)], row[s + uintp(3)],
                                                     row[s + uintp(4)], row[s + uintp(5)], k)
                u = uintp(col + t)
                Mg[0, oc, u] = m0
                Mg[1, oc, u] = m1
                Mg[2, oc, u] = m2
                Mg[3, oc, u] = m3
                Mg[4, oc, u] = m4
                Mg[5, oc, u] = m5
                Mg[6, oc, u] = m6
                Mg[7, oc, u] = m7
            for t in range(tf, t1):
                for i in range(6):
                    E[i] = row[6 * t + i] if 6 * t + i < size else zero
                m = _ag(E[0], E[1], E[2], E[3], E[4], E[5], k)
                for j in range(8):
                    Mg[j, oc, col + t] = m[j]
            q += t1 - t0


if available:
    _bt = njit(cache=True, nogil=True, inline="always")(_bt)
    _at = njit(cache=True, nogil=True, inline="always")(_at)
    _ag = njit(cache=True, nogil=True, inline="always")(_ag)
    _inputTransform = njit(cache=True, nogil=True)(_inputTransform)
    _outputTransform = njit(cache=True, nogil=True)(_outputTransform)
    _gradTransform = njit(cache=True, nogil=True)(_gradTransform)


def kernelTransform(w, groups):
    """U (8, groups, O // groups, C // groups) = G g for every (o, c)."""
    o, cg = w.shape[:2]
    u = np.tensordot(G.astype(w.dtype), w, axes=([1], [2]))       # (8, O, Cg)
    return np.ascontiguousarray(u).reshape(POINTS, groups, o // groups, cg)


def _chunks(total, cg, og, itemsize, limit=None):
    """Tile ranges [(q0, q1)] of equal size whose V and M buffers fit ``limit`` bytes, an even count (two
    threads get equal shares), at least two from _SPLIT_TILES tiles on; fixed by the shape alone."""
    perTile = POINTS * (cg + og) * itemsize
    limit = CHUNK_BYTES if limit is None else limit
    count = max(-(-total // max(1, limit // perTile)), 2 if total >= _SPLIT_TILES else 1)
    count = min(total, count + count % 2) if total > 1 else 1
    return ranges(total, count)


def workspaceBytes(xShape, o, pad, itemsize=4, groups=1, grad=False):
    """Bytes of the V and M buffers (all threads) of forward (backward-data: with its own shapes), or of
    the weight gradient with ``grad`` (plus its two partial sums of dU)."""
    n, c, size = xShape
    cg, og = c // groups, o // groups
    out = size + 2 * pad - 2
    if n == 0 or out <= 0:
        return 0
    chunks = _chunks(n * -(-out // M_OUT), cg, og, itemsize, GRAD_CHUNK_BYTES if grad else None)
    step = max(q1 - q0 for q0, q1 in chunks)
    threads = chunkWorkers(len(chunks))
    extra = _GRAD_PARTS * POINTS * o * cg * itemsize if grad else 0
    # The input transform's phase scratch (numba-allocated, per thread).
    return threads * (POINTS * (cg + og) + 6) * step * itemsize + extra


def _scalar(v):
    return v[0] if isinstance(v, (tuple, list)) else v


def forward(x, w, bias, pad, groups):
    """Forward 3-tap stride-1 convolution of x (N, C, L) with w (O, C // groups, 3): output i reads input samples
    i - p .. i - p + 2 (zero outside); pad (p,) may be negative (the output is then cropped)."""
    n, c, size = x.shape
    o = w.shape[0]
    p = _scalar(pad)
    out = size + 2 * p - 2
    y = np.empty((n, o, max(out, 0)), dtype=x.dtype)
    if n == 0 or out <= 0 or o == 0:
        return y
    tiles = -(-out // M_OUT)
    cg, og = c // groups, o // groups
    u = kernelTransform(w, groups)
    biasv = biasVector(bias, o, x.dtype)
    xc = np.ascontiguousarray(x)
    cst = _constants(x.dtype)
    chunks = _chunks(n * tiles, cg, og, x.itemsize)
    workers = chunkWorkers(len(chunks))
    step = max(q1 - q0 for q0, q1 in chunks)
    # Buffers are taken here, in the calling thread (the workspace is not thread-safe).
    bufs = [(workspace.get(f"wino1d-v{k}", (POINTS * cg * step,), x.dtype),
             workspace.get(f"wino1d-m{k}", (POINTS * og * step,), x.dtype)) for k in range(workers)]
    # Each thread takes the next chunk as it finishes one (shareItems), so a thread the host slows does not hold
    # back a fixed half (no difference measured on a steady load: 7.17 vs 7.21 ms). Every chunk writes its own
    # outputs the same way whichever thread runs it.

    def work(k, chunk):
        vb, mb = bufs[k]
        q0, q1 = chunk
        span = q1 - q0
        v, m = vb[:POINTS * cg * span].reshape(POINTS, cg, span), mb[:POINTS * og * span].reshape(POINTS, og, span)
        for gi in range(groups):
            _inputTransform(xc, v, p, tiles, q0, q1, gi * cg, (gi + 1) * cg, cst)
            np.matmul(u[:, gi], v, out=m)
            _outputTransform(m, y, biasv, tiles, q0, q1, gi * og, (gi + 1) * og, cst)

    shareItems(work, chunks, workers)
    return y


def backwardData(dy, w, xShape, pad, groups):
    from PuzzleLib.Engines.cpu.conv_im2col import flippedKernel

    dx = forward(dy, flippedKernel(w, groups), None, 2 - _scalar(pad), groups)
    assert dx.shape == tuple(xShape)
    return dx


def backwardParams(x, dy, wShape, pad, groups):
    """Weight gradient (O, C // groups, 3): dW = G^T [sum over tiles (A g) * (B^T d)].

    8 GEMMs per chunk, (O/g, tiles) @ (tiles, C/g), summed chunk by chunk in a fixed order into one of two
    partial sums (the first and second half of the chunks), added at the end.
    """
    o, cg = dy.shape[1], x.shape[1] // groups
    total = _gradU(x, dy, _scalar(pad), groups)
    # dW[o, c, j] = sum_k G[k, j] dU[k, o, c]
    dw = np.tensordot(G.T.astype(x.dtype), total.reshape(POINTS, o * cg), axes=([1], [0]))  # (3, O * Cg)
    return np.ascontiguousarray(dw.reshape(3, o, cg).transpose(1, 2, 0)).reshape(wShape)


def _gradU(x, dy, p, groups):
    """sum over tiles (A g) * (B^T d): (8, groups, O/g, C/g), the input read with padding p (undilated)."""
    n, c, size = x.shape
    o, out = dy.shape[1], dy.shape[2]
    og, cg = o // groups, c // groups
    du = np.zeros((_GRAD_PARTS, POINTS, groups, og, cg), dtype=x.dtype)
    if n > 0 and out > 0 and o > 0 and c > 0:
        tiles = -(-out // M_OUT)
        xc, dyc = np.ascontiguousarray(x), np.ascontiguousarray(dy)
        cst = _constants(x.dtype)
        chunks = _chunks(n * tiles, cg, og, x.itemsize, GRAD_CHUNK_BYTES)
        parts = runs(chunks, _GRAD_PARTS)
        workers = chunkWorkers(min(_GRAD_PARTS, len(chunks)))
        step = max(q1 - q0 for q0, q1 in chunks)
        bufs = [(workspace.get(f"wino1d-v{k}", (POINTS * cg * step,), x.dtype),
                 workspace.get(f"wino1d-m{k}", (POINTS * og * step,), x.dtype),
                 workspace.get(f"wino1d-t{k}", (POINTS, og, cg), x.dtype)) for k in range(workers)]

        def work(k, r):
            vb, mb, tmp = bufs[k]
            for q0, q1 in parts[r]:
                span = q1 - q0
                v = vb[:POINTS * cg * span].reshape(POINTS, cg, span)
                mg = mb[:POINTS * og * span].reshape(POINTS, og, span)
                for gi in range(groups):
                    _inputTransform(xc, v, p, tiles, q0, q1, gi * cg, (gi + 1) * cg, cst)
                    _gradTransform(dyc, mg, tiles, q0, q1, gi * og, (gi + 1) * og, cst)
                    np.matmul(mg, v.transpose(0, 2, 1), out=tmp)
                    du[r, :, gi] += tmp

        dealParts(work, _GRAD_PARTS, workers)
    total = du[0]
    for r in range(1, _GRAD_PARTS):
        total += du[r]
    return total
