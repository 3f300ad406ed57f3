"""N-dimensional grouped convolution on numpy arrays (cross-correlation, NC... layout): algorithm choice.

Shapes: x (N, C, *spatial), w (O, C // groups, *kernel), bias (O,) or None.
``stride``, ``pad`` and ``dilation`` are tuples with one entry per spatial axis.

Algorithms (each direction: "forward", "backwardData", "backwardParams"):

- ``gemm``: 1x1 kernel, unit stride, no padding: a (grouped, batched) GEMM on the input itself. The float32
  forward in one group goes through sgemm (weights packed, the bias in the sums), and so does the backward-data
  of one group with at least as many maps as channels (128 or more); float32 weight gradients over many pixels
  too, with the smaller operand transposed a block at a time (conv_pointwise.preferred).
- ``im2col``: any convolution: tiled column buffer (bounded, reused) + batched GEMM (conv_im2col).
  Float32 forward and weight gradient of short receptive fields over long output rows: implicit GEMMs reading
  the input in place, no column buffer (conv_implicit: preferred, backwardParamsPreferred).
  Strided backward-data: GEMM + col2im with whole batch items per thread (conv_col2im); one item with O <= C
  and C/g >= 128 by stride phases (conv_phases: a gather and a GEMM per phase, no scatter-add).
- ``winograd``: 2-D 3x3, unit stride, all three directions: F(4x4, 3x3) (conv_winograd); its error is
  larger than the others' (bound stated there). Dilated ones run as undilated convolutions on the
  polyphase sub-planes (conv_polyphase). 3-D (kD, 3, 3) kernels with unit stride and no dilation run
  through it with the depth slices stacked as channels (conv_winograd3d). 1-D 3-tap kernels with unit
  stride and no dilation: F(6, 3) (conv_winograd1d). Small undilated 2-D maps
  (conv_winograd2x2.preferred) run F(2x2, 3x3) instead (conv_winograd2x2): less padding per tile, a
  smaller kernel transform; in one group all three directions go to F(4x2, 3x3) where that makes
  fewer products (conv_winograd4x2: 7x7 maps, 3 products per output instead of 4). 2-D 3x3 stride-2
  undilated ones split the taps by parity (conv_winograd_s2: 25 products per 2x2 outputs instead of 36, exact
  +-1 transforms).
- ``direct``: direct loops, meant for depthwise and small-group convolutions (conv_direct).

``algo=None`` picks one with a fast heuristic (``chooseAlgorithm``); ``timeAlgorithms`` measures the
candidates for one shape and ``optimizeAlgorithm`` picks the one to keep within a memory budget (never
one its own measurement found slower than the heuristic's). Scratch buffers are kept between calls, up to
conv_common.HELD_BYTES (``clearWorkspace`` drops them). Every algorithm is deterministic: the same inputs
give bit-identical results on every call, whatever the thread count.
BLAS runs single-threaded inside the engine's own threads (conv_common.runChunks, conv_common.matmul).
"""

import statistics
import time

import numpy as np

from PuzzleLib.Engines.cpu import (
    conv_col2im,
    conv_common,
    conv_direct,
    conv_im2col,
    conv_implicit,
    conv_phases,
    conv_pointwise,
    conv_polyphase,
    conv_winograd,
    conv_winograd1d,
    conv_winograd2x2,
    conv_winograd3d,
    conv_winograd_s2,
)
from PuzzleLib.Engines.cpu.conv_common import isPointwise, memo, outputShape, prod, workspace

DIRECTIONS = ("forward", "backwardData", "backwardParams")
ALGORITHMS = ("gemm", "im2col", "winograd", "direct")

__all__ = ["forward", "forwardRunner", "backwardData", "backwardParams", "outputShape", "algorithms",
           "chooseAlgorithm", "workspaceBytes", "clearWorkspace", "heldBytes", "timeAlgorithms", "optimizeAlgorithm",
           "DIRECTIONS", "ALGORITHMS"]


# -- which algorithms apply ----------------------------------------------------------------------------
def algorithms(direction, xShape, wShape, stride, pad, dilation, groups):
    """The algorithms that can run this convolution in this direction, in preference order."""
    _checkDirection(direction)
    kernel = tuple(wShape[2:])
    names = []
    if isPointwise(kernel, stride, pad):
        names.append("gemm")
    if _winogradApplies(wShape, stride, dilation):
        names.append("winograd")
    names.append("im2col")
    names.append("direct")
    return names


