"""Convolution as GEMM: 1x1 kernels on the input itself, any other kernel through tiled im2col.

``gemm*``: a 1x1, stride-1, unpadded convolution is a (batched, grouped) matrix product on the
input's own storage, no copy.

``im2col*``: the input patches of one tile (a few batch items, or a band of output rows of one
item) are gathered into a reused column buffer of at most ``TILE_BYTES`` with one strided copy per
kernel tap, then one batched GEMM per tile writes straight into the output. Padding is never
materialised: each tap copies only its in-bounds range and zeroes the rest of its slab.
Backward-data with unit stride is the forward convolution of the gradient with the flipped,
transposed kernel (a gather, no scatter-add); with larger strides it is GEMM + col2im.
Backward-params folds the batch into the GEMM's inner dimension, tile by tile.
"""

import numpy as np

from PuzzleLib.Engines.cpu.conv_common import outputShape, prod, rowTiles, tapRange, workspace


# -- 1x1 convolutions ----------------------------------------------------------------------------
def gemmForward(x, w, bias, groups):
    n, c = x.shape[:2]
    o = w.shape[0]
    spatial = x.shape[2:]
    y = np.empty((n, o) + spatial, dtype=x.dtype)
    np.matmul(w.reshape(groups, o // groups, c // groups), x.reshape(n, groups, c // groups, -1),
              out=y.reshape(n, groups, o // groups, -1))
    _addBias(y, bias)
    return y


def gemmBackwardData(dy, w, xShape, groups):
    n, o = dy.shape[:2]
    c = xShape[1]
    dx = np.empty(xShape, dtype=dy.dtype)
    wg = w.reshape(groups, o // groups, c // groups)
    np.matmul(wg.transpose(0, 2, 1), dy.reshape(n, groups, o // groups, -1),
              out=dx.reshape(n, groups, c // groups, -1))
    return dx


def gemmBackwardParams(x, dy, wShape, groups):
    n, c = x.shape[:2]
    o = dy.shape[1]
    og, cg = o // groups, c // groups
    xs = x.reshape(n, groups, cg, -1)
    dys = dy.reshape(n, groups, og, -1)
    dw = np.zeros((groups, og, cg), dtype=x.dtype)
    # Batched products per chunk of items, summed: the (items, O, C/g) temporary stays bounded.
    step = max(1, min(n, (8 << 20) // max(o * cg * x.itemsize, 1)))
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        part = workspace.get("gemm-dw", (n1 - n0, groups, og, cg), x.dtype)
        np.matmul(dys[n0:n1], xs[n0:n1].transpose(0, 1, 3, 2), out=part)
        dw += part.sum(axis=0)
    return dw.reshape(wShape)


# -- gather / scatter ------------------------------------------------------------------------------
def _tapBox(tap, spatial, outSpatial, stride, pad, dilation, r0, r1):
    """(input slices, output box) of one kernel tap within output rows [r0, r1), or None when empty."""
    src, box = [], []
    for axis, (t, s, p, d) in enumerate(zip(tap, stride, pad, dilation)):
        lo, hi, start = tapRange(spatial[axis], outSpatial[axis], t, s, p, d)
        if axis == 0:  # restrict to the tile's rows, relative to r0
            lo2, hi2 = max(lo, r0), min(hi, r1)
            start += (lo2 - lo) * s
            lo, hi = lo2 - r0, hi2 - r0
        if hi <= lo:
            return None
        box.append(slice(lo, hi))
        src.append(slice(start, start + (hi - lo - 1) * s + 1, s))
    return tuple(src), tuple(box)


def _gather(cols, x, kernel, stride, pad, dilation, outSpatial, r0, r1):
    """cols[n, c, *tap, *out] = x[n, c, out * s + tap * d - p] (zero out of bounds) for output rows [r0, r1).

    ``cols`` is a view indexed (n, c, *kernel, r1 - r0, *outSpatial[1:]), whatever its memory layout.
    """
    outs = (r1 - r0,) + tuple(outSpatial[1:])
    every = (slice(None), slice(None))
    for tap in np.ndindex(*kernel):
        dest = cols[every + tap]
        found = _tapBox(tap, x.shape[2:], outSpatial, stride, pad, dilation, r0, r1)
        if found is None:
            dest[...] = 0
            continue
        src, box = found
        dest[(Ellipsis,) + box] = x[every + src]
        _zeroOutside(dest, box, outs)


def _zeroOutside(dest, box, outs):
    lead = dest.ndim - len(outs)
    for axis, (sl, size) in enumerate(zip(box, outs)):
        pre = (slice(None),) * (lead + axis)
        if sl.start > 0:
            dest[pre + (slice(0, sl.start),)] = 0
        if sl.stop < size:
            dest[pre + (slice(sl.stop, size),)] = 0


def _scatterAdd(dx, dcols, kernel, stride, pad, dilation, outSpatial, r0, r1):
    """Adjoint of _gather: dx[n, c, out * s + tap * d - p] += dcols[n, c, *tap, *out] (in-bounds only)."""
    every = (slice(None), slice(None))
    for tap in np.ndindex(*kernel):
        found = _tapBox(tap, dx.shape[2:], outSpatial, stride, pad, dilation, r0, r1)
        if found is not None:
            src, box = found
            dx[every + src] += dcols[every + tap + box]


def _rowBytes(ck, outSpatial, itemsize):
    return ck * prod(outSpatial[1:]) * itemsize


# -- forward -----------------------------------------------------------------------------------------
def im2colForward(x, w, bias, stride, pad, dilation, groups, tileBytes=None):
    n, c = x.shape[:2]
    o = w.shape[0]
    kernel = w.shape[2:]
    outSpatial = outputShape(x.shape[2:], kernel, stride, pad, dilation)
    y = np.empty((n, o) + outSpatial, dtype=x.dtype)
    if min(outSpatial + (n,)) <= 0:
        return y
    ck = c * prod(kernel)
    rowLen = prod(outSpatial[1:])
    wg = w.reshape(groups, o // groups, ck // groups)
    yg = y.reshape(n, groups, o // groups, -1)
    for n0, n1, r0, r1 in rowTiles(n, outSpatial[0], _rowBytes(ck, outSpatial, x.itemsize), tileBytes):
        tileShape = (n1 - n0, c) + tuple(kernel) + (r1 - r0,) + tuple(outSpatial[1:])
        cols = workspace.get("im2col", tileShape, x.dtype)
        _gather(cols, x[n0:n1], kernel, stride, pad, dilation, outSpatial, r0, r1)
        np.matmul(wg, cols.reshape(n1 - n0, groups, ck // groups, -1),
                  out=yg[n0:n1, :, :, r0 * rowLen:r1 * rowLen])
    _addBias(y, bias)
    return y


def _addBias(y, bias):
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * (y.ndim - 2))


# -- backward data -----------------------------------------------------------------------------------
def flippedKernel(w, groups):
    """The kernel of the transposed convolution: (C, O // groups, *kernel), spatially flipped."""
    o, cg = w.shape[:2]
    kernel = w.shape[2:]
    wt = w.reshape((groups, o // groups, cg) + kernel).swapaxes(1, 2).reshape((groups * cg, o // groups) + kernel)
    return np.ascontiguousarray(wt[(slice(None), slice(None)) + (slice(None, None, -1),) * len(kernel)])


def transposedPad(kernel, pad, dilation):
    """Padding of the stride-1 transposed convolution (may be negative: the gradient is then cropped)."""
    return tuple(d * (k - 1) - p for k, p, d in zip(kernel, pad, dilation))


def im2colBackwardData(dy, w, xShape, stride, pad, dilation, groups, tileBytes=None):
    kernel = w.shape[2:]
    if all(s == 1 for s in stride):
        dx = im2colForward(dy, flippedKernel(w, groups), None, stride, transposedPad(kernel, pad, dilation),
                           dilation, groups, tileBytes)
        assert dx.shape == tuple(xShape)
        return dx
    return _col2imBackwardData(dy, w, xShape, stride, pad, dilation, groups, tileBytes)


def _col2imBackwardData(dy, w, xShape, stride, pad, dilation, groups, tileBytes):
    n, o = dy.shape[:2]
    c = xShape[1]
    kernel = w.shape[2:]
    outSpatial = dy.shape[2:]
    dx = np.zeros(xShape, dtype=dy.dtype)
    ck = c * prod(kernel)
    rowLen = prod(outSpatial[1:])
    wgT = w.reshape(groups, o // groups, ck // groups).transpose(0, 2, 1)
    dyg = dy.reshape(n, groups, o // groups, -1)
    for n0, n1, r0, r1 in rowTiles(n, outSpatial[0], _rowBytes(ck, outSpatial, dy.itemsize), tileBytes):
        tileShape = (n1 - n0, c) + tuple(kernel) + (r1 - r0,) + tuple(outSpatial[1:])
        dcols = workspace.get("col2im", tileShape, dy.dtype)
        np.matmul(wgT, dyg[n0:n1, :, :, r0 * rowLen:r1 * rowLen],
                  out=dcols.reshape(n1 - n0, groups, ck // groups, -1))
        _scatterAdd(dx[n0:n1], dcols, kernel, stride, pad, dilation, outSpatial, r0, r1)
    return dx


# -- backward params ---------------------------------------------------------------------------------
def im2colBackwardParams(x, dy, wShape, stride, pad, dilation, groups, tileBytes=None):
    n, c = x.shape[:2]
    o = dy.shape[1]
    kernel = tuple(wShape[2:])
    outSpatial = dy.shape[2:]
    ck = c * prod(kernel)
    rowLen = prod(outSpatial[1:])
    dw = np.zeros((groups, o // groups, ck // groups), dtype=x.dtype)
    bytesPerRow = _rowBytes(ck + o, outSpatial, x.itemsize)
    for n0, n1, r0, r1 in rowTiles(n, outSpatial[0], bytesPerRow, tileBytes):
        nb, rows = n1 - n0, r1 - r0
        # Batch-folded layout (C, *kernel, items, rows...): one GEMM per tile with inner size items * pixels.
        cols = workspace.get("im2col-dw", (c,) + kernel + (nb, rows) + tuple(outSpatial[1:]), x.dtype)
        order = (1 + len(kernel), 0) + tuple(range(1, 1 + len(kernel))) + tuple(range(2 + len(kernel), cols.ndim))
        _gather(cols.transpose(order), x[n0:n1], kernel, stride, pad, dilation, outSpatial, r0, r1)
        dyt = workspace.get("im2col-dy", (o, nb, rows * rowLen), x.dtype)
        np.copyto(dyt, dy.reshape(n, o, -1)[n0:n1, :, r0 * rowLen:r1 * rowLen].transpose(1, 0, 2))
        colsT = cols.reshape(groups, ck // groups, -1).transpose(0, 2, 1)
        dw += np.matmul(dyt.reshape(groups, o // groups, -1), colsT)
    return dw.reshape(wShape)


def biasGrad(dy):
    return dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))
