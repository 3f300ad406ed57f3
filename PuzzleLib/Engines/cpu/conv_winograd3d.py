"""3-D convolutions with a (kD, 3, 3) kernel, unit stride and dilation, through the 2-D Winograd F(4x4, 3x3).

Every output depth slice is a 2-D convolution of the kD input slices it covers, stacked as channels:
y[n, :, od] = conv2d(concat_kd x[n, :, od + kd - pd], W'), W'[o, (kd, c)] = W[o, c, kd]. The stacked input
(kD copies of the input, zero slices past the depth border) is one batch of N * OD images with kD * C
channels for conv_winograd, which then does 4x fewer multiplies than im2col and a 3x shorter gather
than a 27-tap column buffer. Groups stay contiguous: the stacked channels are ordered (group, kd, c).
Backward-data is the forward convolution of the gradient with the flipped, transposed kernel; the
weight gradient is conv_winograd's over the same stacked input. The error bound is conv_winograd's.

The stack is never built whole (kD copies of the input): each call walks one batch item's output depth
slices in chunks of at most ``STACK_BYTES`` of stacked input (one reused buffer, released on return),
the forward writes each chunk straight into its place in the (N, O, OD, OH, OW) result, and the weight
gradient adds the chunks' (small) kernel-space gradients in a fixed order.
"""

import numpy as np

from PuzzleLib.Engines.cpu import conv_winograd

available = conv_winograd.available

# Bound of the stacked-input chunk of one call (at least one output slice is stacked at a time). The
# N2 32->32 16x32x32 case ran as fast with 1 MiB chunks (2 slices) as with the whole stack (12 MiB).
STACK_BYTES = 1 << 20


def applies(kernel, stride, dilation):
    return (len(kernel) == 3 and tuple(kernel[1:]) == (3, 3) and tuple(stride) == (1, 1, 1)
            and tuple(dilation) == (1, 1, 1))


def _chunks(n, od_, sliceBytes):
    """[(item, d0, d1)]: output depth slices of each item, at most STACK_BYTES of stacked input each."""
    step = max(1, min(od_, STACK_BYTES // max(sliceBytes, 1)))
    return [(i, d0, min(od_, d0 + step)) for i in range(n) for d0 in range(0, od_, step)], step


def _stackInto(buf, x, item, d0, d1, kd_, pd, groups):
    """buf[j] (groups * kD * C/g, H, W) = slices d0 + j + kd - pd of item's channels, per group; zero outside."""
    _, c, d, h, w = x.shape
    cg = c // groups
    xs = buf[:d1 - d0].reshape(d1 - d0, groups, kd_, cg, h, w)
    src = x[item].reshape(groups, cg, d, h, w).transpose(2, 0, 1, 3, 4)  # (D, groups, C/g, H, W)
    for kd in range(kd_):
        lo, hi = max(d0, pd - kd), min(d1, d + pd - kd)  # output slices whose input slice is in bounds
        if hi <= lo:
            xs[:, :, kd] = 0
            continue
        xs[:lo - d0, :, kd] = 0
        xs[hi - d0:, :, kd] = 0
        xs[lo - d0:hi - d0, :, kd] = src[lo + kd - pd:hi + kd - pd]
    return buf[:d1 - d0]


def _stackedKernel(w, groups):
    """(O, C/g, kD, 3, 3) -> (O, kD * C/g, 3, 3) with channels ordered (kd, c)."""
    o, cg, kd_ = w.shape[:3]
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4)).reshape(o, kd_ * cg, 3, 3)


