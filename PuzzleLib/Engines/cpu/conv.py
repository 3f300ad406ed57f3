"""N-dimensional grouped convolution on numpy arrays (cross-correlation, NC... layout).

Shapes: x (N, C, *spatial), w (O, C // groups, *kernel), bias (O,) or None.
``stride``, ``pad`` and ``dilation`` are tuples with one entry per spatial axis.
One core serves 1-D, 2-D and 3-D: the spatial axes are only ever iterated as tuples.

The method is im2col + GEMM: the input patches are gathered into a column buffer
(N, groups, C/groups * K, L) with one strided copy per kernel tap (K taps, never a
loop over pixels or batch items), and a batched matrix product does the rest.
"""

import math

import numpy as np


def outputShape(spatial, kernel, stride, pad, dilation):
    return tuple(
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(spatial, kernel, stride, pad, dilation)
    )


def _tapSlices(tap, stride, dilation, outSpatial):
    """Slices of the padded input that kernel tap ``tap`` reads, one per spatial axis."""
    return tuple(
        slice(t * d, t * d + s * (o - 1) + 1, s)
        for t, s, d, o in zip(tap, stride, dilation, outSpatial)
    )


def _pad(x, pad):
    if not any(pad):
        return x
    padded = np.zeros(x.shape[:2] + tuple(n + 2 * p for n, p in zip(x.shape[2:], pad)), dtype=x.dtype)
    padded[_interior(x.shape[2:], pad)] = x
    return padded


def _interior(spatial, pad):
    return (slice(None), slice(None)) + tuple(slice(p, p + n) for n, p in zip(spatial, pad))


def im2col(x, kernel, stride, pad, dilation, groups):
    """Patches of x as a column buffer of shape (N, groups, C/groups * K, L)."""
    n, c = x.shape[:2]
    outSpatial = outputShape(x.shape[2:], kernel, stride, pad, dilation)
    padded = _pad(x, pad)
    cols = np.empty((n, c) + tuple(kernel) + outSpatial, dtype=x.dtype)
    everything = (slice(None), slice(None))
    for tap in np.ndindex(*kernel):
        cols[everything + tap] = padded[everything + _tapSlices(tap, stride, dilation, outSpatial)]
    return cols.reshape(n, groups, (c // groups) * math.prod(kernel), math.prod(outSpatial))


def col2im(cols, xShape, kernel, stride, pad, dilation):
    """Adjoint of im2col: scatter-add columns (N, groups, C/groups * K, L) back to an x-shaped array."""
    n, c = xShape[:2]
    outSpatial = outputShape(xShape[2:], kernel, stride, pad, dilation)
    cols = cols.reshape((n, c) + tuple(kernel) + outSpatial)
    padded = np.zeros((n, c) + tuple(size + 2 * p for size, p in zip(xShape[2:], pad)), dtype=cols.dtype)
    everything = (slice(None), slice(None))
    for tap in np.ndindex(*kernel):
        padded[everything + _tapSlices(tap, stride, dilation, outSpatial)] += cols[everything + tap]
    return np.ascontiguousarray(padded[_interior(xShape[2:], pad)]) if any(pad) else padded


def _groupedWeights(w, groups):
    o = w.shape[0]
    return w.reshape(groups, o // groups, -1)


def forward(x, w, bias, stride, pad, dilation, groups):
    kernel = w.shape[2:]
    n, o = x.shape[0], w.shape[0]
    outSpatial = outputShape(x.shape[2:], kernel, stride, pad, dilation)
    cols = im2col(x, kernel, stride, pad, dilation, groups)
    y = np.matmul(_groupedWeights(w, groups), cols).reshape((n, o) + outSpatial)
    if bias is not None:
        y += bias.reshape((1, o) + (1,) * len(outSpatial))
    return y


def backwardData(dy, w, xShape, stride, pad, dilation, groups):
    n, o = dy.shape[:2]
    wg = _groupedWeights(w, groups)
    dcols = np.matmul(wg.transpose(0, 2, 1), dy.reshape(n, groups, o // groups, -1))
    return col2im(dcols, xShape, w.shape[2:], stride, pad, dilation)


def backwardParams(x, dy, wShape, withBias, stride, pad, dilation, groups):
    """Gradients of the weights (shaped wShape) and of the bias ((O,) or None)."""
    n, o = dy.shape[:2]
    cols = im2col(x, wShape[2:], stride, pad, dilation, groups)
    dyg = dy.reshape(n, groups, o // groups, -1)
    dw = np.matmul(dyg, cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(wShape)
    db = dy.sum(axis=(0,) + tuple(range(2, dy.ndim))) if withBias else None
    return dw, db
