"""Backward-data of strided convolutions by stride phases: a gather and a GEMM per phase, no scatter-add.

Along an axis with stride s and padding p, forward reads x[o * s + t - p] for tap t. The gradient element
dx[s * i + a] (phase a in [0, s)) therefore only gets the taps t = r + s * m with r = (a + p) mod s, each
from dy[i + q - m] with q = (a + p) // s. Phase a of dx is a stride-1 correlation of dy with those taps,
flipped (m' = M - 1 - m reads dy[i + q - (M - 1) + m']): per phase of every axis, one im2col gather of dy
(rows = output channel x sub-kernel tap, zero outside dy) and one GEMM with the transposed sub-kernel,
written into a phase buffer and stored into dx's strided phase view (a phase no tap reaches is zero).
Every dx element is the product of one GEMM of a shape fixed by the convolution (not by the thread count):
deterministic on any threads.

The gather is one strided copy per phase tile: dy of one item is first copied into a zero-bordered buffer
whose rows are long enough for every phase's shifted reads, so each (channel, tap) row of the column matrix
is a contiguous run of it (no per-pixel bounds; the GEMM computes a few padding columns per row, dropped on
the store). Gathered volume per dy pixel is O * taps, where col2im's scatter writes C * taps (C = dx
channels), and the phase GEMMs have C/g rows where col2im's have C/g * taps: this wins only for O <= C, and
only for one item (several items run faster as col2im with whole items per thread, conv_col2im; see
``preferred`` for the measurements). 1-D, 2-D and 3-D (leading unit axes); dilation 1 only.
"""

import numpy as np

from PuzzleLib.Engines.cpu import conv_common
from PuzzleLib.Engines.cpu.conv_common import as5, evenStep, lead3, prod, tileBytes, workspace

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency
    njit = None

available = njit is not None


def applies(kernel, stride, dilation):
    return (available and 1 <= len(kernel) <= 3 and any(s > 1 for s in stride)
            and all(d == 1 for d in dilation))