def forward(x, w, bias, pad, groups):
    n, c, d, h, wd = x.shape
    o, _, kd_ = w.shape[:3]
    od_ = d + 2 * pad[0] - kd_ + 1
    y = np.empty((n, o, max(od_, 0), h + 2 * pad[1] - 2, wd + 2 * pad[2] - 2), dtype=x.dtype)
    if od_ <= 0 or n == 0 or min(y.shape[3:]) <= 0:
        return y
    w2 = _stackedKernel(w, groups)
    u = conv_winograd.kernelTransform(w2, groups)
    chunks, step = _chunks(n, od_, kd_ * c * h * wd * x.itemsize)
    buf = np.empty((step, kd_ * c, h, wd), dtype=x.dtype)
    # The Winograd chunks follow the whole call's result, not one stack chunk's.
    winoBytes = conv_winograd.chunkBytes(y.nbytes)
    for item, d0, d1 in chunks:
        xs = _stackInto(buf, x, item, d0, d1, kd_, pad[0], groups)
        out = y[item, :, d0:d1].transpose(1, 0, 2, 3)  # (slices, O, OH, OW) view of the result
        conv_winograd.forward(xs, w2, bias, (pad[1], pad[2]), groups, winoBytes, u=u, out=out)
    return y


def backwardData(dy, w, xShape, pad, groups):
    from PuzzleLib.Engines.cpu.conv_im2col import flippedKernel, transposedPad

    dx = forward(dy, flippedKernel(w, groups), None, transposedPad(w.shape[2:], pad, (1, 1, 1)), groups)
    assert dx.shape == tuple(xShape)
    return dx


def backwardParams(x, dy, wShape, pad, groups):
    n, c, d, h, wd = x.shape
    o, od_ = dy.shape[1:3]
    cg, kd_ = wShape[1], wShape[2]
    dw2 = np.zeros((o, kd_ * cg, 3, 3), dtype=x.dtype)
    if n == 0 or od_ <= 0:
        return dw2.reshape(o, kd_, cg, 3, 3).transpose(0, 2, 1, 3, 4).copy()
    chunks, step = _chunks(n, od_, kd_ * c * h * wd * x.itemsize)
    buf = np.empty((step, kd_ * c, h, wd), dtype=x.dtype)
    dybuf = np.empty((step, o) + dy.shape[3:], dtype=x.dtype)
    winoBytes = conv_winograd.chunkBytes(max(x.nbytes, dy.nbytes))
    for item, d0, d1 in chunks:
        xs = _stackInto(buf, x, item, d0, d1, kd_, pad[0], groups)
        dys = dybuf[:d1 - d0]
        np.copyto(dys, dy[item, :, d0:d1].transpose(1, 0, 2, 3))
        dw2 += conv_winograd.backwardParams(xs, dys, dw2.shape, (pad[1], pad[2]), groups, winoBytes)
    return np.ascontiguousarray(dw2.reshape(o, kd_, cg, 3, 3).transpose(0, 2, 1, 3, 4))


def workspaceBytes(xShape, wShape, pad, groups, itemsize, grad=False):
    """One stacked-input chunk plus conv_winograd's buffers for it (and, with ``grad``, the weight
    gradient's dy chunk, transformed-gradient and per-chunk kernel-space gradient)."""
    n, c, d, h, w = xShape
    o, kd_ = wShape[0], wShape[2]
    od_ = max(0, d + 2 * pad[0] - kd_ + 1)
    sliceElems = kd_ * c * h * w
    _, step = _chunks(1, max(od_, 1), sliceElems * itemsize)
    oh, ow = max(0, h + 2 * pad[1] - 2), max(0, w + 2 * pad[2] - 2)
    resultBytes = n * o * od_ * oh * ow * itemsize
    u = 36 * o * kd_ * (c // groups) * itemsize
    if not grad:
        inner = conv_winograd.workspaceBytes((step, kd_ * c, h, w), o, (pad[1], pad[2]), itemsize,
                                             resultBytes=resultBytes)
        return step * sliceElems * itemsize + inner + u
    winoBytes = conv_winograd.chunkBytes(max(n * c * d * h * w * itemsize, resultBytes))
    inner = conv_winograd.workspaceBytes((step, kd_ * c, h, w), o, (pad[1], pad[2]), itemsize,
                                         tileBytes=winoBytes)
    dyChunk = step * o * oh * ow * itemsize
    return step * sliceElems * itemsize + dyChunk + inner + 2 * u + o * kd_ * (c // groups) * 9 * itemsize
