"""Max and average pooling of (N, C, *spatial) arrays, any number of spatial axes.

Vectorized over batch, maps and output positions; the only Python loop is over the
kernel taps (at most prod(size) iterations). ``size``, ``stride`` and ``pad`` are
tuples with one entry per spatial axis. Windows never lie entirely in the padding
(callers guarantee pad < size), so max pooling never yields -inf.
"""

import itertools
import math

import numpy as np


def outShape(spatial, size, stride, pad):
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(spatial, size, stride, pad))


def _taps(size):
    return itertools.product(*(range(k) for k in size))


def _tapIndex(tap, stride, out):
    """The strided view of the padded array that this tap reads for every output position."""
    return (Ellipsis,) + tuple(slice(t, t + s * (o - 1) + 1, s) for t, s, o in zip(tap, stride, out))


def _padded(x, pad, value):
    width = ((0, 0),) * (x.ndim - len(pad)) + tuple((p, p) for p in pad)
    return np.pad(x, width, mode="constant", constant_values=np.asarray(value, dtype=x.dtype))


def _cropped(xp, pad):
    return xp[(Ellipsis,) + tuple(slice(p, xp.shape[i - len(pad)] - p) for i, p in enumerate(pad))]


def maxForward(x, size, stride, pad):
    """(y, taps): the maxima and, per output, which kernel tap (row-major) held it (the first on ties)."""
    out = outShape(x.shape[2:], size, stride, pad)
    xp = _padded(x, pad, -np.inf)
    y, taps = None, None
    for t, tap in enumerate(_taps(size)):
        window = xp[_tapIndex(tap, stride, out)]
        if y is None:
            y, taps = window.copy(), np.zeros(window.shape, dtype=np.int32)
            continue
        better = window > y
        np.copyto(y, window, where=better)
        taps[better] = t
    return y, taps


def maxBackward(grad, taps, inShape, size, stride, pad):
    """Route each output gradient to the input element its maximum came from."""
    out = grad.shape[2:]
    gp = np.zeros(tuple(inShape[:2]) + tuple(n + 2 * p for n, p in zip(inShape[2:], pad)), dtype=grad.dtype)
    for t, tap in enumerate(_taps(size)):
        # Positions read by one tap are distinct, so an in-place add on the view is exact.
        gp[_tapIndex(tap, stride, out)] += np.where(taps == t, grad, 0)
    return np.ascontiguousarray(_cropped(gp, pad))


def maxIndices(taps, inShape, size, stride, pad):
    """Flat index into each input map (row-major over the spatial axes) of every maximum."""
    spatial = inShape[2:]
    tapCoords = np.unravel_index(taps, size)
    index = np.zeros(taps.shape, dtype=np.int64)
    for axis, (n, s, p) in enumerate(zip(spatial, stride, pad)):
        positions = np.arange(taps.shape[2 + axis]) * s - p
        positions = positions.reshape((-1,) + (1,) * (len(spatial) - axis - 1))
        index = index * n + (positions + tapCoords[axis])
    return index.astype(np.int32)


def _counts(spatial, size, stride, pad, dtype):
    """How many real (non-padding) elements each window covers, shaped to broadcast over (N, C)."""
    ones = _padded(np.ones((1, 1) + tuple(spatial), dtype=dtype), pad, 0)
    out = outShape(spatial, size, stride, pad)
    count = np.zeros((1, 1) + out, dtype=dtype)
    for tap in _taps(size):
        count += ones[_tapIndex(tap, stride, out)]
    return count


def _divisor(spatial, size, stride, pad, includePad, dtype):
    if includePad:
        return dtype.type(math.prod(size))
    return _counts(spatial, size, stride, pad, dtype)


def avgForward(x, size, stride, pad, includePad):
    out = outShape(x.shape[2:], size, stride, pad)
    xp = _padded(x, pad, 0)
    y = np.zeros(x.shape[:2] + out, dtype=x.dtype)
    for tap in _taps(size):
        y += xp[_tapIndex(tap, stride, out)]
    y /= _divisor(x.shape[2:], size, stride, pad, includePad, x.dtype)
    return y


def avgBackward(grad, inShape, size, stride, pad, includePad):
    out = grad.shape[2:]
    share = grad / _divisor(inShape[2:], size, stride, pad, includePad, grad.dtype)
    gp = np.zeros(tuple(inShape[:2]) + tuple(n + 2 * p for n, p in zip(inShape[2:], pad)), dtype=grad.dtype)
    for tap in _taps(size):
        gp[_tapIndex(tap, stride, out)] += share
    return np.ascontiguousarray(_cropped(gp, pad))
