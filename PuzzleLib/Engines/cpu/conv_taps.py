"""1-D unit-stride convolutions as one GEMM per kernel tap, accumulated in place (no column buffer).

For tap ``t`` the output columns ``i`` read input column ``i + t * d - p``: a (C, L) window of the input
itself, addressed by its leading dimension, so BLAS reads it without a copy and adds its product into the
result (beta = 1). Padding is never materialised: each tap only touches the columns whose input is in
bounds (``tapRange``); the tap that covers every column runs first with beta = 0, otherwise the result is
zeroed first. Taps and batch items run in a fixed order, so results are bit-identical from call to call.

Shapes: x (N, C, L), w (O, C // groups, k). float32/float64 go straight to cblas ?gemm; other dtypes take
numpy matmul with a temporary per product (same arithmetic, slower).
"""

import ctypes
import glob
import os

import numpy as np

from PuzzleLib.Engines.cpu.conv_common import tapRange

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def applies(kernel, stride):
    return len(kernel) == 1 and tuple(stride) == (1,)


def workspaceBytes(direction, xShape, wShape, itemsize):
    """The tap-major copy of the weights (forward, backwardData) or of their gradient (backwardParams)."""
    return int(np.prod(wShape)) * itemsize


def _findGemm():
    """cblas ?gemm of numpy's own OpenBLAS (the one conv_common sets the thread count of)."""
    pattern = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs", "*openblas*.so*")
    for path in sorted(glob.glob(pattern)):
        try:
            found = _gemmsOf(ctypes.CDLL(path))
        except OSError:  # pragma: no cover - an unloadable library: numpy matmul instead
            continue
        if found:
            return found
    return {}


def _gemmsOf(lib):
    found = {}
    for dtype, letter in ((np.float32, "s"), (np.float64, "d")):
        for name in (f"scipy_cblas_{letter}gemm64_", f"cblas_{letter}gemm64_"):
            fn = getattr(lib, name, None)
            if fn is None:
                continue
            scalar = ctypes.c_float if letter == "s" else ctypes.c_double
            i64 = ctypes.c_int64
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, scalar, ctypes.c_void_p, i64,
                           ctypes.c_void_p, i64, scalar, ctypes.c_void_p, i64]
            fn.restype = None
            found[np.dtype(dtype)] = fn
            break
    return found


_gemm = _findGemm()


def _product(dst, a, transA, b, transB, beta):
    """dst = a' @ b' + beta * dst on 2-D views whose last stride is one (the others are leading dimensions)."""
    fn = _gemm.get(dst.dtype)
    if fn is None or dst.shape[1] == 0 or dst.shape[0] == 0:
        prod = (a.T if transA else a) @ (b.T if transB else b)
        if beta:
            dst += prod
        else:
            dst[...] = prod
        return
    m, n = dst.shape
    k = a.shape[0] if transA else a.shape[1]
    isz = dst.itemsize
    fn(_ROW_MAJOR, _TRANS if transA else _NO_TRANS, _TRANS if transB else _NO_TRANS, m, n, k, 1.0,
       a.ctypes.data, a.strides[0] // isz, b.ctypes.data, b.strides[0] // isz, beta, dst.ctypes.data,
       dst.strides[0] // isz)


def _accumulate(dst, src, wt, transW, offsets, groups):
    """dst[n, g-block, i] = sum_t W_t' @ src[n, g-block, i + offsets[t]] over the in-bounds columns."""
    n, outRows, size = dst.shape
    mg = outRows // groups
    kg = src.shape[1] // groups
    srcSize = src.shape[2]
    # (lo, hi, start) per tap, a full-width tap first so that it initialises the result.
    ranges = [(t,) + tapRange(srcSize, size, 0, 1, -off, 1) for t, off in enumerate(offsets)]
    full = [r for r in ranges if r[1] == 0 and r[2] == size]
    order = ([full[0]] + [r for r in ranges if r is not full[0]]) if full else ranges
    if not full:
        dst[...] = 0
    for item in range(n):
        for g in range(groups):
            out = dst[item, g * mg:(g + 1) * mg]
            inp = src[item, g * kg:(g + 1) * kg]
            for i, (t, lo, hi, start) in enumerate(order):
                if hi <= lo:
                    continue
                w = wt[t, g * kg:(g + 1) * kg] if transW else wt[t, g * mg:(g + 1) * mg]
                beta = 0.0 if (full and i == 0) else 1.0
                _product(out[:, lo:hi], w, transW, inp[:, start:start + hi - lo], False, beta)


def forward(x, w, bias, pad, dilation, groups):
    x = np.ascontiguousarray(x)
    n, c, size = x.shape
    o, _, k = w.shape
    p, d = pad[0], dilation[0]
    out = size + 2 * p - d * (k - 1)
    wt = np.ascontiguousarray(w.transpose(2, 0, 1))  # (k, O, Cg): each tap a contiguous matrix
    y = np.empty((n, o, out), dtype=x.dtype)
    _accumulate(y, x, wt, False, [t * d - p for t in range(k)], groups)
    if bias is not None:
        y += bias.reshape(1, -1, 1)
    return y


def backwardData(dy, w, xShape, pad, dilation, groups):
    dy = np.ascontiguousarray(dy)
    n, c, size = xShape
    k = w.shape[2]
    p, d = pad[0], dilation[0]
    wt = np.ascontiguousarray(w.transpose(2, 0, 1))  # (k, O, Cg), read transposed: (Cg, O) per group
    dx = np.empty((n, c, size), dtype=dy.dtype)
    # x column i received tap t's contribution from output column i - t * d + p.
    _accumulate(dx, dy, wt, True, [p - t * d for t in range(k)], groups)
    return dx


def backwardParams(x, dy, wShape, pad, dilation, groups):
    x, dy = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    n, c, size = x.shape
    o, cg, k = wShape
    og = o // groups
    out = dy.shape[2]
    p, d = pad[0], dilation[0]
    dwt = np.zeros((k, o, cg), dtype=x.dtype)
    # dW_t = sum_n dy[n] @ x[n, :, i + t * d - p].T over the in-bounds columns, items in a fixed order.
    for t in range(k):
        lo, hi, start = tapRange(size, out, t, 1, p, d)
        if hi <= lo:
            continue
        for item in range(n):
            for g in range(groups):
                _product(dwt[t, g * og:(g + 1) * og], dy[item, g * og:(g + 1) * og, lo:hi], False,
                         x[item, g * cg:(g + 1) * cg, start:start + hi - lo], True, 1.0)
    return np.ascontiguousarray(dwt.transpose(1, 2, 0))