def chooseAlgorithm(direction, xShape, wShape, stride, pad, dilation, groups):
    """The heuristic's pick; memoised per shape (the cache is bounded)."""
    if type(xShape) is not tuple or type(wShape) is not tuple:
        xShape, wShape = tuple(xShape), tuple(wShape)
    return memo(_choices, (direction, xShape, wShape, stride, pad, dilation, groups),
                lambda: _heuristic(direction, xShape, wShape, stride, pad, dilation, groups), limit=1024)


_choices = {}
# Multiply-adds of a call (all items, maps and taps) up to which the direct loops run it (see _heuristic).
_TINY_WORK = 1 << 16
# Tiles of 4x4 outputs (all items) from which one group of 16 to 47 channels runs F(4x4) (see _heuristic).
_FEW_CHANNEL_TILES = 768


def _tileCount(batch, outSpatial, m):
    """Tiles of m outputs along each axis over the whole batch (the last ones partial)."""
    return batch * prod(-(-s // m) for s in outSpatial)


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
    # Little work in all: im2col's set-up (plans, packing, workspace) costs ~50 us a call, the direct loops a few.
    # Through conv.forward / backwardData / backwardParams, us, im2col vs direct: Conv1D N2 3->4 L11 d2 (the
    # benchmark's tiny1d, 504 multiply-adds) 54 / 57 / 47 vs 4.5 / 4.6 / 12; Conv3D N1 2->3 5x4x6 k2 (tiny3d) 54 /
    # 58 / 42 vs 4.3 / 4.5 / 14; N4 4->4 8x8 k3 (37K) 65 / 67 / 54 vs 11 / 11 / 21; N4 2->2 5x5x5 k3 (54K) 91 /
    # 93 / 78 vs 63 / 63 / 33; N1 4->4 6x6x6 k3 (93K) ties (80 vs 78 forward). With more channels the direct loops
    # (written for depthwise) fall behind sooner: N8 8->8 L32 (49K) 56 vs 70 forward, N1 8->8 3x3x3 (47K) 68 vs
    # 130, N4 16->16 L8 (25K) 60 vs 129.
    outSpatial = outputShape(xShape[2:], kernel, stride, pad, dilation)
    work = xShape[0] * o * prod(outSpatial) * cg * prod(kernel)
    if work <= (_TINY_WORK if cg <= 4 else _TINY_WORK // 4) and cg <= 8:
        return "direct"
    # Backward-data of a 2-D stride-1 layer with one group of few input channels (a network's first layers): its
    # result has that few maps, which the direct loops fill faster than im2col's GEMM over them. Same process, us,
    # im2col (the heuristic's pick before) vs direct: N8 1->32 28x28 164 vs 118, N8 3->64 112x112 5204 vs 4264,
    # N8 3->32 64x64 k5 2916 vs 2252, N8 8->32 32x32 1045 vs 616, N16 8->16 32x32 1125 vs 716, N8 12->24 28x28
    # 955 vs 596, N8 12->64 56x56 5020 vs 3875; but N8 16->16 32x32 556 vs 899, and in 1-D and 3-D it varies
    # (Conv1D N8 3->64 L2048 k7 965 vs 1294, Conv3D N2 4->16 16^3 1255 vs 1891).
    if (direction == "backwardData" and len(kernel) == 2 and groups == 1 and cg <= 12 and o <= 64
            and all(s == 1 for s in stride)):
        return "direct"
    # Dilated (conv_polyphase) in every direction: case 8 (64->64 56x56 d2, same-process interleaved, phases
    # stacked along the batch) bwd-data 8.5 vs 11.9 ms, bwd-params 9.3 vs 12.8 (im2col); 128->128 28x28 d2
    # 11.2 vs 14.7, 14.7 vs 17.0.
    if len(kernel) == 1 and _winogradApplies(wShape, stride, dilation):
        # 1-D 3-tap (conv_winograd1d, F(6, 3)), same-process interleaved vs im2col, fwd / bwd-data / bwd-params:
        # N8 64->64 L4096 7.8 / 7.4 / 9.6 vs 13.1 / 12.2 / 13.2 ms; N4 32->32 L1024 0.49 / 0.52 / 0.56 vs
        # 0.74 / 0.77 / 0.74; N2 16->16 L2048 0.25 / 0.23 / 0.33 vs 0.35 / 0.31 / 0.38. Loses below ~4096
        # outputs per map summed over the batch (N1 64->64 L256: 0.32 vs 0.23 forward) or 8 channels (ties),
        # and ties on short maps, whose edge tiles take the bounds-checked path (N64 64->64 L64: 1.71 / 1.75 /
        # 2.13 vs 1.57 / 2.37 / 2.47; N32 L128 wins: 1.13 / 1.19 / 1.80 vs 1.59 / 2.54 / 2.07).
        # With 32 channels and maps and up it wins from 1024 outputs (a later run, median of 9 alternated rounds,
        # Winograd's time / im2col's: N8 64->64 L128 0.87 / 0.80 / 0.44, N1 L1024 0.88 / 0.75 / 0.33, N8 32->32
        # L128 0.96 / 0.61 / 0.61, N16 0.90 / 0.82 / 0.65; with 16, N4 16->16 L256 1.84 / 1.59 / 1.63), and its weight
        # gradient from 256 (N1 64->64 L256 0.34; forward 1.70, bwd-data 1.05).
        out = outSpatial[0]
        deep = cg >= 32 and o // groups >= 32
        least = (256 if direction == "backwardParams" else 1024) if deep else 4096
        return "winograd" if cg >= 16 and o // groups >= 16 and out >= 96 and xShape[0] * out >= least else "im2col"
    if conv_winograd.available and conv_winograd_s2.applies(kernel, stride, dilation):
        # Stride 2 (conv_winograd_s2), against im2col, fwd / bwd-data / bwd-params, time ratios in one process with
        # a 64 MiB array read between calls (caches cold, as in a network's step): case 5 (N8 128->256 28x28) 0.91 /
        # 0.81 / 0.76, N8 64->64 57x57 p0 0.73 / 0.87 / 0.91, N8 64->128 56x56 0.83 / 0.93 / 0.90, N8 96->192
        # 28x28 0.96 / 0.81 / 0.74, N4 128->256 28x28 1.03 / 0.88 / 0.79, N2 1.25 / 1.10 / 0.95. Warm
        # (conv.timeAlgorithms) before the weight gradient went through sgemm: N8 128->128 28x28 0.85 / 0.76 / 0.79,
        # N8 256->256 28x28 0.72 / 0.79 / 0.92. Loses on 7x7 outputs (N8 256->512 14x14, warm 1.12 / 1.01 / 1.69:
        # a quarter of the tiles' outputs wasted, thin GEMMs), on few tiles (N1 128->256 28x28: 1.36 to 1.65), and
        # with 16 channels (1.2 to 1.5). From 32 channels when the maps double (a later run, warm, median of 9
        # alternated rounds): N8 32->64 32x32 0.76 / 0.86 / 0.82, 56x56 0.79 / 0.79 / 0.83, N16 32x32 0.73 / 0.81 /
        # 0.76, N8 48->96 28x28 0.71 / 0.80 / 0.75; but N8 32->32 28x28 0.87 / 1.33 / 0.99.
        tiles = _tileCount(xShape[0], outSpatial, 2)
        if cg >= 32 and o // groups >= (64 if cg >= 64 else 2 * cg) and min(outSpatial) >= 14 \
                and tiles >= (392 if direction == "forward" else 196):
            return "winograd"
        return "im2col"
    if _winogradApplies(wShape, stride, dilation):
        # Enough channels for the 36 GEMMs to run near peak, enough pixels for the tiles to pay off.
        # Measured (benchmarks/engine_micro.py): wins clearly on 64->64 56x56 in every direction, ties on
        # 4 groups of 32 (wins on the weight gradient), loses on 7x7 maps (tiles wasted, large kernel transform).
        # Dilated (conv_polyphase): each phase is a map of outSpatial / dilation.
        phaseSpatial = [s // d for s, d in zip(outSpatial, dilation)]
        # One group of 16 to 47 channels in 2-D: only with many tiles (_FEW_CHANNEL_TILES). Its GEMMs are thin, and
        # its chunks, bounded by a quarter of a result under 2 MiB (conv_winograd.chunkBytes), hold few tiles: N8
        # 32->32 28x28 took about as long as N32 (1.22 vs 1.45 ms forward). Same process, 2 threads, Winograd's
        # time / im2col's, fwd / bwd-data / bwd-params, median of 9 alternated rounds (2026-11-26), tiles of 4x4:
        # N8 32->32 14x14 (128 tiles) 1.57 / 1.43 / 1.48, 20x20 (200) 1.17 / 1.15 / 1.21, N4 28x28 (196) 1.18 /
        # 1.57 / 0.96, N8 (392) 1.24-1.41 / 1.21-1.55 / 1.00-1.06, N8 32x32 (512) 0.87 / 1.00 / 1.26; N16 28x28
        # (784) 0.70-0.77 / 0.66-0.71 / 0.65-0.76, N16 32x32 (1024) 0.41 / 0.40 / 0.44, N8 56x56 (1568) 0.40 /
        # 0.43 / 0.46; 16 channels: N8 16->32 32x32 (512) 0.91 / 1.01 / 1.10, N16 (1024) 0.70 / 0.58 / 0.54. From 48
        # channels on, any map of 12 and more: 48->48 14x14 1.11 / 1.02 / 1.02, 28x28 0.75 / 0.71 / 0.66.
        tiles4 = _tileCount(xShape[0], outSpatial, 4)
        if len(kernel) == 2 and groups == 1 and 16 <= cg < 48:
            if o >= 32 and tiles4 >= _FEW_CHANNEL_TILES and min(phaseSpatial) >= 12:
                return "winograd"
        elif cg >= 32 and o // groups >= 32 and min(phaseSpatial) >= 12:
            return "winograd"
        # Smaller undilated maps run F(2x2, 3x3) (conv_winograd2x2). Same-process interleaved vs im2col, 2 threads,
        # fwd / bwd-data / bwd-params: N8 512->512 7x7 9.3 / 9.5 / 10.3 vs 13.4 / 13.6 / 12.3 ms (torch 8.3 / 8.2 /
        # 12.5 in the same run); N4 10.3 / 11.5 / 11.1 vs 13.6 / 14.2 / 12.0 (loaded host); N8 64->64 7x7 0.72 /
        # 0.62 / 0.87 vs 0.81 / 0.77 / 1.03. Lost on few tiles (the weight gradient of N2 512->512 7x7, 32 tiles:
        # 7.9 vs 7.0 ms; every direction of N1, 16 tiles), and an earlier session measured a loss with 32 channels
        # (forward 0.56 vs 0.32 ms). Re-measured with 32 to 63 channels, it wins from 128 tiles (same measure as
        # the F(4x4) figures above): N8 32->32 7x7 (128 tiles) 0.77 / 0.80 / 1.04, N16 0.88 / 0.82 / 0.85, N32
        # 32->64 4x4 (128) 0.68 / 0.81 / 0.76, 8x8 (512) 0.63 / 0.54 / 0.70, but N8 32->64 4x4 (32 tiles) 1.47 /
        # 2.05 / 1.01.
        tiles = _tileCount(xShape[0], outSpatial, 2)
        deep = cg >= 64 and o // groups >= 64 and tiles >= (64 if direction == "backwardParams" else 32)
        if (conv_winograd2x2.preferred(xShape, wShape, pad) and tuple(dilation) == (1, 1)
                and (deep or (cg >= 32 and o // groups >= 32 and tiles >= 128))):
            return "winograd"
    return "im2col"


def workspaceBytes(direction, algo, xShape, wShape, stride, pad, dilation, groups, dtype=np.float32):
    """Scratch memory (bytes) an algorithm needs beyond its inputs and its result (an estimate of the
    largest buffers)."""
    itemsize = np.dtype(dtype).itemsize
    xShape, wShape = tuple(xShape), tuple(wShape)
    n, c = xShape[:2]
    o, cg = wShape[:2]
    kernel = wShape[2:]
    outSpatial = outputShape(xShape[2:], kernel, stride, pad, dilation)
    weights = o * cg * prod(kernel) * itemsize
    if algo == "gemm" and direction == "backwardParams" and conv_pointwise.preferred(xShape, wShape, groups, dtype):
        return conv_pointwise.workspaceBytes(xShape, wShape, groups, itemsize)
    if algo == "gemm" and direction != "backwardParams":
        return conv_im2col.gemmWorkspace(direction, xShape, wShape, groups, itemsize)
    if algo == "gemm":
        return o * cg * itemsize * max(1, n) if direction == "backwardParams" else 0
    if algo == "direct":
        return 0
    if algo == "winograd" and len(kernel) == 1:
        if direction == "backwardData":
            return (conv_winograd1d.workspaceBytes((n, o) + outSpatial, c, 2 - pad[0], itemsize, groups)
                    + weights + 8 * o * cg * itemsize)  # the flipped kernel and its transform
        # forward: the kernel transform; backwardParams: one GEMM temporary per thread, as large.
        return (conv_winograd1d.workspaceBytes(xShape, o, pad[0], itemsize, groups,
                                               grad=direction == "backwardParams") + 8 * o * cg * itemsize)
    if algo == "winograd" and len(kernel) == 3:
        return conv_winograd3d.workspaceBytes(xShape, wShape, pad, groups, itemsize,
                                              grad=direction == "backwardParams") + weights
    if algo == "winograd" and conv_winograd_s2.applies(kernel, stride, dilation):
        return conv_winograd_s2.workspaceBytes(direction, xShape, wShape, pad, groups, itemsize)
    if algo == "winograd" and tuple(dilation) != (1,) * len(kernel):
        return conv_polyphase.workspaceBytes(direction, xShape, wShape, pad, dilation, groups, itemsize)
    if algo == "winograd" and conv_winograd2x2.preferred(xShape, wShape, pad):
        return conv_winograd2x2.workspaceBytes(direction, xShape, wShape, pad, groups, itemsize)
    if algo == "winograd":
        u = 36 * o * cg * itemsize
        if direction == "backwardData":
            dyShape = (n, o) + outSpatial
            return (conv_winograd.workspaceBytes(dyShape, c, tuple(2 - p for p in pad), itemsize, groups=groups)
                    + u + weights)
        if direction == "forward":
            return conv_winograd.workspaceBytes(xShape, o, pad, itemsize, groups=groups) + u
        resultBytes = max(prod(xShape), n * o * prod(outSpatial)) * itemsize
        return conv_winograd.workspaceBytes(xShape, o, pad, itemsize, resultBytes=resultBytes,
                                            grad=True, groups=groups) + 2 * u
    if direction == "forward" and conv_implicit.preferred(xShape, wShape, stride, pad, dilation, groups, dtype):
        return conv_implicit.workspaceBytes(xShape, wShape, stride, pad, dilation, groups, itemsize)
    if direction == "backwardParams" and conv_implicit.backwardParamsPreferred(xShape, wShape, stride, pad, dilation,
                                                                              groups, dtype):
        return conv_implicit.backwardParamsWorkspace(xShape, wShape, stride, pad, groups, itemsize)
    if direction == "backwardData" and conv_phases.preferred(xShape, wShape, stride, dilation, groups):
        return conv_phases.workspaceBytes(xShape, (n, o) + outSpatial, wShape, stride, pad, itemsize)
    if direction == "backwardData" and conv_col2im.preferred(xShape, wShape, stride, pad, dilation):
        return conv_col2im.workspaceBytes(xShape, wShape, stride, pad, dilation, itemsize)
    # im2col: its tiles bounded as the call's (conv_common.tileBytesFor the call's result), its own buffers.
    result = {"forward": n * o * prod(outSpatial), "backwardData": prod(xShape),
              "backwardParams": max(prod(xShape), n * o * prod(outSpatial))}[direction] * itemsize  # as the calls
    return conv_im2col.workspaceBytes(direction, xShape, wShape, stride, pad, dilation, groups, dtype,
                                      conv_common.tileBytesFor(result))


# -- the three directions -----------------------------------------------------------------------------
# Each direction bounds its tiles by its result's size; its scratch buffers stay for the next call (endCall).
def forward(x, w, bias, stride, pad, dilation, groups, algo=None):
    # Small inputs are all overhead (the page example): a shape the direct kernels served before goes
    # straight to its prepared runner, one dictionary lookup instead of the heuristic's and the plan's.
    key = (x.shape, w.shape, x.dtype, stride, pad, dilation, groups, algo)
    run = _directRunners.get(key)
    if run is not None:
        return run(x, w, bias)
    if algo is None:
        algo = chooseAlgorithm("forward", x.shape, w.shape, stride, pad, dilation, groups)
    if algo == "direct":  # no scratch buffers: straight through
        return _directForward(key, stride, pad, dilation, groups)(x, w, bias)
    conv_common.beginCall(x.itemsize * x.shape[0] * w.shape[0] *
                          prod(outputShape(x.shape[2:], w.shape[2:], stride, pad, dilation)))
    try:
        if algo == "gemm" and isPointwise(w.shape[2:], stride, pad):
            return conv_im2col.gemmForward(x, w, bias, groups)
        if algo == "im2col" and conv_implicit.preferred(x.shape, w.shape, stride, pad, dilation, groups, x.dtype):
            return conv_implicit.forward(x, w, bias, stride, pad, dilation, groups)
        if algo == "im2col":
            return conv_im2col.im2colForward(x, w, bias, stride, pad, dilation, groups)
        if algo == "winograd" and _winogradApplies(w.shape, stride, dilation):
            if conv_polyphase.applies(w.shape[2:], stride, dilation):
                return conv_polyphase.forward(x, w, bias, pad, dilation, groups)
            return _winograd(w.shape, x.shape, stride, pad, dilation).forward(x, w, bias, pad, groups)
    finally:
        conv_common.endCall()
    raise _badAlgo("forward", algo, x.shape, w.shape, stride, pad, dilation, groups)


_directRunners, _directRunnersT = {}, {}


def forwardRunner(xShape, wShape, dtype, stride, pad, dilation, groups, algo=None):
    """``run(x, w, bias) -> y`` for inputs of exactly these shapes and dtype: the direct kernels' prepared runner
    where they serve the shape (a caller that keeps it skips even forward's lookup), else ``forward``."""
    xShape, wShape = tuple(xShape), tuple(wShape)
    if (algo or chooseAlgorithm("forward", xShape, wShape, stride, pad, dilation, groups)) == "direct":
        return _directForward((xShape, wShape, np.dtype(dtype), stride, pad, dilation, groups, algo), stride, pad,
                              dilation, groups)
    return lambda x, w, bias: forward(x, w, bias, stride, pad, dilation, groups, algo)


def _directForward(key, stride, pad, dilation, groups):
    """The direct kernels' prepared forward runner for ``key`` (forward's: shapes, dtype, parameters, algo)."""
    xShape, wShape, dtype = key[:3]
    return memo(_directRunners, key, lambda: conv_direct.forwardRunner(xShape, wShape, stride, pad, dilation, groups,
                                                                      dtype))


def backwardData(dy, w, xShape, stride, pad, dilation, groups, algo=None):
    xShape = tuple(xShape)
    key = (dy.shape, w.shape, xShape, dy.dtype, stride, pad, dilation, groups, algo)  # as in forward
    run = _directRunnersT.get(key)
    if run is not None:
        return run(dy, w)
    if algo is None:
        algo = chooseAlgorithm("backwardData", xShape, w.shape, stride, pad, dilation, groups)
    if algo == "direct":
        run = memo(_directRunnersT, key, lambda: conv_direct.backwardDataRunner(dy.shape, w.shape, xShape, stride,
                                                                                pad, dilation, groups, dy.dtype))
        return run(dy, w)
    conv_common.beginCall(dy.itemsize * prod(xShape))
    try:
        if algo == "gemm" and isPointwise(w.shape[2:], stride, pad):
            return conv_im2col.gemmBackwardData(dy, w, xShape, groups)
        if algo == "im2col" and conv_phases.preferred(xShape, w.shape, stride, dilation, groups):
            return conv_phases.backwardData(dy, w, xShape, stride, pad, groups)
        if algo == "im2col" and conv_col2im.preferred(xShape, w.shape, stride, pad, dilation):
            return conv_col2im.backwardData(dy, w, xShape, stride, pad, dilation, groups)
        if algo == "im2col":
            return conv_im2col.im2colBackwardData(dy, w, xShape, stride, pad, dilation, groups)
        if algo == "winograd" and _winogradApplies(w.shape, stride, dilation):
            if conv_polyphase.applies(w.shape[2:], stride, dilation):
                return conv_polyphase.backwardData(dy, w, xShape, pad, dilation, groups)
            return _winograd(w.shape, xShape, stride, pad, dilation).backwardData(dy, w, xShape, pad, groups)
    finally:
        conv_common.endCall()
    raise _badAlgo("backwardData", algo, xShape, w.shape, stride, pad, dilation, groups)


def backwardParams(x, dy, wShape, withBias, stride, pad, dilation, groups, algo=None):
    """Gradients of the weights (shaped wShape) and of the bias ((O,) or None)."""
    wShape = tuple(wShape)
    if algo is None:
        algo = chooseAlgorithm("backwardParams", x.shape, wShape, stride, pad, dilation, groups)
    if algo == "direct":
        dw = conv_direct.backwardParams(x, dy, wShape, stride, pad, dilation, groups)
        return dw, conv_im2col.biasGrad(dy) if withBias else None
    # The weight gradient is small; its tiles are bounded by the larger of the data it reads.
    conv_common.beginCall(max(x.size, dy.size) * x.itemsize)
    try:
        if algo == "gemm" and isPointwise(wShape[2:], stride, pad):
            if conv_pointwise.preferred(x.shape, wShape, groups, x.dtype):
                dw = conv_pointwise.backwardParams(x, dy, wShape, groups)
            else:
                dw = conv_im2col.gemmBackwardParams(x, dy, wShape, groups)
        elif algo == "im2col" and conv_implicit.backwardParamsPreferred(x.shape, wShape, stride, pad, dilation,
                                                                         groups, x.dtype):
            return conv_implicit.backwardParams(x, dy, wShape, stride, pad, dilation, groups, withBias)
        elif algo == "im2col":  # the bias gradient may come out of the weight gradient's GEMMs
            return conv_im2col.im2colBackwardParamsAndBias(x, dy, wShape, withBias, stride, pad, dilation, groups)
        elif algo == "winograd" and _winogradApplies(wShape, stride, dilation):
            if conv_polyphase.applies(wShape[2:], stride, dilation):
                dw = conv_polyphase.backwardParams(x, dy, wShape, pad, dilation, groups)
            else:
                dw = _winograd(wShape, x.shape, stride, pad, dilation).backwardParams(x, dy, wShape, pad, groups)
        else:
            raise _badAlgo("backwardParams", algo, x.shape, wShape, stride, pad, dilation, groups)
    finally:
        conv_common.endCall()
    return dw, conv_im2col.biasGrad(dy) if withBias else None


def _winogradApplies(wShape, stride, dilation):
    return conv_winograd.available and (conv_winograd.applies(wShape[2:], stride, dilation)
                                        or conv_winograd_s2.applies(wShape[2:], stride, dilation)
                                        or conv_winograd1d.applies(wShape[2:], stride, dilation)
                                        or conv_winograd3d.applies(wShape[2:], stride, dilation)
                                        or conv_polyphase.applies(wShape[2:], stride, dilation))


def _winograd(wShape, xShape, stride, pad, dilation):
    """2-D 3x3 kernels: conv_winograd (F(4x4, 3x3)), or conv_winograd2x2 (F(2x2, 3x3)) on the maps it is
    preferred for, or with stride 2 conv_winograd_s2; 3-D (kD, 3, 3) kernels: conv_winograd3d (depth slices
    stacked); 1-D 3-tap kernels: conv_winograd1d (F(6, 3))."""
    if conv_winograd_s2.applies(wShape[2:], stride, dilation):
        return conv_winograd_s2
    if len(wShape) == 4 and conv_winograd2x2.preferred(xShape, wShape, pad):
        return conv_winograd2x2
    return {5: conv_winograd3d, 3: conv_winograd1d}.get(len(wShape), conv_winograd)


def _checkDirection(direction):
    if direction not in DIRECTIONS:
        raise ValueError(f"Unknown direction {direction!r} (expected one of {', '.join(DIRECTIONS)})")


def _badAlgo(direction, algo, xShape, wShape, stride, pad, dilation, groups):
    names = algorithms(direction, xShape, wShape, stride, pad, dilation, groups)
    return ValueError(f"Algorithm {algo!r} does not apply to this {direction} convolution "
                      f"(applicable: {', '.join(names)})")


# -- measuring ----------------------------------------------------------------------------------------
def timeAlgorithms(direction, xShape, wShape, stride, pad, dilation, groups, dtype=np.float32, memlimit=None,
                   repeats=5, withBias=True, minSample=0.002):
    """Time every applicable algorithm on random data of this shape.

    Returns [(algo, seconds, workspace bytes)], fastest first; algorithms whose workspace exceeds
    ``memlimit`` bytes are left out. Each candidate is called twice untimed first (numba compilation,
    first-touch page faults), then the candidates are timed interleaved, ``repeats`` rounds in a rotating
    order (so load from elsewhere hits them alike); a sample loops until it lasts ``minSample`` seconds;
    the median sample counts. Nothing allocated here outlives the call.
    """
    _checkDirection(direction)
    xShape, wShape = tuple(xShape), tuple(wShape)
    names = []
    for algo in algorithms(direction, xShape, wShape, stride, pad, dilation, groups):
        need = workspaceBytes(direction, algo, xShape, wShape, stride, pad, dilation, groups, dtype)
        if memlimit is None or need <= memlimit:
            names.append((algo, need))
    if not names:
        return []
    call = _benchCall(direction, xShape, wShape, stride, pad, dilation, groups, dtype, withBias)
    try:
        samples = _timeInterleaved(call, [algo for algo, _ in names], repeats, minSample)
    finally:
        workspace.release()  # the candidates' scratch, kept between their calls
    results = [(algo, statistics.median(samples[algo]), need) for algo, need in names]
    results.sort(key=lambda r: r[1])
    return results


def _timeInterleaved(call, order, repeats, minSample):
    """{algo: [seconds per call of each sample]} (see timeAlgorithms)."""
    inner = {}
    for algo in order:
        call(algo)
        start = time.perf_counter()
        call(algo)
        inner[algo] = max(1, min(1000, int(minSample / max(time.perf_counter() - start, 1e-7))))
    samples = {algo: [] for algo in order}
    for rep in range(max(1, repeats)):
        shift = rep % len(order)
        for algo in order[shift:] + order[:shift]:
            start = time.perf_counter()
            for _ in range(inner[algo]):
                call(algo)
            samples[algo].append((time.perf_counter() - start) / inner[algo])
    return samples


def optimizeAlgorithm(direction, xShape, wShape, stride, pad, dilation, groups, dtype=np.float32, memlimit=None,
                      repeats=5, withBias=True, margin=0.03):
    """The algorithm to keep for this shape: (algo, timings as from timeAlgorithms).

    The heuristic's pick is always among the candidates (when it fits ``memlimit``) and is kept unless
    another measured at least ``margin`` faster, so noise cannot swap in a slower algorithm. When
    nothing fits ``memlimit``, the algorithm with the smallest workspace is returned.
    """
    xShape, wShape = tuple(xShape), tuple(wShape)
    results = timeAlgorithms(direction, xShape, wShape, stride, pad, dilation, groups, dtype=dtype,
                             memlimit=memlimit, repeats=repeats, withBias=withBias)
    if not results:
        names = algorithms(direction, xShape, wShape, stride, pad, dilation, groups)
        smallest = min(names, key=lambda a: workspaceBytes(direction, a, xShape, wShape, stride, pad, dilation,
                                                           groups, dtype))
        return smallest, results
    default = chooseAlgorithm(direction, xShape, wShape, stride, pad, dilation, groups)
    best, bestTime, _ = results[0]
    byName = {r[0]: r[1] for r in results}
    if default in byName and best != default and bestTime > byName[default] * (1 - margin):
        best = default
    return best, results


def _benchCall(direction, xShape, wShape, stride, pad, dilation, groups, dtype, withBias):
    rng = np.random.default_rng(0)
    outSpatial = outputShape(xShape[2:], wShape[2:], stride, pad, dilation)
    w = rng.standard_normal(wShape).astype(dtype)
    if direction == "forward":
        x = rng.standard_normal(xShape).astype(dtype)
        bias = np.zeros(wShape[0], dtype=dtype) if withBias else None
        return lambda a: forward(x, w, bias, stride, pad, dilation, groups, algo=a)
    dy = rng.standard_normal((xShape[0], wShape[0]) + outSpatial).astype(dtype)
    if direction == "backwardData":
        return lambda a: backwardData(dy, w, xShape, stride, pad, dilation, groups, algo=a)
    x = rng.standard_normal(xShape).astype(dtype)
    return lambda a: backwardParams(x, dy, wShape, withBias, stride, pad, dilation, groups, algo=a)


def clearWorkspace():
    """Drop the scratch buffers the engine keeps between calls (``conv_common.HELD_BYTES``)."""
    workspace.release()


def heldBytes():
    """Bytes of the scratch buffers kept between calls."""
    return workspace.nbytes
