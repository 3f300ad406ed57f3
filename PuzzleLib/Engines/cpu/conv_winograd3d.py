"""3-D convolutions with a (kD, 3, 3) kernel, unit stride and dilation, through the 2-D Winograd F(4x4, 3x3).

Every output depth slice is a 2-D convolution of the kD input slices it covers, stacked as channels:
y[n, :, od] = conv2d(concat_kd x[n, :, od + kd - pd], W'), W'[o, (kd, c)] = W[o, c, kd]. Groups stay
contiguous: the stacked channels are ordered (group, kd, c).

Forward (and backward-data, the forward convolution of the gradient with the flipped, transposed kernel) never
stacks copies: it takes one batch item's output slices in runs, transforms each input slice the run reads once
(conv_winograd's input transform, into V laid out (36, groups, slices, C/g, tiles)), and the kD slices of an
output slice are then one (kD * C/g, tiles) window of V for the GEMMs; the runs are dealt out to the threads
in contiguous shares (each output slice computed whole by one thread: the split changes no bit). The weight
gradient walks the same runs: each gradient slice transformed once, dU[k] += Mg[k, od] @ window[k, od]^T per
output slice, in two fixed partial sums (the thread count does not change the result). The error bound is
conv_winograd's.
"""

import numpy as np

from PuzzleLib.Engines.cpu import conv_common, conv_winograd
from PuzzleLib.Engines.cpu.conv_common import biasVector, runs, workspace

available = conv_winograd.available

# Forward: the least bound of one worker's run (transformed slices and products; conv_winograd.chunkBytes
# of the result when larger). The N2 32->32 16x32x32 case ran 7.0 ms with 2 MiB runs (2 output slices),
# 5.4 ms with 4 MiB (6). The weight gradient's runs follow conv_winograd.chunkBytes only (_gradRunBytes).
STACK_BYTES = 1 << 20


def applies(kernel, stride, dilation):
    return (len(kernel) == 3 and tuple(kernel[1:]) == (3, 3) and tuple(stride) == (1, 1, 1)
            and tuple(dilation) == (1, 1, 1))


def _stackedKernel(w, groups):
    """(O, C/g, kD, 3, 3) -> (O, kD * C/g, 3, 3) with channels ordered (kd, c)."""
    o, cg, kd_ = w.shape[:3]
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4)).reshape(o, kd_ * cg, 3, 3)


