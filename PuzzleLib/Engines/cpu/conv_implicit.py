"""Forward convolution as an implicit GEMM: sgemm's tile reading the (padded) input in place, no im2col buffer.

The product is y^T (pixels, O) = X (pixels, C * taps) @ W^T (C * taps, O), where row ``p`` of X is output
pixel p's receptive field. X is never built: the tile's A operand is read through two offset tables,
pixel p's first input element (``pixelOffsets``) plus tap k's offset from it (``tapOffsets``), into a copy of
x with its padding written out as zeros. Each tile is 8 output pixels by 32 (or 16, or 8) output maps, one
chain of FMAs per element over the taps in order; it is stored to a small scratch tile and copied out
transposed into y's (maps, pixels) layout with the bias added. Pixels run in blocks whose input stays in
cache while every panel of maps goes over them.

This is how the fast CPU libraries run strided and few-channel convolutions (onnxruntime's NCHWc kernels
broadcast input pixels against vectors of output maps in the same way): im2col's gather, a third of its
time on such shapes, and its buffer are gone. Any stride, dilation, padding and groups, 1-D to 3-D.

Float32 (sgemm.applies); results are the same bits on any number of threads (pixels are dealt out in whole
panels, and no element's sum depends on which thread runs it).
"""

import numpy as np

from PuzzleLib.Engines.cpu import sgemm
from PuzzleLib.Engines.cpu.conv_common import outputShape, parallel, prod, workspace

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; without it the algorithm is unavailable
    njit = None

available = njit is not None

# Pixel panels (of sgemm.MR pixels) per block: every panel of output maps goes over a block before the next,
# so the block's input rows stay in L2 (case 5, 128 channels 3x3 s2: 256 pixels read ~300 KiB).
BLOCK_PANELS = 32


def preferred(xShape, wShape, stride, groups, dtype):
    """Whether im2col's forward runs here instead: float32, up to 128 output maps per group, and a strided
    convolution or a short receptive field (C/g * taps <= 64).

    Same process, interleaved, 2 threads, ms, im2col (tiled gather + GEMM) vs here: N8 3->64 224x224 k7 s2 (case 3)
    14.2 vs 12.8; 3->32 224x224 k3 s1 11.6 vs 9.5; 64->128 56x56 s2 7.3 vs 6.3; 32->64 56x56 k5 s2 6.3 vs 4.4;
    16->32 112x112 s2 3.1 vs 2.3; 128->128 28x28 s2 4.4 vs 4.1; 128->64 2.7 vs 2.2. Loses with more maps: 128->256
    28x28 s2 (case 5) 6.7 vs 7.0, 64->256 56x56 s2 11.2 vs 13.9, 256->512 14x14 s2 7.2 vs 7.9 (each tile's input
    rows are read once per panel of 32 maps); and unstrided with many channels, which Winograd serves anyway
    (64->64 28x28 3.2 vs 3.3).
    """
    if not (available and sgemm.applies(np.dtype(dtype)) and 3 <= len(xShape) <= 5):
        return False
    depth = xShape[1] // groups * prod(wShape[2:])
    return wShape[0] // groups <= 128 and (any(s > 1 for s in stride) or depth <= 64)


