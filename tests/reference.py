"""Float64 references written for the tests only, independent of the package.

The convolution references loop over kernel taps (never over pixels or batch items): for each tap,
the slice of the zero-padded input it reads is contracted with that tap's weights by einsum.
Groups are handled by splitting the channel axis into (groups, maps per group).
"""

import itertools
import math

import numpy as np


def outShape(spatial, size, stride, pad, dilation):
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(spatial, size, stride, pad, dilation))


def _tapSlices(tap, stride, dilation, out):
    return tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, s, d, o in zip(tap, stride, dilation, out))


def _padded(x, pad):
    return np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in pad))


def _grouped(a, groups):
    """(N, C, *spatial) -> (N, groups, C // groups, *spatial)."""
    return a.reshape((a.shape[0], groups, a.shape[1] // groups) + a.shape[2:])


def convForward(x, w, b, stride, pad, dilation, groups):
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    size = w.shape[2:]
    out = outShape(x.shape[2:], size, stride, pad, dilation)
    xp = _grouped(_padded(x, pad), groups)
    wg = w.reshape((groups, w.shape[0] // groups) + w.shape[1:])
    y = np.zeros((x.shape[0], groups, w.shape[0] // groups) + out)
    everything = (slice(None),) * 3
    for tap in itertools.product(*(range(k) for k in size)):
        window = xp[everything + _tapSlices(tap, stride, dilation, out)]
        y += np.einsum("ngc...,goc->ngo...", window, wg[everything + tap])
    y = y.reshape((x.shape[0], w.shape[0]) + out)
    if b is not None:
        y += np.asarray(b, np.float64).reshape((1, -1) + (1,) * len(out))
    return y


def convBackwardData(dy, w, xShape, stride, pad, dilation, groups):
    dy, w = np.asarray(dy, np.float64), np.asarray(w, np.float64)
    size, out = w.shape[2:], dy.shape[2:]
    n, c = xShape[:2]
    dxp = np.zeros((n, groups, c // groups) + tuple(s + 2 * p for s, p in zip(xShape[2:], pad)))
    dyg = _grouped(dy, groups)
    wg = w.reshape((groups, w.shape[0] // groups) + w.shape[1:])
    everything = (slice(None),) * 3
    for tap in itertools.product(*(range(k) for k in size)):
        dxp[everything + _tapSlices(tap, stride, dilation, out)] += np.einsum("ngo...,goc->ngc...", dyg,
                                                                              wg[everything + tap])
    dxp = dxp.reshape((n, c) + dxp.shape[3:])
    return dxp[(slice(None), slice(None)) + tuple(slice(p, p + s) for s, p in zip(xShape[2:], pad))]


def convBackwardParams(x, dy, wShape, stride, pad, dilation, groups):
    """(dW, db) with db shaped (1, O, 1, ...)."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    size, out = wShape[2:], dy.shape[2:]
    xp = _grouped(_padded(x, pad), groups)
    dyg = _grouped(dy, groups)
    dw = np.zeros((groups, wShape[0] // groups) + tuple(wShape[1:]))
    everything = (slice(None),) * 3
    for tap in itertools.product(*(range(k) for k in size)):
        window = xp[everything + _tapSlices(tap, stride, dilation, out)]
        dw[everything + tap] = np.einsum("ngol,ngcl->goc", dyg.reshape(dyg.shape[:3] + (-1,)),
                                         window.reshape(window.shape[:3] + (-1,)))
    db = dy.sum(axis=(0,) + tuple(range(2, dy.ndim))).reshape((1, -1) + (1,) * len(out))
    return dw.reshape(wShape), db


def convBruteForce(x, w, b, stride, pad, dilation, groups):
    """The definition, one output element at a time: slow, only for checking the reference itself."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    size = w.shape[2:]
    out = outShape(x.shape[2:], size, stride, pad, dilation)
    n, c = x.shape[:2]
    o = w.shape[0]
    cg, og = c // groups, o // groups
    y = np.zeros((n, o) + out)
    for b_, oc in itertools.product(range(n), range(o)):
        g = oc // og
        for pos in itertools.product(*(range(k) for k in out)):
            acc = 0.0 if b is None else float(np.asarray(b).ravel()[oc])
            for ic in range(cg):
                for tap in itertools.product(*(range(k) for k in size)):
                    src = tuple(q * s - p + t * d for q, s, p, t, d in zip(pos, stride, pad, tap, dilation))
                    if all(0 <= i < m for i, m in zip(src, x.shape[2:])):
                        acc += x[(b_, g * cg + ic) + src] * w[(oc, ic) + tap]
            y[(b_, oc) + pos] = acc
    return y


def padForward(x, pads, mode, value=0.0):
    """numpy's pad on the spatial axes (pads: one (before, after) pair per spatial axis)."""
    width = ((0, 0), (0, 0)) + tuple(pads)
    if mode == "constant":
        return np.pad(np.asarray(x, np.float64), width, mode="constant", constant_values=value)
    return np.pad(np.asarray(x, np.float64), width, mode=mode)


def padBackward(dy, xShape, pads, mode):
    """Adjoint of padForward, built from the index map: each padded position adds to the input it copies."""
    dy = np.asarray(dy, np.float64)
    # Pad an array of flat input indices the same way: each output position then names its source.
    index = np.arange(math.prod(xShape)).reshape(xShape)
    width = ((0, 0), (0, 0)) + tuple(pads)
    if mode == "constant":
        source = np.pad(index, width, mode="constant", constant_values=-1)
    else:
        source = np.pad(index, width, mode=mode)
    dx = np.zeros(math.prod(xShape))
    keep = source >= 0
    np.add.at(dx, source[keep], dy[keep])
    return dx.reshape(xShape)
