"""N-dimensional grouped convolution on numpy arrays (cross-correlation, NC... layout): algorithm choice.

Shapes: x (N, C, *spatial), w (O, C // groups, *kernel), bias (O,) or None.
``stride``, ``pad`` and ``dilation`` are tuples with one entry per spatial axis.

Algorithms (each direction: "forward", "backwardData", "backwardParams"):

- ``gemm``: 1x1 kernel, unit stride, no padding: a (grouped, batched) GEMM on the input itself.
- ``im2col``: any convolution: tiled column buffer (bounded, reused) + batched GEMM (conv_im2col).
- ``winograd``: 2-D 3x3, unit stride and dilation, all three directions: F(4x4, 3x3)
  (conv_winograd); its error is larger than the others' (bound stated there).
- ``direct``: direct loops, meant for depthwise and small-group convolutions (conv_direct).

``algo=None`` picks one with a fast heuristic (``chooseAlgorithm``); ``timeAlgorithms`` measures the
candidates for one shape so a caller can keep the fastest within a memory budget. Every algorithm
is deterministic: the same inputs give bit-identical results on every call.
"""

import time

import numpy as np

from PuzzleLib.Engines.cpu import conv_common, conv_direct, conv_im2col, conv_winograd
from PuzzleLib.Engines.cpu.conv_common import isPointwise, outputShape, prod, workspace

DIRECTIONS = ("forward", "backwardData", "backwardParams")
ALGORITHMS = ("gemm", "im2col", "winograd", "direct")

__all__ = ["forward", "backwardData", "backwardParams", "outputShape", "algorithms", "chooseAlgorithm",
           "workspaceBytes", "timeAlgorithms", "DIRECTIONS", "ALGORITHMS"]


# -- which algorithms apply ----------------------------------------------------------------------------
def algorithms(direction, xShape, wShape, stride, pad, dilation, groups):
    """The algorithms that can run this convolution in this direction, in preference order."""
    _checkDirection(direction)
    kernel = tuple(wShape[2:])
    names = []
    if isPointwise(kernel, stride, pad):
        names.append("gemm")
    if conv_winograd.available and conv_winograd.applies(kernel, stride, dilation):
        names.append("winograd")
    names.append("im2col")
    names.append("direct")
    return names


def chooseAlgorithm(direction, xShape, wShape, stride, pad, dilation, groups):
    """The heuristic's pick; memoised per shape (the cache is bounded)."""
    key = (direction, tuple(xShape), tuple(wShape), stride, pad, dilation, groups)
    algo = _choices.get(key)
    if algo is None:
        if len(_choices) > 1024:
            _choices.clear()
        algo = _choices[key] = _heuristic(direction, tuple(xShape), tuple(wShape), stride, pad, dilation, groups)
    return algo


_choices = {}


def _heuristic(direction, xShape, wShape, stride, pad, dilation, groups):
    kernel = wShape[2:]
    c, o = xShape[1], wShape[0]
    cg = c // groups
    if isPointwise(kernel, stride, pad):
        return "gemm"
    if groups > 1 and cg <= 4:
        # Depthwise / small groups: the GEMMs would be tiny, the copy dominates.
        return "direct"
    if cg * prod(kernel) <= 8 and o // groups <= 8:
        return "direct"
    if conv_winograd.available and conv_winograd.applies(kernel, stride, dilation):
        outSpatial = outputShape(xShape[2:], kernel, stride, pad, dilation)
        # Enough channels for the 36 GEMMs to run near peak, enough pixels for the tiles to pay off.
        # Measured (benchmarks/engine_micro.py): wins clearly on 64->64 56x56 in every direction, ties on
        # 4 groups of 32 (wins on the weight gradient), loses on 7x7 maps (tiles wasted, large kernel transform).
        if cg >= 32 and o // groups >= 32 and min(outSpatial) >= 12:
            return "winograd"
    return "im2col"


