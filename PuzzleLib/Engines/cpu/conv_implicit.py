"""Forward convolution as an implicit GEMM: sgemm's tile reading the input in place, no im2col buffer.

Each output row of each item is cut into tiles of 32 (or 16, or 8) adjacent pixels; for each tile, every panel of
8 output maps is one sgemm tile: (8 maps, depth) packed weights @ (depth, pixels), depth = C/g * taps. Row k of
the right operand is tap k's input for those pixels, which is contiguous once x's last axis is de-interleaved by
its stride (``_phased``, with the padding written out as zeros): the tile reads it in place through a table of
tap offsets (``_rowTapOffsets``), where im2col would first copy it into a column buffer. A tile's right operand
(depth x 32 floats) stays in L1 while the panels of maps go over it, and its results are whole rows of y with
the bias added.

Where it wins: short receptive fields on long output rows, as in a network's stem. Same process, interleaved,
2 threads, float32, ms, im2col (tiled gather + sgemm) vs here: N8 3->64 224x224 k7 s2 p3 (case 3) 12.6 vs 10.3;
3->32 224x224 k3 9.3 vs 7.7; 16->32 112x112 k3 s2 2.8 vs 2.5. It loses on deep fields over short rows, where
im2col's gather is cheap next to its GEMMs and the tiles are thin: 64->128 56x56 k3 s2 (28-pixel rows, depth
576) 6.0 vs 6.8; 128->256 28x28 k3 s2 (case 5) 6.0 vs 7.6.

The weight gradient reads the same two operands along output rows, x de-interleaved and dy in place, and
reduces over the pixels: sgemm.dotTile keeps 16 lane partial sums for each of 6 taps by 4 maps, in memory between
units of rows, added up at the end (``backwardParams``; figures in backwardParamsPreferred).

Any stride, dilation, padding and groups, 1-D to 3-D. Float32 (sgemm.applies). Each forward output is one chain
of FMAs over the taps in order, whichever thread runs its row; the weight gradient's units are cut into two fixed
parts, each summed in order into its own partial sums: the same bits on any number of threads.
"""

import numpy as np

from PuzzleLib.Engines.cpu import conv_common, sgemm
from PuzzleLib.Engines.cpu.conv_common import outputShape, parallel, prod, workspace

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; without it the algorithm is unavailable
    njit = None

available = njit is not None

# Bounds of preferred(): the deepest receptive field (C/g * taps) and the shortest output rows measured to win,
# in the forward and in the weight gradient (backwardParamsPreferred).
MAX_DEPTH = 256
MIN_ROW = 32
DW_MIN_ROW = 56


def preferred(xShape, wShape, stride, pad, dilation, groups, dtype):
    """Whether im2col's forward runs here instead (see the module's figures)."""
    if not (available and sgemm.applies(np.dtype(dtype)) and 3 <= len(xShape) <= 5):
        return False
    depth = xShape[1] // groups * prod(wShape[2:])
    rowLen = outputShape(xShape[2:], wShape[2:], stride, pad, dilation)[-1]
    return depth <= MAX_DEPTH and rowLen >= MIN_ROW


def workspaceBytes(xShape, wShape, stride, pad, dilation, groups, itemsize=4):
    """x padded and de-interleaved (_phased; or one item per thread, _forwardPlan) and the packed weights
    (sgemm.packGroups)."""
    og = wShape[0] // groups
    out = outputShape(xShape[2:], wShape[2:], stride, pad, dilation)
    units = xShape[0] * prod(out[:-1])
    shape = _phasedShape(xShape, pad, stride[-1])
    count, itemSize, own = _forwardPlan(units, units * out[-1] * prod(wShape), shape, itemsize)
    phased = count * (itemSize + _SLACK) * itemsize if own else _phasedBytes(xShape, stride, pad, itemsize)
    return phased + sgemm.packedSize((groups, og, prod(wShape[1:]))) * itemsize