def workspaceBytes(xShape, wShape, pad, groups, itemsize=4):
    """The padded copy of x (none without padding) and W^T with its maps padded to a multiple of 8."""
    padded = prod(xShape[:2]) * prod(s + 2 * p for s, p in zip(xShape[2:], pad)) if any(pad) else 0
    og = wShape[0] // groups
    return (padded + groups * prod(wShape[1:]) * (-(-og // 8) * 8)) * itemsize


def forward(x, w, bias, stride, pad, dilation, groups):
    n, c = x.shape[:2]
    o = w.shape[0]
    kernel = tuple(w.shape[2:])
    out = outputShape(x.shape[2:], kernel, stride, pad, dilation)
    y = np.empty((n, o) + out, dtype=x.dtype)
    pixels = prod(out)
    if n * pixels == 0:
        return y
    if o == 0:
        return y
    xp = _padded(x, pad)
    og, cg = o // groups, c // groups
    depth = cg * prod(kernel)
    taps = _tapOffsets(xp.shape[1:], kernel, dilation, cg)
    rows = _pixelOffsets(xp.shape, out, stride)
    # Each group's W^T (C/g * taps, O/g), its columns padded to a multiple of 8 with zeros so that every panel of
    # maps is a whole tile (the padded maps' results are never copied out).
    width = -(-og // 8) * 8
    wt = workspace.get("implicit-wt", (groups, depth, width), x.dtype, zero=width != og)
    np.copyto(wt[:, :, :og], w.reshape(groups, og, depth).transpose(0, 2, 1))
    biasv = np.zeros(o, dtype=x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype).reshape(o)
    yFlat = y.reshape(-1)
    xFlat = xp.reshape(-1)
    plane = prod(xp.shape[2:])
    panels = -(-(n * pixels) // sgemm.MR)

    def run(q0, q1):
        scratch = np.empty((sgemm.MR, sgemm.NR), dtype=x.dtype)
        table = np.empty(sgemm.MR, dtype=np.int64)
        for g in range(groups):
            _panels(xFlat[g * cg * plane:], taps, rows, wt[g], biasv[g * og:], yFlat[g * og * pixels:], o * pixels,
                    pixels, og, n * pixels, q0, q1, scratch, table, BLOCK_PANELS)

    parallel(run, panels, n * pixels * o * depth)
    return y


def _padded(x, pad):
    """x with its padding written out as zeros (x itself, made contiguous, when there is none)."""
    if not any(pad):
        return np.ascontiguousarray(x)
    spatial = tuple(s + 2 * p for s, p in zip(x.shape[2:], pad))
    xp = workspace.get("implicit-xp", x.shape[:2] + spatial, x.dtype)
    inner = tuple(slice(p, p + s) for s, p in zip(x.shape[2:], pad))

    def fill(i0, i1):  # items split between threads: the zeros, then the interior
        part = xp[i0:i1]
        for axis, p in enumerate(pad):
            if p:
                lead = (slice(None), slice(None)) + (slice(None),) * axis
                part[lead + (slice(0, p),)] = 0
                part[lead + (slice(part.shape[2 + axis] - p, None),)] = 0
        np.copyto(part[(slice(None), slice(None)) + inner], x[i0:i1])

    parallel(fill, x.shape[0], xp.size)
    return xp


def _tapOffsets(paddedShape, kernel, dilation, channels):
    """Tap k = (channel, kernel index) of a receptive field: its offset from the field's first element."""
    strides = np.cumprod((1,) + tuple(paddedShape[:0:-1]))[::-1]  # element strides of (C, *spatial)
    offsets = np.arange(channels, dtype=np.int64) * strides[0]
    for axis, (size, d) in enumerate(zip(kernel, dilation)):
        offsets = (offsets[:, None] + np.arange(size, dtype=np.int64) * d * strides[1 + axis]).reshape(-1)
    return offsets


def _pixelOffsets(paddedShape, out, stride):
    """Output pixel p (items, then output positions in order): its receptive field's first input element."""
    spatialStrides = np.cumprod((1,) + tuple(paddedShape[:1:-1]))[::-1][1:]  # of the spatial axes
    offsets = np.arange(paddedShape[0], dtype=np.int64) * prod(paddedShape[1:])
    for size, s, st in zip(out, stride, spatialStrides):
        offsets = (offsets[:, None] + np.arange(size, dtype=np.int64) * s * st).reshape(-1)
    return offsets


def _panels(x, taps, rows, wt, bias, y, itemPitch, pixels, maps, count, q0, q1, scratch, table, block):
    """Pixel panels [q0, q1) of one group: y[item, m, pixel] = bias[m] + sum over taps, by blocks of panels."""
    depth = taps.size
    width = wt.shape[1]
    mr = scratch.shape[0]
    px, pt, pw = x.ctypes.data, taps.ctypes.data, wt.ctypes.data
    ps, pr = scratch.ctypes.data, table.ctypes.data
    py, pb = y.ctypes.data, bias.ctypes.data
    zeros = np.zeros(mr, dtype=np.float32)
    pz = zeros.ctypes.data
    for b0 in range(q0, q1, block):
        b1 = min(q1, b0 + block)
        j = 0
        while j < width:
            tileWidth = 32 if width - j >= 32 else 16 if width - j >= 16 else 8
            used = min(tileWidth, maps - j)
            for q in range(b0, b1):
                first = q * mr
                for i in range(mr):  # a last panel's missing pixels repeat its first one (results dropped)
                    table[i] = rows[first + i] if first + i < count else rows[first]
                item = first // pixels
                if tileWidth >= 16 and first + mr <= count and (first + mr - 1) // pixels == item:
                    # the panel's pixels adjacent in each row of y: stored transposed straight from the registers
                    at = py + 4 * (item * itemPitch + first - item * pixels + j * pixels)
                    if tileWidth == 32:
                        sgemm.tileIndirectT(depth, px, pr, pt, pw + 4 * j, width, at, pixels, pb + 4 * j, used)
                    else:
                        sgemm.tileIndirectT16(depth, px, pr, pt, pw + 4 * j, width, at, pixels, pb + 4 * j, used)
                    continue
                if tileWidth == 32:
                    sgemm.tileIndirect(depth, px, pr, pt, pw + 4 * j, width, ps, 32, pz, 0)
                elif tileWidth == 16:
                    sgemm.tileIndirect16(depth, px, pr, pt, pw + 4 * j, width, ps, 32, pz, 0)
                else:
                    sgemm.tileIndirect8(depth, px, pr, pt, pw + 4 * j, width, ps, 32, pz, 0)
                for i in range(min(mr, count - first)):
                    pixel = first + i
                    at = (pixel // pixels) * itemPitch + pixel % pixels + j * pixels
                    for m in range(used):
                        y[at + m * pixels] = scratch[i, m] + bias[j + m]
            j += tileWidth


if njit is not None:
    _panels = njit(cache=True, nogil=True)(_panels)