def workspaceBytes(direction, algo, xShape, wShape, stride, pad, dilation, groups, dtype=np.float32):
    """Scratch memory (bytes) an algorithm needs beyond its inputs and its result."""
    itemsize = np.dtype(dtype).itemsize
    n, c = xShape[:2]
    o = wShape[0]
    kernel = tuple(wShape[2:])
    outSpatial = outputShape(xShape[2:], kernel, stride, pad, dilation)
    if algo == "gemm":
        return o * (c // groups) * itemsize * max(1, n) if direction == "backwardParams" else 0
    if algo == "direct":
        return 0
    if algo == "winograd":
        asForward = direction != "backwardData"
        channels = (c, o) if asForward else (o, c)
        padded = pad if asForward else tuple(2 - p for p in pad)
        spatial = xShape[2:] if asForward else outSpatial
        elements = conv_winograd.workspaceBytes((n, channels[0]) + tuple(spatial), channels[1], padded)
        return (elements + 36 * o * (c // groups)) * itemsize
    # im2col: one tile of columns (bounded), plus the transposed gradient tile for the weights.
    ck = c * prod(kernel)
    total = n * prod(outSpatial) * ck * itemsize
    limit = conv_common.TILE_BYTES
    perRow = ck * prod(outSpatial[1:]) * itemsize
    return min(total, max(limit, perRow))


# -- the three directions -----------------------------------------------------------------------------
def forward(x, w, bias, stride, pad, dilation, groups, algo=None):
    if algo is None:
        algo = chooseAlgorithm("forward", x.shape, w.shape, stride, pad, dilation, groups)
    if algo == "gemm" and isPointwise(w.shape[2:], stride, pad):
        return conv_im2col.gemmForward(x, w, bias, groups)
    if algo == "im2col":
        return conv_im2col.im2colForward(x, w, bias, stride, pad, dilation, groups)
    if algo == "winograd" and _winogradApplies(w.shape, stride, dilation):
        return conv_winograd.forward(x, w, bias, pad, groups)
    if algo == "direct":
        return conv_direct.forward(x, w, bias, stride, pad, dilation, groups)
    raise _badAlgo("forward", algo, x.shape, w.shape, stride, pad, dilation, groups)


def backwardData(dy, w, xShape, stride, pad, dilation, groups, algo=None):
    xShape = tuple(xShape)
    if algo is None:
        algo = chooseAlgorithm("backwardData", xShape, w.shape, stride, pad, dilation, groups)
    if algo == "gemm" and isPointwise(w.shape[2:], stride, pad):
        return conv_im2col.gemmBackwardData(dy, w, xShape, groups)
    if algo == "im2col":
        return conv_im2col.im2colBackwardData(dy, w, xShape, stride, pad, dilation, groups)
    if algo == "winograd" and _winogradApplies(w.shape, stride, dilation):
        return conv_winograd.backwardData(dy, w, xShape, pad, groups)
    if algo == "direct":
        return conv_direct.backwardData(dy, w, xShape, stride, pad, dilation, groups)
    raise _badAlgo("backwardData", algo, xShape, w.shape, stride, pad, dilation, groups)


def backwardParams(x, dy, wShape, withBias, stride, pad, dilation, groups, algo=None):
    """Gradients of the weights (shaped wShape) and of the bias ((O,) or None)."""
    wShape = tuple(wShape)
    if algo is None:
        algo = chooseAlgorithm("backwardParams", x.shape, wShape, stride, pad, dilation, groups)
    if algo == "gemm" and isPointwise(wShape[2:], stride, pad):
        dw = conv_im2col.gemmBackwardParams(x, dy, wShape, groups)
    elif algo == "im2col":
        dw = conv_im2col.im2colBackwardParams(x, dy, wShape, stride, pad, dilation, groups)
    elif algo == "direct":
        dw = conv_direct.backwardParams(x, dy, wShape, stride, pad, dilation, groups)
    elif algo == "winograd" and _winogradApplies(wShape, stride, dilation):
        dw = conv_winograd.backwardParams(x, dy, wShape, pad, groups)
    else:
        raise _badAlgo("backwardParams", algo, x.shape, wShape, stride, pad, dilation, groups)
    return dw, conv_im2col.biasGrad(dy) if withBias else None


def _winogradApplies(wShape, stride, dilation):
    return conv_winograd.available and conv_winograd.applies(wShape[2:], stride, dilation)


def _checkDirection(direction):
    if direction not in DIRECTIONS:
        raise ValueError(f"Unknown direction {direction!r} (expected one of {', '.join(DIRECTIONS)})")


def _badAlgo(direction, algo, xShape, wShape, stride, pad, dilation, groups):
    names = algorithms(direction, xShape, wShape, stride, pad, dilation, groups)
    return ValueError(f"Algorithm {algo!r} does not apply to this {direction} convolution "
                      f"(applicable: {', '.join(names)})")


# -- measuring ----------------------------------------------------------------------------------------
def timeAlgorithms(direction, xShape, wShape, stride, pad, dilation, groups, dtype=np.float32, memlimit=None,
                   repeats=3, withBias=True):
    """Time every applicable algorithm on random data of this shape.

    Returns [(algo, seconds, workspace bytes)], fastest first; algorithms whose workspace exceeds
    ``memlimit`` bytes are left out. Each is run once to warm up, then ``repeats`` times (median).
    """
    _checkDirection(direction)
    xShape, wShape = tuple(xShape), tuple(wShape)
    rng = np.random.default_rng(0)
    outSpatial = outputShape(xShape[2:], wShape[2:], stride, pad, dilation)
    x = rng.standard_normal(xShape).astype(dtype)
    w = rng.standard_normal(wShape).astype(dtype)
    dy = rng.standard_normal((xShape[0], wShape[0]) + outSpatial).astype(dtype)
    bias = np.zeros(wShape[0], dtype=dtype) if withBias else None
    calls = {
        "forward": lambda a: forward(x, w, bias, stride, pad, dilation, groups, algo=a),
        "backwardData": lambda a: backwardData(dy, w, xShape, stride, pad, dilation, groups, algo=a),
        "backwardParams": lambda a: backwardParams(x, dy, wShape, withBias, stride, pad, dilation, groups, algo=a),
    }
    results = []
    for algo in algorithms(direction, xShape, wShape, stride, pad, dilation, groups):
        need = workspaceBytes(direction, algo, xShape, wShape, stride, pad, dilation, groups, dtype)
        if memlimit is not None and need > memlimit:
            continue
        call = calls[direction]
        call(algo)
        times = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            call(algo)
            times.append(time.perf_counter() - start)
        results.append((algo, sorted(times)[len(times) // 2], need))
    results.sort(key=lambda r: r[1])
    return results


def clearWorkspace():
    """Drop the cached scratch buffers (they are re-created on demand)."""
    workspace.clear()
