"""Backward-data as GEMM + col2im with whole batch items per thread (own GEMMs, own scatter).

conv_im2col._fastBackwardData shares each tile's GEMM between the threads (split by columns) and then
splits its scatter over channel ranges: two hand-offs per tile, each waiting for the slower thread. Here
each thread takes a contiguous run of items and, per row tile of an item (in order), runs the tile's GEMM
on single-threaded BLAS and scatters its columns into that item's part of dx: no thread ever waits for
another until the end. Each dx element sums its terms tile by tile and, within a tile, in tap order, as
the shared version does: the same bits on any number of threads.

The compiled scatter and its tables are conv_im2col's (_fastPlanT, _scatterRowsT).
"""

import numpy as np

from PuzzleLib.Engines.cpu import conv_common, conv_im2col
from PuzzleLib.Engines.cpu.conv_common import evenStep, outputShape, prod, tileBytes, workspace


def preferred(xShape, wShape, stride, pad, dilation):
    """Strided backward-data of more than one item with at least _MIN_WORK multiply-adds (one item would leave
    every thread but one idle; on small convolutions the calls per item cost more than the shared version's
    hand-offs: N4 32->32 s2 14x14, 1.8M multiply-adds, shared col2im 0.20 ms vs items 0.28). The rule does not
    depend on the thread count, so a shape gets the same bits on any. Same process, directions interleaved,
    2 threads, quiet host, ms, medians (min): shared col2im vs whole items per thread (vs stride phases,
    conv_phases): case 5 (N8 128->256 s2 28x28) 9.4-10.0 (min 8.7) vs 6.5-7.1 (6.2) (phases 7.9-8.8); N8 64->128
    s2 56x56 10.4 vs 8.1; N8 128->128 28x28 7.4 vs 4.7 (phases 4.9); N8 64->64 g2 2.0 vs 1.2 (1.9); N8 1-D
    64->64 L4096 6.0-6.7 vs 4.6-5.2 (4.8-4.9); N3 128->256 28x28 3.6 vs 3.5; N8 64->64 14x14 0.90 vs 0.63.
    On a loaded host (one core in effect) alike: case 5 12.9 vs 13.0, case 3 (3->64 k7 s2) 34.3 vs 32.5."""
    if not (conv_im2col.useNumba and 3 <= len(xShape) <= 5 and any(s > 1 for s in stride) and xShape[0] > 1):
        return False
    pixels = prod(outputShape(xShape[2:], wShape[2:], stride, pad, dilation))
    return xShape[0] * prod(wShape) * pixels >= _MIN_WORK


# Multiply-adds of the backward-data GEMMs below which the shared col2im runs faster (see preferred).
_MIN_WORK = 4 << 20


def backwardData(dy, w, xShape, stride, pad, dilation, groups):
    dx, operands = conv_im2col.col2imOperands(dy, w, xShape, stride, pad, dilation, groups)
    if operands is None:
        return dx
    x5, tables, o5, wgT, dyg = operands
    n, ck = dy.shape[0], xShape[1] * prod(w.shape[2:])
    ckg, rowLen, rows = ck // groups, o5[2], o5[0] * o5[1]
    units = _units(n, rows, ck * rowLen * dy.itemsize, tileBytes())
    workers = conv_common.chunkWorkers(n)
    # Contiguous runs of items, one per thread (all bands of an item on one thread: they add into the same rows).
    items = sorted({n0 for n0, _, _, _ in units})
    runs = [[u for u in units if u[0] in run] for run in conv_common.runs(items, workers)]
    size = max((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in units) * rowLen * ck
    buffers = [workspace.get(f"col2im-items{k}", (size,), dy.dtype) for k in range(workers)]  # not thread-safe

    def work(k):
        for n0, n1, r0, r1 in runs[k]:
            nb, span = n1 - n0, (r1 - r0) * rowLen
            dcols = buffers[k][:nb * ck * span]
            np.matmul(wgT, dyg[n0:n1, :, :, r0 * rowLen:r1 * rowLen], out=dcols.reshape(nb, groups, ckg, span))
            conv_im2col._scatterRowsT(x5, dcols, *tables, n0, nb, r0, r1, 0, span, ck * span, 0, ck)

    conv_common.runChunks(work, workers)  # BLAS single-threaded in the workers
    return dx


def _units(n, rows, rowBytes, limit):
    """Units of work (n0, n1, r0, r1), fixed by the shape: groups of whole items, as many as fit half the call's
    bound, but at least two groups (small items one by one spend as long in calls as in work: N8 64->64 s2 14x14,
    shared col2im 0.91 ms vs items one by one 1.14); one whole item where one fits the whole bound (case 5: 0.9
    MiB of columns per item, bound 1.5 MiB; bands of 12 + 2 rows: 7.2-7.8 ms, whole items 6.5-7.1); else row
    bands of each item in equal parts (a last band of a row or two runs a thin GEMM), in order."""
    if rows * rowBytes <= limit:
        group = max(1, min(-(-n // 2), limit // 2 // (rows * rowBytes)))
        return [(n0, min(n, n0 + group), 0, rows) for n0 in range(0, n, group)]
    step = max(1, min(rows, limit // 2 // rowBytes))
    step = evenStep(rows, step)
    return [(item, item + 1, r0, min(rows, r0 + step)) for item in range(n) for r0 in range(0, rows, step)]


def workspaceBytes(xShape, wShape, stride, pad, dilation, itemsize):
    """One column buffer per thread, as large as the largest unit's columns."""
    n, c = xShape[:2]
    out = outputShape(xShape[2:], wShape[2:], stride, pad, dilation)
    rowLen, rows = out[-1], prod(out[:-1])
    rowBytes = c * prod(wShape[2:]) * rowLen * itemsize
    units = _units(n, rows, rowBytes, conv_common.tileBytesFor(prod(xShape) * itemsize))
    return conv_common.chunkWorkers(n) * max((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in units) * rowBytes