def preferred(xShape, wShape, stride, dilation, groups):
    """Whether the phases beat GEMM + col2im: for one item of a 2-D or 3-D convolution with O <= C and C/g >= 128,
    where some kernel axis is longer than its stride (else there is nothing to gather, only copies).

    They gather O * taps values per dy pixel where col2im's GEMM writes and scatters C * taps, and their GEMMs
    (C/g rows) run slower than col2im's (C/g * taps rows), so they only ever win where O <= C, and with C/g
    rows enough for a GEMM near peak; a batch of several items runs faster still as col2im with whole items
    per thread (conv_col2im). Same process, directions interleaved, 2 threads, ms (medians of runs), shared
    col2im vs phases (vs items per thread): N1 128->128 s2 56x56 3.49 / 3.31 / 3.86 vs 2.95 / 2.81 / 3.55 (a
    loaded run 3.98 vs 4.30); N1 256->256 28x28 3.24 / 3.53 vs 3.94 / 3.24; N1 64->64 56x56 (not taken) 1.40 /
    1.15 / 1.33 vs 1.52 / 1.12 / 1.54; N1 64->64 g2 1.01 / 1.25 vs 1.11 / 1.22; N1 1-D 64->64 L4096 (not taken)
    0.98 / 0.84 vs 1.20 / 1.34; N8 128->128 28x28 7.4 vs 4.9 (4.7), N8 64->64 g2 2.0 vs 1.9 (1.2), case 5 (N8
    128->256) 9.4-10.0 vs 7.9-8.8 (6.5-7.1), case 3 (N8 3->64 k7, 21x col2im's volume) 28-36 vs 78-99 (19-21).
    One thread's CPU time (a loaded host) favours the phases for O <= C (N8 128->128 7.1 vs 8.1 / 8.1 ms)."""
    kernel = tuple(wShape[2:])
    return (applies(kernel, stride, dilation) and xShape[0] == 1 and len(kernel) >= 2
            and wShape[0] <= xShape[1] and xShape[1] // groups >= 128 and any(k > s for k, s in zip(kernel, stride)))


def axisPhases(size, k, s, p):
    """Per phase a of one axis: (dx count, first tap r, tap count M, dy start of m' = 0 at i = 0)."""
    phases = []
    for a in range(s):
        count = max(0, -(-(size - a) // s))
        r = (a + p) % s
        m = max(0, -(-(k - r) // s))
        phases.append((count, r, m, (a + p) // s - (m - 1)))
    return phases


def _fillPhaseKernel(w5, out, first, stride, msh, o0, o1):
    """Rows of output channels [o0, o1) of a phase's kernel, (O, taps, C/g) = per group (O/g * taps, C/g): the
    phase's taps first + stride * m, flipped. The GEMM reads it transposed, (C/g, O/g * taps), at no cost; this
    layout transposes one cache-sized (C/g, taps) block per output channel (case 5's four phases: 0.39 ms, the
    (C/g, O/g * taps) layout 0.74 ms)."""
    sub = w5[(slice(o0, o1), slice(None)) + tuple(slice(r, None, s) for r, s in zip(first, stride))]
    sub = sub[:, :, ::-1, ::-1, ::-1].reshape(o1 - o0, w5.shape[1], prod(msh))
    np.copyto(out[o0:o1], sub.transpose(0, 2, 1))


def backwardData(dy, w, xShape, stride, pad, groups):
    """dx by phases; each thread runs whole (item, phase, tile) units with BLAS single-threaded (runChunks).

    dy of one item is copied once into a zero-bordered buffer (per thread) large enough for every phase's
    reads: a phase's column matrix is then one strided copy (rows = output channel x tap, each a contiguous
    run of that buffer, shifted by the tap), no per-pixel bounds. Its GEMM computes the phase on the buffer's
    row pitch (the few extra columns per row are dropped when the tile is stored into dx's phase view).
    """
    n, o = dy.shape[:2]
    c = xShape[1]
    dx = np.empty(xShape, dtype=dy.dtype)
    dx5, dy5, w5 = as5(dx), as5(dy), as5(w)
    st, pd = lead3(stride), lead3(pad, 0)
    perAxis, lows, dims = _layout(dx5.shape[2:], dy5.shape[2:], w5.shape[2:], st, pd)
    plane = dims[1] * dims[2]
    pitch = _pitch(dims)
    og, cg = o // groups, c // groups
    limit = max(1, tileBytes() // 2)  # two threads' tiles in flight: within the call's bound
    phases, units, empty = [], [], []
    for index in np.ndindex(*st):
        ax = [perAxis[i][a] for i, a in enumerate(index)]
        cnt = tuple(e[0] for e in ax)
        msh = tuple(e[2] for e in ax)
        if min(cnt) == 0:
            continue
        if min(msh) == 0 or n == 0:  # no tap reaches this phase
            empty.append(index)
            continue
        taps = prod(msh)
        base = sum((e[3] - lo) * step for e, lo, step in zip(ax, lows, (plane, dims[2], 1)))
        p = len(phases)
        phases.append((index, cnt, msh, base, taps, tuple(e[1] for e in ax)))
        rowBytes = (o * taps + c) * dims[2] * dy.itemsize  # a row of the tile's columns and of its product
        for tile in _tiles(cnt, dims, rowBytes, limit):
            units.append((p, tile))
    for index in empty:
        dx5[(slice(None), slice(None)) + tuple(slice(a, None, s) for a, s in zip(index, st))] = 0
    if not units:
        return dx
    units = [(item, p, tile, _span(tile, dims) * o * phases[p][4]) for item in range(n) for p, tile in units]
    # Contiguous runs of about equal cost, one per thread (the split changes no result); item-major, so a
    # thread pads each of its items once.
    workers = conv_common.chunkWorkers(len(units))
    total = sum(u[-1] for u in units)
    runs, acc = [[] for _ in range(workers)], 0
    for unit in units:
        runs[min(workers - 1, acc * workers // max(total, 1))].append(unit)
        acc += unit[-1]
    # The phase kernels, each thread filling its range of output channels (as a serial step: 6% of case 5).
    kernels = [np.empty((o, ph[4], cg), dtype=dy.dtype) for ph in phases]
    bounds = [o * k // workers for k in range(workers + 1)]

    def prepare(k):
        for ph, kernel in zip(phases, kernels):
            _fillPhaseKernel(w5, kernel, ph[5], st, ph[2], bounds[k], bounds[k + 1])

    conv_common.runChunks(prepare, workers)
    colsSize = max(u[-1] for u in units)
    outSize = max(_span(u[2], dims) for u in units) * c
    buffers = [(workspace.get(f"phases-dy{k}", (o, pitch), dy.dtype),
                workspace.get(f"phases-cols{k}", (colsSize,), dy.dtype),
                workspace.get(f"phases-out{k}", (outSize,), dy.dtype)) for k in range(workers)]
    inner = tuple(slice(-lo, -lo + size) for lo, size in zip(lows, dy5.shape[2:]))
    size = dy.itemsize

    def work(k):
        padded, colsBuf, outBuf = buffers[k]
        current = -1
        for item, p, (d0, d1, h0, h1), _ in runs[k]:
            if item != current:
                padded.fill(0)
                padded[:, :dims[0] * plane].reshape((o,) + dims)[(slice(None),) + inner] = dy5[item]
                current = item
            index, cnt, msh, base, taps, _ = phases[p]
            wp = kernels[p].reshape(groups, og * taps, cg)
            span = _span((d0, d1, h0, h1), dims)
            cols = colsBuf[:o * taps * span].reshape((o,) + msh + (span,))
            view = np.lib.stride_tricks.as_strided(
                padded[:, base + d0 * plane + h0 * dims[2]:], shape=cols.shape,
                strides=(pitch * size, plane * size, dims[2] * size, size, size), writeable=False)
            np.copyto(cols, view)
            out = outBuf[:c * span].reshape(groups, cg, span)
            np.matmul(wp.transpose(0, 2, 1), cols.reshape(groups, og * taps, span), out=out)
            # Rows of whole planes (h0 = 0, h1 = cH) or part of one plane (d1 = d0 + 1).
            rows = dims[1] if d1 - d0 > 1 else h1 - h0
            grid = out.reshape(c, d1 - d0, rows, dims[2])[:, :, :h1 - h0, :cnt[2]]
            target = tuple(slice(a + s * lo, a + s * (hi - 1) + 1, s)
                           for a, s, lo, hi in zip(index, st, (d0, h0, 0), (d1, h1, cnt[2])))
            dx5[(item, slice(None)) + target] = grid

    conv_common.runChunks(work, workers)
    return dx


def _tiles(cnt, dims, rowBytes, limit):
    """A phase's tiles (d0, d1, h0, h1): whole planes of the padded grid while one fits ``limit``, else rows
    of one plane, in equal parts (a last tile of a row or two would run a thin GEMM)."""
    if cnt[0] > 1 and rowBytes * dims[1] <= limit:
        step = max(1, min(cnt[0], limit // (rowBytes * dims[1])))
        step = evenStep(cnt[0], step)
        return [(d0, min(cnt[0], d0 + step), 0, cnt[1]) for d0 in range(0, cnt[0], step)]
    step = max(1, min(cnt[1], limit // max(rowBytes, 1)))
    step = evenStep(cnt[1], step)
    return [(d0, d0 + 1, h0, min(cnt[1], h0 + step)) for d0 in range(cnt[0]) for h0 in range(0, cnt[1], step)]


def _span(tile, dims):
    """Columns of a tile's GEMM: whole planes of the padded grid, or its rows of one plane."""
    d0, d1, h0, h1 = tile
    return (d1 - d0) * dims[1] * dims[2] if d1 - d0 > 1 else (h1 - h0) * dims[2]


def _layout(dxSpatial, dySpatial, kernel, stride, pad):
    """Per axis: its phases (axisPhases), and the padded item's first index and extent, which span every index a
    phase reads (dy's own range included)."""
    perAxis = [axisPhases(size, k, s, p) for size, k, s, p in zip(dxSpatial, kernel, stride, pad)]
    lows, dims = [], []
    for axisList, size in zip(perAxis, dySpatial):
        used = [(start, start + count + m - 1) for count, _, m, start in axisList if count and m]
        low = min([0] + [a for a, _ in used])
        lows.append(low)
        dims.append(max([size] + [b for _, b in used]) - low)
    return perAxis, lows, tuple(dims)


def _pitch(dims):
    """A padded item's length: a tile's dropped rows and columns read past its end, by less than a row when
    tiles are rows of one plane, by less than a plane when they are whole planes (3-D only)."""
    plane = dims[1] * dims[2]
    return dims[0] * plane + (plane if dims[0] > 1 else dims[2])


def workspaceBytes(xShape, dyShape, wShape, stride, pad, itemsize):
    """The phase kernels (the weights' size), and per thread a tile (half the call's tile bound: columns and
    products) and a padded item of dy; the threads at most one per item and phase."""
    _, _, dims = _layout(lead3(xShape[2:]), lead3(dyShape[2:]), lead3(wShape[2:]), lead3(stride), lead3(pad, 0))
    padded = dyShape[1] * _pitch(dims) * itemsize
    workers = conv_common.chunkWorkers(xShape[0] * prod(stride))
    return prod(wShape) * itemsize + workers * (conv_common.tileBytesFor(prod(xShape) * itemsize) // 2 + padded)
