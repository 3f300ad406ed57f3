"""The weight gradient of a 1x1 convolution (unit stride, no padding) through sgemm, float32.

dw[g] = sum over items n of dy[n, g] (og x P) @ x[n, g]^T (P x cg): a product whose inner dimension, the pixels,
runs along the rows of both operands, where sgemm wants B's columns at unit stride. The larger operand is read in
place as sgemm's A (any strides) and the smaller is transposed into B, a block of pixels at a time: with more
channels than maps (case 2, N8 256->64 56x56) the product made is dw^T = x[n, g] @ dy[n, g]^T, with more maps
than channels dw = dy[n, g] @ x[n, g]^T.

The pixels of every item are cut into units (item, block of pixels) whose block of A stays in L2 while every
tile goes over it; the units are dealt into _PARTS fixed ranges, each summed by one thread into its own partial,
and the partials are added in order at the end. Within a part, each item's product is one chain of FMAs per
element over the item's pixels in order, added into the partial item by item: the result depends on the shape
alone, not on the thread count.

Against numpy's batched matmul (OpenBLAS), same process, 2 threads: case 2's weight gradient 6.09 -> 4.68 ms; the
other shapes measured are in ``preferred``. The error stays near BLAS's: max |error| / max |result| against the
float64 reference 1.4e-6 on case 2 (BLAS 4.4e-7), 0.2e-6 to 2.9e-6 on the others.
"""

import numpy as np

from PuzzleLib.Engines.cpu import sgemm
from PuzzleLib.Engines.cpu.conv_common import parallel, prod, ranges, workspace

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; without it the BLAS path serves
    njit = None

# Bytes of one unit's block of A (its channels by a block of pixels): it stays in L2 (1 MiB a core here) while the
# tiles go over it.
UNIT_BYTES = 512 << 10
# Fixed parts the units are cut into, each summed by one thread into its own partial (any thread count).
_PARTS = 2


