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
from PuzzleLib.Engines.cpu.conv_common import prod, tileBytes, workspace


def preferred(xShape, stride):
    """Strided backward-data of more than one item (one item would leave every thread but one idle). The rule
    does not depend on the thread count, so a shape gets the same bits on any. Same process, directions
    interleaved, 2 threads, quiet host, ms, medians (min): shared col2im vs whole items per thread (vs stride
    phases, conv_phases): case 5 (N8 128->256 s2 28x28) 9.4-10.0 (min 8.7) vs 6.5-7.1 (6.2) (phases 7.9-8.8);
    N8 64->128 s2 56x56 10.4 vs 8.1; N8 128->128 28x28 7.4 vs 4.7 (phases 4.9); N8 64->64 g2 2.0 vs 1.2 (1.9);
    N8 1-D 64->64 L4096 6.0-6.7 vs 4.6-5.2 (4.8-4.9); N3 128->256 28x28 3.6 vs 3.5.
    On a loaded host (one core in effect) alike: case 5 12.9 vs 13.0, case 3 (3->64 k7 s2) 34.3 vs 32.5."""
    return conv_im2col.useNumba and 3 <= len(xShape) <= 5 and any(s > 1 for s in stride) and xShape[0] > 1


def backwardData(dy, w, xShape, stride, pad, dilation, groups):
    n, o = dy.shape[:2]
    c = xShape[1]
    kernel = tuple(w.shape[2:])
    dx = np.zeros(xShape, dtype=dy.dtype)
    if n == 0 or min(dy.shape[2:]) <= 0:
        return dx
    taps = prod(kernel)
    ck = c * taps
    og, ckg = o // groups, ck // groups
    x5, tables, o5 = conv_im2col._fastPlanT(dx, kernel, stride, pad, dilation)
    assert tuple(o5[-dy.ndim + 2:]) == tuple(dy.shape[2:])
    rowLen = o5[2]
    rows = o5[0] * o5[1]
    wgT = np.ascontiguousarray(w).reshape(groups, og, ckg).transpose(0, 2, 1)
    dyg = np.ascontiguousarray(dy).reshape(n, groups, og, -1)
    # One item's row bands (the same for every item, in equal parts: a last band of a row or two runs a thin
    # GEMM). Two threads' bands in flight within the call's bound, or a whole item each if one fits that bound
    # (case 5: 0.9 MiB of columns per item, bound 1.5 MiB; bands of 12 + 2 rows: 7.2-7.8 ms, whole items 6.5-7.1).
    rowBytes = ck * rowLen * dy.itemsize
    limit = tileBytes()
    step = rows if rows * rowBytes <= limit else max(1, min(rows, limit // 2 // rowBytes))
    step = -(-rows // -(-rows // step))
    tiles = [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]
    workers = conv_common.chunkWorkers(n)
    runs = [range(n * k // workers, n * (k + 1) // workers) for k in range(workers)]
    size = max(r1 - r0 for r0, r1 in tiles) * rowLen * ck
    buffers = [workspace.get(f"col2im-items{k}", (size,), dy.dtype) for k in range(workers)]  # not thread-safe

    def work(k):
        for item in runs[k]:
            for r0, r1 in tiles:
                span = (r1 - r0) * rowLen
                dcols = buffers[k][:ck * span]
                np.matmul(wgT, dyg[item, :, :, r0 * rowLen:r1 * rowLen], out=dcols.reshape(groups, ckg, span))
                conv_im2col._scatterRowsT(x5, dcols, *tables, item, 1, r0, r1, 0, span, ck * span, 0, ck)

    conv_common.runChunks(work, workers)  # BLAS single-threaded in the workers
    return dx