def _sliceChunks(n, od_, kd_, sliceBytes, outBytes, limit):
    """[(item, d0, d1)]: runs of output slices whose transformed inputs (d1 - d0 + kD - 1 slices) and
    products fit ``limit``; at least one output slice."""
    step = max(1, min(od_, (limit - (kd_ - 1) * sliceBytes) // max(sliceBytes + outBytes, 1)))
    return [(i, d0, min(od_, d0 + step)) for i in range(n) for d0 in range(0, od_, step)], step


def _plan(xShape, o, kd_, od_, pad, limit, itemsize):
    """A call's runs of output slices: (th, tw) Winograd tiles per slice, the bytes of one transformed input
    slice and of one output slice's products, the runs [(item, d0, d1)] and their longest length."""
    n, c, d, h, w = xShape
    th, tw = conv_winograd._tiles(h, w, (pad[1], pad[2]))
    sliceBytes, outBytes = 36 * c * th * tw * itemsize, 36 * o * th * tw * itemsize
    chunks, step = _sliceChunks(n, od_, kd_, sliceBytes, outBytes, limit)
    return (th, tw), sliceBytes, outBytes, chunks, step


def _transformRun(x, run, bufs, kd_, o, groups, pad, tiles, cst, products=None):
    """One run (item, d0, d1): its input slices transformed into V (36, groups, slices, C/g, tiles) on the
    worker's buffers; returns the products' buffer M (36, groups, ``products`` output slices (default: the
    run's), O/g, tiles) and the window of V whose output slice j reads rows (kd, c) = slices j .. j + kD - 1
    (V's own strides, no copy)."""
    item, d0, d1 = run
    c = x.shape[1]
    cg, og, P = c // groups, o // groups, tiles[0] * tiles[1]
    s, nd = d1 - d0 + kd_ - 1, d1 - d0
    products = nd if products is None else products
    v = bufs[0][:36 * c * s * P].reshape(36, groups, s, cg, P)
    m = bufs[1][:36 * o * products * P].reshape(36, groups, products, og, P)
    _transformSlices(x, item, d0, v, pad, *tiles, cst)
    win = np.lib.stride_tricks.as_strided(v, (36, groups, nd, kd_ * cg, P), v.strides, writeable=False)
    return m, win


def _transformSlices(x, item, d0, v, pad, th, tw, cst):
    """Winograd input transform of the depth slices d0 - pD .. of one batch item into V (36, groups, s, C/g,
    tiles), slice j of V from input slice d0 + j - pD; slices outside the input are zeros (the depth padding)."""
    c, d = x.shape[1], x.shape[2]
    s, cg, P = v.shape[2], v.shape[3], v.shape[4]
    flatV = v.reshape(36, -1)
    for j in range(s):
        src = d0 + j - pad[0]
        if 0 <= src < d:
            conv_winograd._inputTransform(x[item:item + 1, :, src], flatV, j * cg * P, s * cg * P, cg,
                                          pad[1], pad[2], th, tw, 0, th, cst, 0, c, 0, 6)
        else:
            v[:, :, j] = 0


def forward(x, w, bias, pad, groups):
    """Each input depth slice is transformed once per run of output slices and shared by the kD taps:
    V is laid out (36, groups, slices, C/g, tiles), so the kD slices an output slice reads are one
    (kD * C/g, tiles) matrix, a strided window of V, and one batched GEMM per output slice serves all its
    taps (no stacked copies of the input, kD x fewer input transforms)."""
    n, c, d, h, wd = x.shape
    o, cg, kd_ = w.shape[:3]
    og, pd, ph, pw = o // groups, pad[0], pad[1], pad[2]
    od_ = d + 2 * pd - kd_ + 1
    y = np.empty((n, o, max(od_, 0), h + 2 * ph - 2, wd + 2 * pw - 2), dtype=x.dtype)
    if od_ <= 0 or n == 0 or min(y.shape[3:]) <= 0:
        return y
    u = conv_winograd.kernelTransform(_stackedKernel(w, groups), groups)[:, :, None]  # (36, G, 1, O/g, kD C/g)
    tiles, _, _, chunks, step = _plan(x.shape, o, kd_, od_, pad, max(
        STACK_BYTES, conv_winograd.chunkBytes(y.nbytes)), x.itemsize)
    P = tiles[0] * tiles[1]
    workers = conv_common.chunkWorkers(len(chunks))
    shares = runs(chunks, workers)
    biasv = biasVector(bias, o, x.dtype)
    cst = conv_winograd.transformConstants(x.dtype)
    # The products of one output slice at a time: case 3d's scratch 3.92 -> 3.35 MiB (tracemalloc), at one more
    # batched GEMM call per output slice (same time). Its whole peak had tied torch's in benchmarks/conv.py (RSS:
    # 7.8 MiB each, 4 MiB of it the result). The runs are still cut (_sliceChunks) as if they held every output
    # slice's products: the same runs, the same speed, scratch below the bound.
    bufs = [(workspace.get(f"wino3-v{k}", (36 * c * (step + kd_ - 1) * P,), x.dtype),
             workspace.get(f"wino3-m{k}", (36 * o * P,), x.dtype)) for k in range(workers)]

    def work(k):
        for item, d0, d1 in shares[k]:
            m, win = _transformRun(x, (item, d0, d1), bufs[k], kd_, o, groups, pad, tiles, cst, products=1)
            flatM = m.reshape(36, -1)
            for j in range(d1 - d0):
                np.matmul(u, win[:, :, j:j + 1], out=m)
                conv_winograd._outputTransform(flatM, 0, og * P, og, y[item:item + 1, :, d0 + j], biasv, *tiles, 0,
                                               tiles[0], cst, 0, o)

    conv_common.runChunks(work, workers)
    return y


def backwardData(dy, w, xShape, pad, groups):
    from PuzzleLib.Engines.cpu.conv_common import transposedPad
    from PuzzleLib.Engines.cpu.conv_im2col import flippedKernel

    dx = forward(dy, flippedKernel(w, groups), None, transposedPad(w.shape[2:], pad, (1, 1, 1)), groups)
    assert dx.shape == tuple(xShape)
    return dx


def _gradRunBytes(xBytes, dyBytes):
    """The weight gradient's run bound: conv_winograd's chunk bound for the larger of its inputs."""
    return conv_winograd.chunkBytes(max(xBytes, dyBytes))


def backwardParams(x, dy, wShape, pad, groups):
    """Weight gradient over the same runs as forward: each input slice of a run transformed once, each
    gradient slice once; dU[k, g] += Mg[k, g, od] (O/g, tiles) @ window[k, g, od]^T (tiles, kD * C/g) for
    every output slice, summed in two fixed partial sums (the thread count does not change the result)."""
    n, c = x.shape[:2]
    o, od_ = dy.shape[1:3]
    cg, kd_ = wShape[1], wShape[2]
    og = o // groups
    if n == 0 or od_ <= 0 or min(dy.shape[3:]) <= 0:
        return np.zeros(wShape, dtype=x.dtype)
    tiles, _, _, chunks, step = _plan(x.shape, o, kd_, od_, pad, _gradRunBytes(x.nbytes, dy.nbytes), x.itemsize)
    P = tiles[0] * tiles[1]
    parts = conv_winograd._GRAD_PARTS
    shares = runs(chunks, parts)
    workers = conv_common.chunkWorkers(min(parts, len(chunks)))
    cst = conv_winograd.transformConstants(x.dtype)
    sums = [workspace.get(f"wino3-dU{r}", (36, groups, og, kd_ * cg), x.dtype, zero=True) for r in range(parts)]
    mark = workspace.mark()  # the transform buffers follow: rewound before the kernel-space transform
    bufs = [(workspace.get(f"wino3-v{k}", (36 * c * (step + kd_ - 1) * P,), x.dtype),
             workspace.get(f"wino3-m{k}", (36 * o * step * P,), x.dtype),
             workspace.get(f"wino3-du{k}", (36, groups, og, kd_ * cg), x.dtype)) for k in range(workers)]

    def work(k, r):
        part = bufs[k][2]
        for item, d0, d1 in shares[r]:
            m, win = _transformRun(x, (item, d0, d1), bufs[k], kd_, o, groups, pad, tiles, cst)
            flatM = m.reshape(36, -1)
            for j in range(d1 - d0):
                conv_winograd._gradTransform(dy[item:item + 1, :, d0 + j], flatM, j * og * P, (d1 - d0) * og * P, og,
                                             *tiles, 0, tiles[0], cst, 0, o, 0, 6)
            for j in range(d1 - d0):
                np.matmul(m[:, :, j], win[:, :, j].transpose(0, 1, 3, 2), out=part)
                sums[r] += part

    conv_common.dealParts(work, parts, workers)
    for r in range(1, parts):
        sums[0] += sums[r]
    holder = [sums[0]]
    sums.clear()
    bufs.clear()  # the transform buffers are dead (the list is shared with work: its views go too) and
    workspace.rewind(mark)  # the kernel-space transform reuses their memory
    dw2 = conv_winograd.kernelGradient(holder, (o, kd_ * cg, 3, 3))
    return np.ascontiguousarray(dw2.reshape(o, kd_, cg, 3, 3).transpose(0, 2, 1, 3, 4))


def workspaceBytes(xShape, wShape, pad, groups, itemsize, grad=False):
    """Forward (and backward-data): the transformed slices of one run and the products of one output slice per
    worker, and the kernel transform; ``grad``: the transformed slices and products of one run per worker plus
    its dU-sized product, the partial sums of dU and the kernel-space transform's temporaries."""
    n, c, d, h, w = xShape
    o, kd_ = wShape[0], wShape[2]
    od_ = max(0, d + 2 * pad[0] - kd_ + 1)
    oh, ow = max(0, h + 2 * pad[1] - 2), max(0, w + 2 * pad[2] - 2)
    resultBytes = n * o * od_ * oh * ow * itemsize
    u = 36 * o * kd_ * (c // groups) * itemsize
    limit = (_gradRunBytes(n * c * d * h * w * itemsize, resultBytes) if grad
             else max(STACK_BYTES, conv_winograd.chunkBytes(resultBytes)))
    (th, tw), sliceBytes, outBytes, chunks, run = _plan(xShape, o, kd_, max(od_, 1), pad, limit, itemsize)
    workers = conv_common.chunkWorkers(min(conv_winograd._GRAD_PARTS, len(chunks)) if grad else len(chunks))
    scratch = workers * 72 * max(conv_winograd.VECTOR_SPAN, th * tw) * itemsize
    if not grad:  # each worker's transformed slices and one output slice's products
        return workers * ((run + kd_ - 1) * sliceBytes + outBytes) + scratch + 2 * u
    perWorker = (run + kd_ - 1) * sliceBytes + run * outBytes  # each worker's transformed slices and products
    # One dU-sized product per worker, the partial sums of dU, and the kernel-space transform's temporaries
    # (dU and half of it).
    return workers * (perWorker + u) + scratch + conv_winograd._GRAD_PARTS * u + 2 * u
