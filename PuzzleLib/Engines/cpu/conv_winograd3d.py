"""3-D convolutions with a (kD, 3, 3) kernel, unit stride and dilation, through the 2-D Winograd F(4x4, 3x3).

Every output depth slice is a 2-D convolution of the kD input slices it covers, stacked as channels:
y[n, :, od] = conv2d(concat_kd x[n, :, od + kd - pd], W'), W'[o, (kd, c)] = W[o, c, kd]. The stacked input
(kD copies of the input, zero slices past the depth border) is one batch of N * OD images with kD * C
channels for conv_winograd, which then does 4x fewer multiplies than im2col and a 3x shorter gather
than a 27-tap column buffer. Groups stay contiguous: the stacked channels are ordered (group, kd, c).
Backward-data is the forward convolution of the gradient with the flipped, transposed kernel; the
weight gradient is conv_winograd's over the same stacked input. The error bound is conv_winograd's.
"""

import numpy as np

from PuzzleLib.Engines.cpu import conv_winograd
from PuzzleLib.Engines.cpu.conv_common import workspace

available = conv_winograd.available


def applies(kernel, stride, dilation):
    return (len(kernel) == 3 and tuple(kernel[1:]) == (3, 3) and tuple(stride) == (1, 1, 1)
            and tuple(dilation) == (1, 1, 1))


def _stack(x, kd_, pd, groups):
    """(N * OD, groups * kD * C/g, H, W): slice od + kd - pd of each group's channels, zero outside."""
    n, c, d, h, w = x.shape
    cg = c // groups
    od_ = d + 2 * pd - kd_ + 1
    xs = workspace.get("wino3d-stack", (n, od_, groups, kd_, cg, h, w), x.dtype)
    src = x.reshape(n, groups, cg, d, h, w).transpose(0, 3, 1, 2, 4, 5)   # (N, D, groups, C/g, H, W)
    for kd in range(kd_):
        lo, hi = max(0, pd - kd), max(0, min(od_, d + pd - kd))
        lo = min(lo, hi)
        xs[:, :lo, :, kd] = 0
        xs[:, hi:, :, kd] = 0
        if hi > lo:
            xs[:, lo:hi, :, kd] = src[:, lo + kd - pd:hi + kd - pd]
    return xs.reshape(n * od_, groups * kd_ * cg, h, w), od_


def _stackedKernel(w, groups):
    """(O, C/g, kD, 3, 3) -> (O, kD * C/g, 3, 3) with channels ordered (kd, c)."""
    o, cg, kd_ = w.shape[:3]
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4)).reshape(o, kd_ * cg, 3, 3)


def _unstack(y2, n, od_):
    """(N * OD, O, OH, OW) -> (N, O, OD, OH, OW)."""
    return np.ascontiguousarray(y2.reshape((n, od_) + y2.shape[1:]).transpose(0, 2, 1, 3, 4))


def forward(x, w, bias, pad, groups):
    n = x.shape[0]
    xs, od_ = _stack(x, w.shape[2], pad[0], groups)
    if od_ <= 0 or n == 0:
        return np.empty((n, w.shape[0], max(od_, 0), x.shape[3] + 2 * pad[1] - 2, x.shape[4] + 2 * pad[2] - 2),
                        dtype=x.dtype)
    y2 = conv_winograd.forward(xs, _stackedKernel(w, groups), bias, (pad[1], pad[2]), groups)
    return _unstack(y2, n, od_)


def backwardData(dy, w, xShape, pad, groups):
    from PuzzleLib.Engines.cpu.conv_im2col import flippedKernel, transposedPad

    dx = forward(dy, flippedKernel(w, groups), None, transposedPad(w.shape[2:], pad, (1, 1, 1)), groups)
    assert dx.shape == tuple(xShape)
    return dx


def backwardParams(x, dy, wShape, pad, groups):
    n, o, od_ = dy.shape[:3]
    cg, kd_ = wShape[1], wShape[2]
    xs, _ = _stack(x, kd_, pad[0], groups)
    dy2 = np.ascontiguousarray(dy.transpose(0, 2, 1, 3, 4)).reshape((n * od_, o) + dy.shape[3:])
    dw2 = conv_winograd.backwardParams(xs, dy2, (o, kd_ * cg, 3, 3), (pad[1], pad[2]), groups)
    return np.ascontiguousarray(dw2.reshape(o, kd_, cg, 3, 3).transpose(0, 2, 1, 3, 4))


def workspaceBytes(xShape, wShape, pad, groups, itemsize):
    """Stacked input plus conv_winograd's buffers for the stacked problem (elements * itemsize)."""
    n, c, d, h, w = xShape
    kd_ = wShape[2]
    od_ = max(0, d + 2 * pad[0] - kd_ + 1)
    stacked = n * od_ * kd_ * c * h * w
    inner = conv_winograd.workspaceBytes((n * od_, kd_ * c, h, w), wShape[0], (pad[1], pad[2]))
    return (stacked + inner + 36 * wShape[0] * kd_ * (c // groups)) * itemsize