def preferred(xShape, wShape, groups, dtype):
    """Whether a 1x1 weight gradient runs here rather than through numpy's batched matmul: float32 with sgemm, and
    at least 1024 pixels per item, or 512 with at least 65536 products per pixel and group (rows x columns).

    Same process, 2 threads, ms, BLAS vs here (N, C -> O, side, groups): 8 256->64 56 (case 2) 6.09 vs 4.68;
    8 64->256 56 10.05 vs 4.80; 8 32->32 112 4.39 vs 2.55; 8 64->64 56 g2 1.95 vs 1.28; 1 64->64 56 0.37 vs 0.31;
    8 256->256 56 19.0 vs 19.1; 8 512->128 28 5.09 vs 4.46; 8 128->512 28 5.29 vs 4.75. Left to BLAS: 8 128->128 28
    1.36 vs 1.38; 8 128->128 28 g4 0.51 vs 0.67; 8 512->512 7 1.78 vs 2.24; 8 1024->256 14 5.48 vs 5.85;
    8 256->1024 14 5.70 vs 5.83 (32 items of 1024->256 14: 22.2 vs 20.2, not taken).
    """
    if not (njit is not None and sgemm.applies(np.dtype(dtype))):
        return False
    pixels = prod(xShape[2:])
    products = (xShape[1] // groups) * (wShape[0] // groups)
    return pixels >= 1024 or (pixels >= 512 and products >= 1 << 16)


def _units(n, pixels, rows, itemsize):
    """(item, first pixel, end pixel) of every unit, items in order, each item's pixels in blocks of at most
    UNIT_BYTES of the operand read in place (``rows`` channels)."""
    block = max(16, min(pixels, UNIT_BYTES // max(1, rows * itemsize)))
    return np.array([(i, p0, min(pixels, p0 + block)) for i in range(n) for p0 in range(0, pixels, block)],
                    dtype=np.int64).reshape(-1, 3)


def _plan(xShape, wShape, groups, itemsize):
    """(rows, columns, swapped, units, block, parts): the channels per group of the operand read in place (sgemm's
    A) and of the one transposed, its columns padded to whole 8-column tiles of sgemm (no edge copies); swapped
    when A is dy (more maps than channels: the smaller operand is the one transposed), whose product is then dw
    itself rather than its transpose; the units, the most pixels in one, and the parts."""
    n, c = xShape[:2]
    cg, og = c // groups, wShape[0] // groups
    swapped = og > cg
    rows, cols = (og, cg) if swapped else (cg, og)
    units = _units(n, prod(xShape[2:]), rows, itemsize)
    block = int((units[:, 2] - units[:, 1]).max()) if units.size else 0
    return rows, sgemm.wholeTiles(cols), swapped, units, block, min(_PARTS, len(units))


def workspaceBytes(xShape, wShape, groups, itemsize=4):
    """The partials of every part, and each thread's transposed block, running item sum and sgemm edge tiles."""
    rows, cols, _, _, block, parts = _plan(xShape, wShape, groups, itemsize)
    edges = sgemm.Scratch.elements(block)
    return (parts * groups * rows * cols + parts * (block * cols + rows * cols + edges)) * itemsize


def _transposeBlock(src, count, p0, p1, out):
    """out[p - p0, m] = src[m, p] for pixels [p0, p1) and rows m < count (out's other columns untouched), 16 rows at
    a time: each pixel's 16 values are stored together, read from 16 rows that stay in cache (case 2's weight
    gradient: 4.6-4.8 ms with this, 5.5 one row at a time)."""
    for m0 in range(0, count, 16):
        m1 = min(count, m0 + 16)
        for p in range(p0, p1):
            for m in range(m0, m1):
                out[p - p0, m] = src[m, p]


def _partUnits(a, b, units, u0, u1, partial, bT, item, zeros, edgeA, edgeB, edgeC):
    """partial[g] (rows x columns) = sum over units [u0, u1) of a[n, g, :, block] @ b[n, g, :, block]^T, every group
    g. Each item's product (its share of this part) is summed in ``item`` from zero, one chain of FMAs over its
    pixels, then added into the partial, items in order: a chain is no longer than an item's pixels, as with one
    GEMM per item (one chain over all the part's items had 2.4 times this error on case 2: 3.4e-6 of the largest
    result against 1.4e-6; BLAS's, 4.4e-7)."""
    groups, count, width = a.shape[1], b.shape[2], partial.shape[2]
    pixels = a.shape[3]
    for g in range(groups):
        first = True
        for u in range(u0, u1):
            n, p0, p1 = units[u, 0], units[u, 1], units[u, 2]
            blockT = bT[:p1 - p0]
            _transposeBlock(b[n, g], count, p0, p1, blockT)
            fresh = u == u0 or p0 == 0
            sgemm.columns(a[n, g, :, p0:p1], False, blockT, item, zeros, not fresh, 0, width, edgeA, edgeB, edgeC)
            if u == u1 - 1 or p1 == pixels:  # the item's last block (or the part's)
                if first:
                    partial[g][...] = item
                    first = False
                else:
                    partial[g] += item


if njit is not None:
    _transposeBlock = njit(cache=True, nogil=True)(_transposeBlock)
    _partUnits = njit(cache=True, nogil=True)(_partUnits)


def backwardParams(x, dy, wShape, groups):
    """The weight gradient (wShape, 1x1 kernel) of a unit-stride, unpadded convolution; float32."""
    n, c = x.shape[:2]
    og, cg = wShape[0] // groups, c // groups
    pixels = prod(x.shape[2:])
    rows, cols, swapped, units, block, parts = _plan(x.shape, wShape, groups, x.itemsize)
    if not units.size or not og * cg:
        return np.zeros(wShape, dtype=x.dtype)
    xs = np.ascontiguousarray(x).reshape(n, groups, cg, pixels)
    dys = np.ascontiguousarray(dy).reshape(n, groups, og, pixels)
    a, b = (dys, xs) if swapped else (xs, dys)
    bounds = ranges(len(units), parts)
    partials = workspace.get("pointwise-dw", (parts, groups, rows, cols), x.dtype)
    # Each thread's buffers, taken here (the workspace is not thread-safe): a thread runs a range of parts and
    # uses the buffers of its first.
    own = [(workspace.get(f"pointwise-bT{h}", (block, cols), x.dtype),
            workspace.get(f"pointwise-item{h}", (rows, cols), x.dtype)) for h in range(parts)]
    zeros = sgemm.biasRows(None, rows)

    def part(h0, h1):
        bT, item = own[h0]
        bT[:, b.shape[2]:] = 0  # padding columns: theirs in the partials come out zero and are dropped
        edges = sgemm.Scratch().forDepth(block)
        for h in range(h0, h1):
            _partUnits(a, b, units, *bounds[h], partials[h], bT, item, zeros, *edges)

    parallel(part, parts, n * pixels * c * og)
    total = partials[0]
    for h in range(1, parts):
        total += partials[h]  # the parts in order
    total = total[:, :, :cg if swapped else og]
    # Always a copy: the partials are workspace memory, which a result must never be.
    return np.array(total if swapped else total.transpose(0, 2, 1), order="C").reshape(wShape)