def _phasedBytes(xShape, stride, pad, itemsize):
    s = stride[-1]
    lead = prod(size + 2 * p for size, p in zip(xShape[2:-1], pad[:-1]))
    return (prod(xShape[:2]) * s * lead * -(-(xShape[-1] + 2 * pad[-1]) // s) + _SLACK) * itemsize


def forward(x, w, bias, stride, pad, dilation, groups):
    """y = conv(x, w) + bias by (maps, pixels) tiles: 8 maps (packed weights) by up to 32 adjacent pixels of an
    output row, B's rows read in place from x de-interleaved by the last axis' stride (unit steps along a row).
    Output rows are dealt out to the threads in two contiguous runs."""
    n, c = x.shape[:2]
    o = w.shape[0]
    kernel = tuple(w.shape[2:])
    out = outputShape(x.shape[2:], kernel, stride, pad, dilation)
    y = np.empty((n, o) + out, dtype=x.dtype)
    if n * prod(out) == 0 or o == 0:
        return y
    s = stride[-1]
    shape = _phasedShape(x.shape, pad, s)
    og, cg = o // groups, c // groups
    taps = _rowTapOffsets(shape[1:], kernel, dilation, cg, s)
    rows = _rowOffsets(shape[3:], out[:-1], stride[:-1])
    panels = sgemm.packGroups(w.reshape(groups, og, -1), workspace.get("implicit-panels",
                                                                        (sgemm.packedSize((groups, og, taps.size)),),
                                                                        x.dtype))
    biases = [sgemm.biasRows(None if bias is None else np.ravel(bias)[g * og:(g + 1) * og], og) for g in range(groups)]
    groupSize = cg * prod(shape[2:])
    yFlat = y.reshape(-1)
    units = n * rows.size
    pixels = prod(out)
    work = units * out[-1] * o * taps.size
    count, itemSize, own = _forwardPlan(units, work, shape, x.itemsize)
    if own:  # a buffer of one item per thread (see OWN_ITEM_BYTES), taken here (the workspace is not thread-safe)
        buffers = [workspace.get(f"implicit-item{k}", (itemSize + _SLACK,), x.dtype) for k in range(count)]
        starts = [lo for lo, _ in conv_common.ranges(units, count)]  # the first row of each thread's run
    else:
        phased = _phased(x, pad, s).reshape(-1)

    def products(source, i0, u0, u1, scratch):
        """Rows [u0, u1) counted from item i0's first, x's items from i0 de-interleaved in ``source``."""
        for g in range(groups):
            _rowUnits(source, itemSize, g * groupSize, taps, rows, panels[g], biases[g], yFlat[i0 * o * pixels:],
                      o * pixels, g * og * pixels, pixels, out[-1], og, u0, u1, scratch)

    def run(u0, u1):
        scratch = np.empty((sgemm.MR, sgemm.NR), dtype=x.dtype)
        if not own:
            products(phased, 0, u0, u1, scratch)
            return
        flat = buffers[starts.index(u0)]
        flat.fill(0)  # the padding and the slack, once: each item then overwrites the interior only
        item = flat[:itemSize].reshape((1,) + shape[1:])
        for i in range(u0 // rows.size, -(-u1 // rows.size)):
            _phaseItems(x, i, i + 1, item, pad, s)
            first = i * rows.size
            products(flat, i, max(u0, first) - first, min(u1, first + rows.size) - first, scratch)

    parallel(run, units, work)
    return y


# Forward: items whose de-interleaved copy is at least this large are copied by the thread whose rows read them,
# one at a time into a buffer of its own, just before those rows: no pass over all of x before the products, and
# the item is still in cache when its rows read it (same process, old and new alternated, caches warm or cold,
# four runs: case 3 0.94-0.99 of the time of phasing all of x first, N8 3->64 224x224 k3 0.95-0.98). Smaller
# items are all copied first, as before: their copies are short numpy loops that keep the GIL, and two threads
# making them at once ran slower (N3 5->40 33x70 k3x5: 1.15 of the time).
OWN_ITEM_BYTES = 256 << 10


def _forwardPlan(units, work, shape, itemsize):
    """The forward's threads, the elements of one item de-interleaved (_phasedShape's), and whether each thread
    copies its own items (OWN_ITEM_BYTES)."""
    itemSize = prod(shape[1:])
    return conv_common.threadCount(units, work), itemSize, itemSize * itemsize >= OWN_ITEM_BYTES


def _phasedShape(xShape, pad, s):
    """(N, C, s, *padded leading axes, ceil(padded last / s)): x padded, its last axis de-interleaved by s."""
    lead = tuple(size + 2 * p for size, p in zip(xShape[2:-1], pad[:-1]))
    return tuple(xShape[:2]) + (s,) + lead + (-(-(xShape[-1] + 2 * pad[-1]) // s),)


def _phased(x, pad, s):
    """x padded, its last axis de-interleaved by s (_phasedShape), element [.., p, .., q] = padded x[.., p + s q];
    with a few zeros of slack after it (row tails read past it)."""
    shape = _phasedShape(x.shape, pad, s)
    flat = workspace.get("implicit-phases", (prod(shape) + _SLACK,), x.dtype)
    xs = flat[:prod(shape)].reshape(shape)
    flat[prod(shape):] = 0

    def fill(i0, i1):  # items split between threads
        xs[i0:i1].fill(0)
        _phaseItems(x, i0, i1, xs[i0:i1], pad, s)

    parallel(fill, x.shape[0], xs.size)
    return xs


def _phaseItems(x, i0, i1, out, pad, s):
    """The interior of out (_phasedShape for items [i0, i1), its padding left as it is) from x's items."""
    inner = tuple(slice(p, p + size) for size, p in zip(x.shape[2:-1], pad[:-1]))
    last, p, width = x.shape[-1], pad[-1], out.shape[-1]
    for phase in range(s):
        q0 = max(0, -(-(p - phase) // s))  # first q with phase + s q - p >= 0
        q1 = min(width, (last - 1 + p - phase) // s + 1) if last - 1 + p - phase >= 0 else 0
        if q1 > q0:
            start = phase + s * q0 - p
            out[(slice(None), slice(None), phase) + inner + (slice(q0, q1),)] = \
                x[i0:i1, ..., start:start + s * (q1 - q0 - 1) + 1:s]


# Zeros after the de-interleaved input: a row's last tile reads up to 7 elements past the row (results dropped).
_SLACK = 64


def _rowTapOffsets(shape, kernel, dilation, channels, s):
    """Tap (channel, kernel index) of _phased's item layout (C, s, *leading, width): its offset from the first
    input element of an output row's receptive field (output column 0)."""
    leadStrides = _leadStrides(shape[2:])
    phaseStride = prod(shape[2:])
    offsets = np.arange(channels, dtype=np.int64) * s * phaseStride
    for size, d, st in zip(kernel[:-1], dilation[:-1], leadStrides):
        offsets = (offsets[:, None] + np.arange(size, dtype=np.int64) * d * st).reshape(-1)
    taps = np.arange(kernel[-1], dtype=np.int64) * dilation[-1]
    return (offsets[:, None] + (taps % s) * phaseStride + taps // s).reshape(-1)


def _leadStrides(plane):
    """Element strides of the leading axes of a (*leading, width) plane."""
    return [int(v) for v in np.cumprod((1,) + tuple(plane[:0:-1]))[::-1][:-1]]


def _rowOffsets(plane, outLead, strideLead):
    """Each output row (leading output indices in order): its first receptive field's offset in an item's phase."""
    strides = _leadStrides(plane)
    offsets = np.zeros(1, dtype=np.int64)
    for size, st, pitch in zip(outLead, strideLead, strides):
        offsets = (offsets[:, None] + np.arange(size, dtype=np.int64) * st * pitch).reshape(-1)
    return offsets


def _rowUnits(x, itemSize, groupBase, taps, rows, panels, bias, y, yItem, yGroup, pixels, rowLen, maps, u0, u1,
              scratch):
    """Output rows [u0, u1) (over items, then rows) of one group: for each tile of adjacent pixels, every panel
    of 8 maps. Tiles past the maps or the row's end are computed in scratch and their valid part copied."""
    depth = taps.size
    mr, nr = scratch.shape
    px, pt, pp, pb, py, ps = x.ctypes.data, taps.ctypes.data, panels.ctypes.data, bias.ctypes.data, y.ctypes.data, \
        scratch.ctypes.data
    count = panels.shape[0]
    full = maps // mr
    for u in range(u0, u1):
        item, row = u // rows.size, u % rows.size
        source = px + 4 * (item * itemSize + groupBase + rows[row])
        target = item * yItem + yGroup + row * rowLen
        j = 0
        while j < rowLen:
            width, used = sgemm.tileWidth(rowLen - j)
            for p in range(count):
                panel = pp + 4 * p * depth * mr
                if p < full and used == width:
                    at = py + 4 * (target + p * mr * pixels + j)
                    _rowTile(width, depth, panel, source + 4 * j, pt, at, pixels, pb + 4 * p * mr)
                    continue
                _rowTile(width, depth, panel, source + 4 * j, pt, ps, nr, pb + 4 * p * mr)
                for i in range(min(mr, maps - p * mr)):
                    for q in range(used):
                        y[target + (p * mr + i) * pixels + j + q] = scratch[i, q]
            j += used


def _rowTile(width, depth, panel, b, taps, c, ldc, bias):
    """The tile of ``width`` columns (sgemm.tileWidth), B's rows through the tap offsets."""
    if width == sgemm.NR:
        sgemm.tileRows(depth, panel, 1, sgemm.MR, b, taps, c, ldc, bias, 0)
    elif width == 16:
        sgemm.tileRows16(depth, panel, 1, sgemm.MR, b, taps, c, ldc, bias, 0)
    else:
        sgemm.tileRows8(depth, panel, 1, sgemm.MR, b, taps, c, ldc, bias, 0)


if njit is not None:
    _rowTile = njit(cache=True, nogil=True, inline="always")(_rowTile)
    _rowUnits = njit(cache=True, nogil=True)(_rowUnits)


# -- weight gradient --------------------------------------------------------------------------------------
# Rows of output pixels per unit of work: every tile of taps by maps (sgemm.dotTile) goes over the unit's input rows
# (all taps) and dy rows (all maps) in one call, loading and storing its 24 partial-sum vectors once. Long units
# pay that once per more rows, and the rows still stream from L3: same process, interleaved, ms, units of 512 KiB
# vs 4 MiB: case 3 13.9 vs 12.3 (44 rows a unit), N8 3->64 224x224 k3 11.6 vs 10.5, N8 16->128 112x112 25.1 vs
# 20.4, N2 8->64 224x224 s2 2.75 vs 2.60 (host busy; all bits within float32 rounding of each other). At least
# MIN_UNITS units, so that the fixed parts stay even on one or two items (N1 case 3: 2.32 vs 2.27).
UNIT_BYTES = 4 << 20
MIN_UNITS = 16
# Fixed parts the units are cut into, each summed by one thread into its own partial sums (any thread count).
_PARTS = 2


def backwardParams(x, dy, wShape, stride, pad, dilation, groups, withBias=False):
    """(dw, db or None): dw sums over output pixels input (tap, pixel) x dy (map, pixel), both read in place along
    output rows (x de-interleaved by its stride, as the forward), by sgemm.dotTile: 6 taps by 4 maps, lane partial
    sums kept in memory between units and added up at the end. With ``withBias`` the last tile's last tap is a row
    of ones (sgemm.dotTileOnes), one of its padding taps where there is one (case 3: 147 = 24 x 6 + 3), so db comes
    out of the same pass over dy (a separate threaded sum of case 3's 25 MiB dy, conv_im2col.biasGrad, took 0.8 ms in
    the run that chose this, 0.55 in biasGrad's own). Needs a multiple of 4 maps per group (whole map tiles);
    ``backwardParamsPreferred`` also asks for long rows, where it is faster."""
    n, c = x.shape[:2]
    o = dy.shape[1]
    kernel = tuple(wShape[2:])
    out = tuple(dy.shape[2:])
    og, cg = o // groups, c // groups
    depth = cg * prod(kernel)
    xs = _phased(x, pad, stride[-1])
    taps = _rowTapOffsets(xs.shape[1:], kernel, dilation, cg, stride[-1])
    tiles = -(-(depth + withBias) // sgemm.DOT_ROWS)
    # Tap offsets padded to whole tiles: past the last tap, tap 0 again (results dropped, or the ones row).
    tileTaps = np.zeros(tiles * sgemm.DOT_ROWS, dtype=np.int64)
    tileTaps[:depth] = taps
    rows = _rowOffsets(xs.shape[3:], out[:-1], stride[:-1])
    rowLen, pixels = out[-1], prod(out)
    step = max(1, min(rows.size, UNIT_BYTES // max(1, (depth + og) * rowLen * x.itemsize),
                      n * rows.size // MIN_UNITS))
    units = np.array([(item, r0, min(rows.size, r0 + step)) for item in range(n) for r0 in range(0, rows.size, step)],
                     dtype=np.int64).reshape(-1, 3)
    mapTiles = og // sgemm.DOT_COLS
    lanes = sgemm.DOT_ROWS * sgemm.DOT_COLS * 16
    sums = workspace.get("implicit-dw", (_PARTS, groups, tiles, mapTiles, lanes), x.dtype, zero=True)
    dyc = np.ascontiguousarray(dy).reshape(-1)
    xFlat = xs.reshape(-1)
    itemSize, groupSize = prod(xs.shape[1:]), cg * prod(xs.shape[2:])
    bounds = [len(units) * h // _PARTS for h in range(_PARTS + 1)]

    def part(h0, h1):
        table = np.empty(step, dtype=np.int64)
        for h in range(h0, h1):
            for g in range(groups):
                _dotUnits(xFlat, itemSize, g * groupSize, tileTaps, rows, dyc, o * pixels, g * og * pixels, pixels,
                          rowLen, units, bounds[h], bounds[h + 1], sums[h, g], table, withBias)

    parallel(part, _PARTS, units.size and depth * o * n * pixels)
    # (parts, groups, tap tiles, map tiles, taps of a tile, maps of a tile, 16 lanes) -> (groups, maps, taps)
    total = sums.reshape(_PARTS, groups, tiles, mapTiles, sgemm.DOT_ROWS, sgemm.DOT_COLS, 16).sum(axis=6)
    total = total.sum(axis=0)  # the parts in order
    full = total.transpose(0, 2, 4, 1, 3).reshape(groups, og, tiles * sgemm.DOT_ROWS)
    db = full[:, :, -1].reshape(-1).copy() if withBias else None
    return np.ascontiguousarray(full[:, :, :depth]).reshape(wShape), db


def backwardParamsPreferred(xShape, wShape, stride, pad, dilation, groups, dtype):
    """Whether im2col's weight gradient runs here instead: float32, depth <= MAX_DEPTH, output rows of at least
    DW_MIN_ROW pixels, and output maps per group a multiple of 4.

    Same process, interleaved, 2 threads, ms, im2col vs here, with units of 512 KiB: N8 3->64 224x224 k7 s2 (case 3,
    rows of 112) 14.3 vs 11.6; 3->64 224x224 k3 17.5 vs 9.8; 3->128 33.0 vs 21.2; 8->64 224x224 s2 8.9 vs 7.3;
    16->128 112x112 22.7 vs 21.2; rows of 56-64 lost or tied. With units of 4 MiB (UNIT_BYTES), two runs: rows of
    56-64 win, 16->64 112x112 s2 4.7-5.3 vs 4.3-4.5, 16->128 128x128 s2 10.8-11.5 vs 8.9-10.5, 32->64 112x112 s2
    10.0-12.1 vs 8.6-10.1, but for 16->128 112x112 s2 7.5-8.9 vs 7.7-9.2.
    """
    if not (available and sgemm.applies(np.dtype(dtype)) and 3 <= len(xShape) <= 5):
        return False
    rowLen = outputShape(xShape[2:], wShape[2:], stride, pad, dilation)[-1]
    depth = xShape[1] // groups * prod(wShape[2:])
    return rowLen >= DW_MIN_ROW and depth <= MAX_DEPTH and (wShape[0] // groups) % sgemm.DOT_COLS == 0


def backwardParamsWorkspace(xShape, wShape, stride, pad, groups, itemsize=4):
    """x padded and de-interleaved, the lane partial sums of every part (with a bias tap), and the two arrays alive
    at once while they are added up (the lanes summed, 1/16 of them, then the parts, 1/32)."""
    og = wShape[0] // groups
    tiles = -(-(prod(wShape[1:]) + 1) // sgemm.DOT_ROWS)
    sums = _PARTS * groups * tiles * (og // sgemm.DOT_COLS) * sgemm.DOT_ROWS * sgemm.DOT_COLS * 16
    return _phasedBytes(xShape, stride, pad, itemsize) + (sums + sums // 16 + sums // 32) * itemsize


def _dotUnits(x, itemSize, groupBase, tileTaps, rows, dy, dyItem, dyGroup, pixels, rowLen, units, u0, u1, sums, table,
              ones):
    """Units [u0, u1) (item, first row, end row) of one group, each tile of taps by maps over its rows (with
    ``ones``, the last tile's last tap a row of ones)."""
    vectors, tail = rowLen // 16, rowLen % 16
    tiles = tileTaps.size // sgemm.DOT_ROWS
    mapTiles = sums.shape[1]
    px, pt, pd, ps, pr = x.ctypes.data, tileTaps.ctypes.data, dy.ctypes.data, sums.ctypes.data, table.ctypes.data
    block = sums.shape[2]
    for u in range(u0, u1):
        item, r0, r1 = units[u, 0], units[u, 1], units[u, 2]
        for r in range(r1 - r0):
            table[r] = item * itemSize + groupBase + rows[r0 + r]
        b = pd + 4 * (item * dyItem + dyGroup + r0 * rowLen)
        for m in range(mapTiles):
            for t in range(tiles):
                args = (r1 - r0, vectors, tail, px, pr, pt + 8 * sgemm.DOT_ROWS * t,
                        b + 4 * sgemm.DOT_COLS * m * pixels, pixels, rowLen, ps + 4 * (t * mapTiles + m) * block)
                if ones and t == tiles - 1:
                    sgemm.dotTileOnes(*args)
                else:
                    sgemm.dotTile(*args)


if njit is not None:
    _dotUnits = njit(cache=True, nogil=True)(_dotUnits)
