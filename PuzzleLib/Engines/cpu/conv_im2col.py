"""Convolution as GEMM: 1x1 kernels on the input itself, any other kernel through tiled im2col.

``gemm*``: a 1x1, stride-1, unpadded convolution is a (batched, grouped) matrix product on the
input's own storage, no copy.

``im2col*``: the input patches of one tile (a few batch items, or a band of output rows of one
item) are gathered into a reused column buffer of at most ``TILE_BYTES`` with one strided copy per
kernel tap, then one batched GEMM per tile writes straight into the output. Padding is never
materialised: each tap copies only its in-bounds range and zeroes the rest of its slab.
Backward-data with unit stride is the forward convolution of the gradient with the flipped,
transposed kernel (a gather, no scatter-add); with larger strides it is GEMM + col2im.
Backward-params folds the batch into the GEMM's inner dimension, tile by tile.
"""

import numpy as np

from PuzzleLib.Engines.cpu import conv_common, sgemm
from PuzzleLib.Engines.cpu.conv_common import (
    as5,
    lead3,
    outputShape,
    parallel,
    params3,
    prod,
    ranges,
    rowTiles,
    shape5,
    tapRange,
    tileBytes,
    transposedPad,
    workspace,
)

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; the numpy gather is the fallback
    njit = None

useNumba = njit is not None


# -- 1x1 convolutions ----------------------------------------------------------------------------
def gemmForward(x, w, bias, groups):
    n, c = x.shape[:2]
    o = w.shape[0]
    y = np.empty((n, o) + x.shape[2:], dtype=x.dtype)
    wg = w.reshape(groups, o // groups, c // groups)
    xg = np.ascontiguousarray(x).reshape(n, groups, c // groups, -1)
    yg = y.reshape(n, groups, o // groups, -1)
    if _packedGemm(x.dtype, c, groups) and y.size:
        _itemsPacked(wg[0], xg[:, 0], yg[:, 0], bias)
    else:
        _itemsMatmul(wg, xg, yg, None if bias is None else bias.reshape(1, groups, -1, 1))
    return y


def _packedGemm(dtype, c, groups):
    """Whether gemmForward runs through sgemm (see _itemsPacked): one group (several made many small products,
    1.31x OpenBLAS's time on N8 128->128 28x28 in 4 groups) and an inner dimension sgemm takes."""
    return groups == 1 and kernelForward(dtype, c)


def _itemsPacked(w, b, out, bias):
    """out = w @ b (+ bias) for one group, through sgemm: w (rows, K), any strides, packed; the bias (or zeros)
    starting the sums (no pass over the output afterwards); b (N, K, pixels) read in place; fixed runs of whole
    items per thread as _itemsMatmul, or, with one item or little work, the columns split between the threads.

    Forward against OpenBLAS and its bias pass (_itemsMatmul), same process, two threads, median of 25 paired
    ratios, two runs: N8 256->64 56x56 (case 2) 0.90-0.95, 64->256 56x56 0.92-0.94, 128->128 28x28 0.93-0.95,
    N1 256->64 56x56 0.92."""
    panels = sgemm.packA(w, workspace.get("gemm-packed", sgemm.packedShape(*w.shape), out.dtype))
    rows = sgemm.biasRows(bias, w.shape[0])
    _byItems(out.shape[0], out.size * w.shape[1],
             lambda: _packedProduct(panels, rows, b, out, True, None),
             lambda items: _packedProduct(panels, rows, b[items], out[items], False, sgemm.Scratch()))


def _byItems(n, work, whole, run):
    """whole() with fewer than _GEMM_PARTS items or little ``work`` (it splits its columns itself), else
    run(items) for _GEMM_PARTS fixed runs of whole items, one thread each: the runs depend on the shape alone, so
    the result does not depend on the thread count."""
    if n < _GEMM_PARTS or work < conv_common.PARALLEL_WORK:
        whole()
        return
    parts = ranges(n, _GEMM_PARTS)
    conv_common.dealParts(lambda _, j: run(slice(*parts[j])), _GEMM_PARTS)


def gemmWorkspace(direction, xShape, wShape, groups, itemsize):
    """Bytes of gemmForward's or gemmBackwardData's scratch: the packed weights (sgemm) and each thread's edge
    tiles; none on BLAS."""
    c, o = xShape[1], wShape[0]
    dtype = np.dtype(f"f{itemsize}")
    if direction == "forward" and _packedGemm(dtype, c, groups):
        rows, depth = o, c
    elif direction == "backwardData" and _packedGemmData(dtype, c, o, groups):
        rows, depth = c, o
    else:
        return 0
    return (int(np.prod(sgemm.packedShape(rows, depth))) + _GEMM_PARTS * sgemm.Scratch.elements(depth)) * itemsize


def gemmBackwardData(dy, w, xShape, groups):
    n, o = dy.shape[:2]
    c = xShape[1]
    dx = np.empty(xShape, dtype=dy.dtype)
    wg = w.reshape(groups, o // groups, c // groups)
    dyg = np.ascontiguousarray(dy).reshape(n, groups, o // groups, -1)
    dxg = dx.reshape(n, groups, c // groups, -1)
    if _packedGemmData(dy.dtype, c, o, groups) and dx.size:
        _itemsPacked(wg[0].T, dyg[:, 0], dxg[:, 0], None)
    else:
        _itemsMatmul(wg.transpose(0, 2, 1), dyg, dxg)
    return dx


def _packedGemmData(dtype, c, o, groups):
    """Whether gemmBackwardData runs through sgemm (w^T packed): one group, and an inner dimension (the maps) of
    128 or more and at least the rows (the channels). Same process, two threads, against OpenBLAS, median of 25
    paired ratios: N8 64->256 56x56 0.76-0.80, 128->512 28x28 0.88, 128->128 28x28 0.92-0.94, N1 64->256 56x56
    0.91; kept on BLAS: 256->64 56x56 (case 2) 1.11-1.14, 64->64 56x56 1.06 (the tile stores its outputs after
    too few steps)."""
    return groups == 1 and 128 <= o and c <= o and kernelForward(dtype, o)


def _itemsMatmul(a, b, out, bias=None):
    """out = a @ b (+ bias) over items (b and out: items first). Several items: fixed runs of whole items per
    thread, full-width GEMMs, each adding the bias to its own items while they are in cache; same process,
    interleaved, N8 256->64 56x56 forward 7.25 -> 6.85 ms and 64->256 9.66 -> 7.57 against output columns cut
    in two (conv_common.matmul) and a separate bias pass. One item: its columns cut (conv_common.matmul)."""
    def whole():
        conv_common.matmul(a, b, out)
        if bias is not None:
            np.add(out, bias, out=out)

    def run(items):
        np.matmul(a, b[items], out=out[items])
        if bias is not None:
            out[items] += bias

    _byItems(out.shape[0], out.size * a.shape[-1], whole, run)


_GEMM_PARTS = 2


def gemmBackwardParams(x, dy, wShape, groups):
    n, c = x.shape[:2]
    o = dy.shape[1]
    og, cg = o // groups, c // groups
    xs = x.reshape(n, groups, cg, -1)
    dys = dy.reshape(n, groups, og, -1)
    dw = np.zeros((groups, og, cg), dtype=x.dtype)
    # Batched products per chunk of items, summed: the (items, O, C/g) temporary stays bounded.
    step = max(1, min(n, (8 << 20) // max(o * cg * x.itemsize, 1)))
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        part = workspace.get("gemm-dw", (n1 - n0, groups, og, cg), x.dtype)
        conv_common.matmul(dys[n0:n1], xs[n0:n1].transpose(0, 1, 3, 2), part)
        dw += part.sum(axis=0)
    return dw.reshape(wShape)


# -- gather / scatter ------------------------------------------------------------------------------
def _tapBox(tap, spatial, outSpatial, stride, pad, dilation, r0, r1):
    """(input slices, output box) of one kernel tap within output rows [r0, r1), or None when empty."""
    src, box = [], []
    for axis, (t, s, p, d) in enumerate(zip(tap, stride, pad, dilation)):
        lo, hi, start = tapRange(spatial[axis], outSpatial[axis], t, s, p, d)
        if axis == 0:  # restrict to the tile's rows, relative to r0
            lo2, hi2 = max(lo, r0), min(hi, r1)
            start += (lo2 - lo) * s
            lo, hi = lo2 - r0, hi2 - r0
        if hi <= lo:
            return None
        box.append(slice(lo, hi))
        src.append(slice(start, start + (hi - lo - 1) * s + 1, s))
    return tuple(src), tuple(box)


def _gather(cols, x, kernel, stride, pad, dilation, outSpatial, r0, r1):
    """cols[n, c, *tap, *out] = x[n, c, out * s + tap * d - p] (zero out of bounds) for output rows [r0, r1).

    ``cols`` is a view indexed (n, c, *kernel, r1 - r0, *outSpatial[1:]), whatever its memory layout.
    """
    outs = (r1 - r0,) + tuple(outSpatial[1:])
    every = (slice(None), slice(None))
    for tap in np.ndindex(*kernel):
        dest = cols[every + tap]
        found = _tapBox(tap, x.shape[2:], outSpatial, stride, pad, dilation, r0, r1)
        if found is None:
            dest[...] = 0
            continue
        src, box = found
        dest[(Ellipsis,) + box] = x[every + src]
        _zeroOutside(dest, box, outs)


def _zeroOutside(dest, box, outs):
    lead = dest.ndim - len(outs)
    for axis, (sl, size) in enumerate(zip(box, outs)):
        pre = (slice(None),) * (lead + axis)
        if sl.start > 0:
            dest[pre + (slice(0, sl.start),)] = 0
        if sl.stop < size:
            dest[pre + (slice(sl.stop, size),)] = 0


def _scatterAdd(dx, dcols, kernel, stride, pad, dilation, outSpatial, r0, r1):
    """Adjoint of _gather: dx[n, c, out * s + tap * d - p] += dcols[n, c, *tap, *out] (in-bounds only)."""
    every = (slice(None), slice(None))
    for tap in np.ndindex(*kernel):
        found = _tapBox(tap, dx.shape[2:], outSpatial, stride, pad, dilation, r0, r1)
        if found is not None:
            src, box = found
            dx[every + src] += dcols[every + tap + box]


def _rowBytes(ck, outSpatial, itemsize):
    return ck * prod(outSpatial[1:]) * itemsize


# -- forward -----------------------------------------------------------------------------------------
def im2colForward(x, w, bias, stride, pad, dilation, groups):
    if _fastApplies(x.ndim):
        return _fastForward(x, w, bias, stride, pad, dilation, groups)
    n, c = x.shape[:2]
    o = w.shape[0]
    kernel = w.shape[2:]
    outSpatial = outputShape(x.shape[2:], kernel, stride, pad, dilation)
    y = np.empty((n, o) + outSpatial, dtype=x.dtype)
    if min(outSpatial + (n,)) <= 0:
        return y
    ck = c * prod(kernel)
    rowLen = prod(outSpatial[1:])
    wg = w.reshape(groups, o // groups, ck // groups)
    yg = y.reshape(n, groups, o // groups, -1)
    for n0, n1, r0, r1 in rowTiles(n, outSpatial[0], _rowBytes(ck, outSpatial, x.itemsize)):
        tileShape = (n1 - n0, c) + tuple(kernel) + (r1 - r0,) + tuple(outSpatial[1:])
        cols = workspace.get("im2col", tileShape, x.dtype)
        _gather(cols, x[n0:n1], kernel, stride, pad, dilation, outSpatial, r0, r1)
        np.matmul(wg, cols.reshape(n1 - n0, groups, ck // groups, -1),
                  out=yg[n0:n1, :, :, r0 * rowLen:r1 * rowLen])
    _addBias(y, bias)
    return y


def _addBias(y, bias):
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * (y.ndim - 2))


# -- backward data -----------------------------------------------------------------------------------
def flippedKernel(w, groups):
    """The kernel of the transposed convolution: (C, O // groups, *kernel), spatially flipped."""
    o, cg = w.shape[:2]
    kernel = w.shape[2:]
    wt = w.reshape((groups, o // groups, cg) + kernel).swapaxes(1, 2).reshape((groups * cg, o // groups) + kernel)
    return np.ascontiguousarray(wt[(slice(None), slice(None)) + (slice(None, None, -1),) * len(kernel)])


def im2colBackwardData(dy, w, xShape, stride, pad, dilation, groups):
    kernel = w.shape[2:]
    # The gather needs a flipped copy of the kernel; when that outweighs the result (deep, small maps:
    # 512->512 on 7x7 copies 9 MiB for a 0.8 MiB dx), GEMM + col2im is as fast and needs only its tile.
    if _flipsKernel(stride, w.nbytes, dy.itemsize * prod(xShape), xShape[1] // groups):
        dx = im2colForward(dy, flippedKernel(w, groups), None, stride, transposedPad(kernel, pad, dilation),
                           dilation, groups)
        assert dx.shape == tuple(xShape)
        return dx
    if _fastApplies(dy.ndim):
        return _fastBackwardData(dy, w, xShape, stride, pad, dilation, groups)
    return _col2imBackwardData(dy, w, xShape, stride, pad, dilation, groups)


# Input channels per group up to which backward-data takes GEMM + col2im over the flipped kernel (_flipsKernel).
_FEW_CHANNELS = 4


def _flipsKernel(stride, wBytes, dxBytes, channels):
    """Whether backward-data runs as the forward convolution of dy with the flipped kernel (see
    im2colBackwardData): not with a few input channels per group either (a network's first layer), whose
    flipped forward is a GEMM of that few rows over a gather of every map's taps, where GEMM + col2im makes
    (channels x taps) rows from the maps. Same process, ms, flipped vs GEMM + col2im: N8 4->64 56x56 k3 6.5 vs
    1.4, N32 1->16 28x28 k5 3.6 vs 0.62, N16 3->32 32x32 1.9 vs 0.53, Conv3D N4 3->16 8x16x16 1.7 vs 1.2,
    N8 16->64 groups 4 28x28 2.3 vs 0.88; from 6 channels on it varies (N8 6->32 28x28 0.71 vs 0.62, 8->64 56x56
    4.5 vs 3.2, but 64->64 in 8 groups 1.5 vs 3.2, 16->64 56x56 5.4 vs 6.5)."""
    return all(s == 1 for s in stride) and wBytes <= dxBytes and channels > _FEW_CHANNELS


def _col2imBackwardData(dy, w, xShape, stride, pad, dilation, groups):
    n, o = dy.shape[:2]
    c = xShape[1]
    kernel = w.shape[2:]
    outSpatial = dy.shape[2:]
    dx = np.zeros(xShape, dtype=dy.dtype)
    ck = c * prod(kernel)
    rowLen = prod(outSpatial[1:])
    wgT = w.reshape(groups, o // groups, ck // groups).transpose(0, 2, 1)
    dyg = dy.reshape(n, groups, o // groups, -1)
    for n0, n1, r0, r1 in rowTiles(n, outSpatial[0], _rowBytes(ck, outSpatial, dy.itemsize)):
        tileShape = (n1 - n0, c) + tuple(kernel) + (r1 - r0,) + tuple(outSpatial[1:])
        dcols = workspace.get("col2im", tileShape, dy.dtype)
        np.matmul(wgT, dyg[n0:n1, :, :, r0 * rowLen:r1 * rowLen],
                  out=dcols.reshape(n1 - n0, groups, ck // groups, -1))
        _scatterAdd(dx[n0:n1], dcols, kernel, stride, pad, dilation, outSpatial, r0, r1)
    return dx


# -- backward params ---------------------------------------------------------------------------------
def im2colBackwardParamsAndBias(x, dy, wShape, withBias, stride, pad, dilation, groups):
    """(dw, db or None): the bias gradient taken from the weight gradient's GEMMs where they can carry it."""
    if _fastApplies(x.ndim):
        return _fastBackwardParams(x, dy, wShape, stride, pad, dilation, groups, withBias)
    return im2colBackwardParams(x, dy, wShape, stride, pad, dilation, groups), biasGrad(dy) if withBias else None


def im2colBackwardParams(x, dy, wShape, stride, pad, dilation, groups):
    """The weight gradient by column tiles and BLAS (inputs _fastApplies takes go to _fastBackwardParams)."""
    n, c = x.shape[:2]
    o = dy.shape[1]
    kernel = tuple(wShape[2:])
    outSpatial = dy.shape[2:]
    ck = c * prod(kernel)
    rowLen = prod(outSpatial[1:])
    dw = np.zeros((groups, o // groups, ck // groups), dtype=x.dtype)
    bytesPerRow = _rowBytes(ck + o, outSpatial, x.itemsize)
    for n0, n1, r0, r1 in rowTiles(n, outSpatial[0], bytesPerRow):
        nb, rows = n1 - n0, r1 - r0
        # Batch-folded layout (C, *kernel, items, rows...): one GEMM per tile with inner size items * pixels.
        cols = workspace.get("im2col-dw", (c,) + kernel + (nb, rows) + tuple(outSpatial[1:]), x.dtype)
        order = (1 + len(kernel), 0) + tuple(range(1, 1 + len(kernel))) + tuple(range(2 + len(kernel), cols.ndim))
        _gather(cols.transpose(order), x[n0:n1], kernel, stride, pad, dilation, outSpatial, r0, r1)
        dyt = workspace.get("im2col-dy", (o, nb, rows * rowLen), x.dtype)
        np.copyto(dyt, dy.reshape(n, o, -1)[n0:n1, :, r0 * rowLen:r1 * rowLen].transpose(1, 0, 2))
        colsT = cols.reshape(groups, ck // groups, -1).transpose(0, 2, 1)
        dw += np.matmul(dyt.reshape(groups, o // groups, -1), colsT)
    return dw.reshape(wShape)


def biasGrad(dy):
    """dy summed over the batch and the pixels: per item and map a sum over its pixels (numpy's pairwise sum of
    one contiguous row), then the items added in order. Maps are split between threads (case 3's 25 MiB dy:
    1.0 -> 0.55 ms); each map's sum is the same on any number of threads."""
    n, o = dy.shape[:2]
    rows = np.ascontiguousarray(dy).reshape(n, o, prod(dy.shape[2:]))
    db = np.empty(o, dtype=dy.dtype)

    def part(o0, o1):
        np.sum(rows[:, o0:o1].sum(axis=2), axis=0, out=db[o0:o1])

    parallel(part, o, rows.size)
    return db


# -- compiled gather (numba): contiguous row copies into small, cache-sized tiles --------------------------
# The numpy gather above makes one strided copy per kernel tap over the whole tile; with few channels
# (3 -> 64, 7x7 taps) or many taps (3x3x3) those copies are small and slow, and the 8 MiB tile leaves the
# GEMM reading from memory. The compiled gather copies one output row (the last spatial axis) at a time,
# split between threads over (channel, tap) rows, into a tile small enough to stay in cache for the GEMM
# (the call's bound from conv_common.rowTiles: 1 to 4 MiB, which measured alike).
# A stride > 1 along the last axis is turned into unit stride by de-interleaving the input once
# (xs[..., phase, j] = x[..., j * s + phase]), so every row copy is contiguous and vectorises.


def _gatherRows5(xs, cols, phase, base, lo, hi, st, pd, dl, kshape, oshape, n0, r0, r1, k0, k1, kBase, cBase, kPitch,
                 itemPitch):
    """flat cols[b * itemPitch + (k - kBase) * kPitch + (r - r0) * OW + ow] for tap rows k in [k0, k1), items
    b < cols.shape[0] and output rows r (= od * OH + oh) in [r0, r1): (items, rows, pixels) with _tileLayout,
    or (rows, items, pixels) for the weight gradient.

    xs is (N, C, D, H, S, Wq) (S = stride of the last axis, de-interleaved); along that axis tap kw reads
    xs[..., phase[kw], base[kw] + ow] for ow in [lo[kw], hi[kw]) and is zero elsewhere. Indexing is on
    flat views with precomputed offsets: the rows are short (tens of elements), per-row cost matters. xs may
    hold only channels from cBase on (channel c at xs[:, c - cBase]).
    """
    nb = cols.shape[0]
    dd_, hh_, ss_, wq_ = xs.shape[2], xs.shape[3], xs.shape[4], xs.shape[5]
    kd_, kh_, kw_ = kshape[0], kshape[1], kshape[2]
    oh_, ow_ = oshape[1], oshape[2]
    taps = kd_ * kh_ * kw_
    rowPitch = ss_ * wq_
    planePitch = hh_ * rowPitch
    chanPitch = dd_ * planePitch
    srcItemPitch = xs.shape[1] * chanPitch
    src = xs.reshape(-1)
    dst = cols.reshape(-1)
    zero = cols.dtype.type(0)
    # Scalars in locals: loaded from their arrays in the row loop, they were reloaded per row (LLVM cannot tell
    # that the stores into cols leave them alone); case 5's gather ran 7% faster (one thread, one item).
    st0, st1, dl0, dl1, pd0, pd1 = st[0], st[1], dl[0], dl[1], pd[0], pd[1]
    for k in range(k0, k1):
        c = k // taps
        t = k % taps
        kd = t // (kh_ * kw_)
        kh = (t // kw_) % kh_
        kw = t % kw_
        l0, l1 = lo[kw], hi[kw]
        tapBase = (c - cBase) * chanPitch + phase[kw] * wq_ + base[kw]
        for b in range(nb):
            out = b * itemPitch + (k - kBase) * kPitch
            itemBase = (n0 + b) * srcItemPitch + tapBase
            od = r0 // oh_
            oh = r0 % oh_
            for _ in range(r1 - r0):
                idd = od * st0 + kd * dl0 - pd0
                ih = oh * st1 + kh * dl1 - pd1
                if idd < 0 or idd >= dd_ or ih < 0 or ih >= hh_ or l1 <= l0:
                    for j in range(ow_):
                        dst[out + j] = zero
                else:
                    for j in range(l0):
                        dst[out + j] = zero
                    first = np.uintp(out + l0)
                    at = np.uintp(itemBase + idd * planePitch + ih * rowPitch + l0)
                    for j in range(np.uintp(l1 - l0)):
                        dst[first + j] = src[at + j]
                    for j in range(l1, ow_):
                        dst[out + j] = zero
                out += ow_
                oh += 1
                if oh == oh_:
                    oh = 0
                    od += 1


def _deinterleave5(x, xs, s, n0, c0, c1, cBase):
    """xs[b, c - cBase, d, h, p, j] = x[n0 + b, c, d, h, j * s + p] for items b < len(xs), channels [c0, c1)
    (entries past the row untouched). x and xs whole contiguous arrays: views of some items' channels compiled
    to a generic-stride copy that ran 2.4x slower."""
    w_ = x.shape[4]
    for b in range(xs.shape[0]):
        for c in range(c0, c1):
            for d in range(x.shape[2]):
                for h in range(x.shape[3]):
                    row = x[n0 + b, c, d, h]
                    for p in range(s):
                        dest = xs[b, c - cBase, d, h, p]
                        count = (w_ - p + s - 1) // s
                        for j in range(count):
                            dest[j] = row[j * s + p]


if useNumba:
    _gatherRows5 = njit(cache=True, nogil=True)(_gatherRows5)
    _deinterleave5 = njit(cache=True, nogil=True)(_deinterleave5)


def _fastApplies(ndim):
    return useNumba and 3 <= ndim <= 5


def _fastPlan(x, kernel, stride, pad, dilation, deinterleave=True):
    """5-D views and per-tap tables of the compiled gather (lower ranks get unit leading axes).

    With a strided last axis and ``deinterleave`` False, xs is None: the caller de-interleaves its tiles' items
    itself (_deinterleaveTile, _gatherItems5).
    """
    x5, (kw_, s, p, d), o5, geometry = _plan5(x, kernel, stride, pad, dilation)
    if s == 1:
        xs = x5.reshape(x5.shape[:4] + (1, x5.shape[4]))
    elif deinterleave:
        xs = workspace.get("im2col-phases", _phasesShape(x5.shape, s), x.dtype)
        parallel(lambda c0, c1: _deinterleave5(x5, xs, s, 0, c0, c1, 0), x5.shape[1], x5.size)
    else:
        xs = None
    phase, base, lo, hi = (np.empty(kw_, dtype=np.int64) for _ in range(4))
    for kw in range(kw_):
        l0, l1, _ = tapRange(x5.shape[4], o5[2], kw, s, p, d)
        offset = kw * d - p
        phase[kw], base[kw] = offset % s, offset // s
        lo[kw], hi[kw] = l0, l1
    return xs, (phase, base, lo, hi) + geometry, o5


def _plan5(x, kernel, stride, pad, dilation):
    """The part of _fastPlan and _fastPlanT that is the same: x viewed 5-D (no copy when contiguous), the last
    axis's (kernel, stride, padding, dilation) for the per-tap tables, the output's three spatial sizes, and
    the tables' common tail (stride, padding, dilation, kernel and output sizes of three axes, as arrays)."""
    x5 = as5(np.ascontiguousarray(x))
    k5 = lead3(kernel)
    st, pd, dl = params3(stride, pad, dilation)
    o5 = outputShape(x5.shape[2:], k5, st, pd, dl)
    return x5, (k5[2], st[2], pd[2], dl[2]), o5, (np.array(st), np.array(pd), np.array(dl), np.array(k5), np.array(o5))


def _phasesShape(shape5, s):
    """(N, C, D, H, S, Wq) of an input of 5-D shape ``shape5`` de-interleaved by the stride S of its last axis."""
    return shape5[:4] + (s, -(-shape5[4] // s))


# A gathered element's time in multiply-adds (conv_common.PARALLEL_WORK's unit): a gather moves ~3 G elements a
# second on one thread, a GEMM ~50 G multiply-adds. So tiles under ~64K elements are gathered on the calling
# thread: handing half of a few hundred elements to the other thread cost more than the gather (the gathers
# had always been split: a Conv1D N2 3->4 L11 forward took 190 us through the module, ~100 of them waiting
# on the hand-off).
GATHER_COST = 16


def _fastGather(xs, tables, cols, n0, r0, r1, ck=None, split=True):
    """_gatherRows5 of rows [0, ck) (all of cols' rows by default) into a (items, rows, pixels) tile, split
    between threads if ``split``."""
    layout = _tileLayout(cols)
    _splitRows(lambda k0, k1: _gatherRows5(xs, cols, *tables, n0, r0, r1, k0, k1, 0, 0, *layout), 0,
               cols.shape[1] if ck is None else ck, cols.size * GATHER_COST, split)


def _splitRows(fn, k0, k1, work, split):
    """fn(a, b) over rows [k0, k1): split between threads (``parallel``, by ``work``) if ``split``, else whole
    on this thread (one of the caller's own threads). Each row is written by one call: no result changes."""
    if split:
        parallel(lambda a, b: fn(k0 + a, k0 + b), k1 - k0, work)
    else:
        fn(k0, k1)


def _tileLayout(cols):
    """_gatherRows5's pitches of a (items, rows, pixels) tile."""
    return cols.shape[2], cols.shape[1] * cols.shape[2]


def _fastForward(x, w, bias, stride, pad, dilation, groups):
    """Tiles of output rows: gathered, then one GEMM each writing straight into y.

    With a small weight matrix (_ownGemms) the tiles are dealt out as contiguous runs, one per thread, and
    each thread gathers its tile and runs its GEMM itself, with BLAS single-threaded meanwhile: a two-thread
    gather between two-thread GEMMs lost time to OpenBLAS's idle worker spinning on the second core (case 3,
    runs of same-process calls: 15.1 -> 12.3 ms). Each thread's tile is then 1 / _SPLIT of the call's bound,
    so the columns in flight stay within it, but at least one whole item where one fits the bound (thinner
    GEMMs run further from peak: case 5's GEMMs on one thread, items of 196 pixels 11.6 ms of CPU time, half
    items 14.1 ms; two items would be 4% faster but pass torch's peak memory). Larger weights: two threads
    share each GEMM (see _OWN_GEMM_BYTES). Re-measured with BLAS never multi-threaded (case 3, 2 threads,
    interleaved): per-thread tiles of 0.25 / 0.5 / 1 / 4 MiB all slower than the 2 MiB of _SPLIT = 2.
    """
    n, c = x.shape[:2]
    o = w.shape[0]
    kernel = w.shape[2:]
    outSpatial = outputShape(x.shape[2:], kernel, stride, pad, dilation)
    y = np.empty((n, o) + outSpatial, dtype=x.dtype)
    if min(outSpatial + (n,)) <= 0:
        return y
    ck = c * prod(kernel)
    xs, tables, o5 = _fastPlan(x, kernel, stride, pad, dilation, False)
    wg = np.ascontiguousarray(w).reshape(groups, o // groups, ck // groups)
    # One group and a short, already ragged inner dimension: the bias folded into the GEMM as one more inner row
    # (ones in the columns, the bias next to the weights) instead of added to each tile's output afterwards
    # (case 3, inner 147: the adds cost 1.4 ms of one thread, 7% of the GEMMs, the extra row nothing
    # measurable). A multiple of 8 made ragged costs more than the adds (one thread: inner 1152 -> 1153 +1.8%
    # on case 5's GEMMs, adds 0.5%; 192 -> 193 on 128 x 784 products +22%, adds 4%).
    fast = kernelForward(x.dtype, ck // groups)
    folded = _foldsBias(fast, bias is not None, groups, ck)
    ckA = ck + folded
    if fast:  # the bias starts the kernel's sums
        panels = sgemm.packGroups(wg, workspace.get("im2col-packed", (sgemm.packedSize(wg.shape),), x.dtype))
        rows = sgemm.biasRows(bias, o) if groups == 1 else None
    if folded:
        wg = workspace.get("im2col-wbias", (1, o, ckA), x.dtype)
        np.copyto(wg[0, :, :ck], w.reshape(o, ck))
        wg[0, :, ck] = bias
    yg = y.reshape(n, groups, o // groups, -1)
    rowLen = o5[2]
    tiles, workers, local = _forwardTiles(n, ck, o5, stride, w.nbytes, x.itemsize, tileBytes())
    shares = conv_common.runs(tiles, workers)
    size = _largestTile(tiles) * ckA * rowLen
    buffers = [workspace.get(f"im2col-fast{k}", (size,), x.dtype) for k in range(workers)]  # not thread-safe
    if xs is None and not local:  # a strided last axis de-interleaved once for the call, else per tile
        xs, _, _ = _fastPlan(x, kernel, stride, pad, dilation)
    if local:
        x5 = as5(np.ascontiguousarray(x))
        phases = [workspace.get(f"im2col-phases{k}", _localPhasesShape(x5.shape, stride[-1], tiles), x.dtype)
                  for k in range(workers)]

    def work(k):
        for n0, n1, r0, r1 in shares[k]:
            cols = buffers[k][:(n1 - n0) * ckA * (r1 - r0) * rowLen].reshape(n1 - n0, ckA, (r1 - r0) * rowLen)
            source, first = xs, n0
            if local:  # this tile's items, de-interleaved; the gather then reads them from item 0
                source, first = phases[k][:n1 - n0], 0
                _deinterleaveTile(x5, source, stride[-1], n0, 0, c, workers == 1)
            _fastGather(source, tables, cols, first, r0, r1, ck, split=workers == 1)
            if folded:
                cols[:, ck] = 1
            out = yg[n0:n1, :, :, r0 * rowLen:r1 * rowLen]
            if fast:
                _packedProduct(panels, rows, cols.reshape(n1 - n0, groups, ckA // groups, -1), out, workers == 1,
                               scratch[k])
                if biasG is not None:
                    out += biasG
                continue
            conv_common.matmul(wg, cols.reshape(n1 - n0, groups, ckA // groups, -1), out)  # split if shared
            if biasG is not None:  # while the tile's output is in cache, on the tile's thread
                out += biasG

    biasG = None if bias is None or folded or (fast and groups == 1) else bias.reshape(1, groups, o // groups, 1)
    scratch = [sgemm.Scratch() for _ in range(workers)]
    # Shared GEMMs (one worker) are split by conv_common.matmul; own ones run whole on single-threaded BLAS.
    if workers == 1:
        work(0)
    else:
        conv_common.runChunks(work, workers)
    return y


def _foldsBias(fast, withBias, groups, ck):
    """Whether the forward folds its bias into the GEMMs as one more inner row (see _fastForward)."""
    return not fast and withBias and groups == 1 and ck < _FOLD_BIAS_INNER and ck % 8 != 0


def _forwardTiles(n, ck, o5, stride, wBytes, itemsize, bound):
    """(tiles, workers, local) of _fastForward under the call's tile bound ``bound``: its tiles of output rows,
    the threads that run them, and whether a strided last axis is de-interleaved tile by tile (``local``).

    Where the tiles are whole items, a buffer per thread takes each tile's items (case 5: 0.4 MiB a thread
    instead of a copy of x, 3.2 MiB); else x is de-interleaved once for the call (tiles within items would
    de-interleave their item's rows again).
    """
    own = _ownGemms(wBytes)
    limit = _threadTileBytes(ck * prod(o5) * itemsize, bound) if own else bound
    tiles = rowTiles(n, o5[0] * o5[1], ck * o5[2] * itemsize, limit)
    workers = conv_common.chunkWorkers(len(tiles)) if own else 1
    local = stride[-1] != 1 and tiles[0][3] - tiles[0][2] == o5[0] * o5[1]
    return tiles, workers, local


def _largestTile(tiles):
    """Output rows (items times rows) of the largest of ``tiles``: the size of the buffers they reuse."""
    return max((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in tiles)


def _localPhasesShape(shape5, s, tiles):
    """A thread's buffer for its tiles' items de-interleaved (the forward's ``local`` case)."""
    return (max(n1 - n0 for n0, n1, _, _ in tiles),) + _phasesShape(shape5, s)[1:]


def _packedProduct(panels, bias, b, c, shared, scratch):
    """c = panels @ b (+ bias) by sgemm.batched on this thread, or with the columns split between the
    engine's threads if ``shared`` (each column's bits are the same either way)."""
    if not shared:
        sgemm.batched(panels, b, c, bias, scratch=scratch, packed=True)
        return
    columns = c.shape[-1]
    parallel(lambda j0, j1: sgemm.batched(panels, b, c, bias, cols=(j0 * sgemm.NR, min(columns, j1 * sgemm.NR)),
                                          scratch=sgemm.Scratch(), packed=True),
             -(-columns // sgemm.NR), c.size * b.shape[-2])


def kernelForward(dtype, depth):
    """Whether the forward's GEMMs of this inner dimension (C/g * taps) go through sgemm, weights packed."""
    return sgemm.applies(np.dtype(dtype)) and depth <= _SGEMM_DEPTH


def _gatherItems5(x5, ph, dst, s, phase, base, lo, hi, st, pd, dl, kshape, oshape, n0, nb, r0, r1, k0, k1, c0, c1,
                  kPitch, itemPitch):
    """Items n0 + b (b < nb) in turn: channels [c0, c1) de-interleaved into ph (one item), then its tap rows
    [k0, k1) gathered from ph into dst[b * itemPitch + (k - k0) * kPitch + ...] (see _gatherRows5)."""
    for b in range(nb):
        _deinterleave5(x5, ph, s, n0 + b, c0, c1, c0)
        _gatherRows5(ph, dst[b * itemPitch:].reshape((1, dst.size - b * itemPitch)), phase, base, lo, hi, st, pd,
                     dl, kshape, oshape, 0, r0, r1, k0, k1, k0, c0, kPitch, 0)


if useNumba:
    _gatherItems5 = njit(cache=True, nogil=True)(_gatherItems5)


def _deinterleaveTile(x5, xs, s, n0, c0, c1, split):
    """Items [n0, n0 + len(xs)), channels [c0, c1) of x5 de-interleaved into xs (channel c at c - c0), split
    between threads over the channels if ``split``."""
    _splitRows(lambda a, b: _deinterleave5(x5, xs, s, n0, a, b, c0), c0, c1, xs.size, split)


def _ownGemms(nbytes):
    """Whether each thread runs whole tiles (gather and GEMM) on its own, with BLAS single-threaded, for a weight
    (or weight gradient) of ``nbytes``."""
    return nbytes <= _OWN_GEMM_BYTES


def _threadTileBytes(itemBytes, bound):
    """One thread's column tile bound: 1 / _SPLIT of the call's (``bound``), raised to one item's columns if those
    fit it."""
    return max(1, bound // _SPLIT, itemBytes if itemBytes <= bound else 0)


# Weight (or weight-gradient) bytes up to which threads run their own GEMMs (see _fastForward); larger weights
# share each GEMM between the threads (split by columns, conv_common.matmul). Measured with the engine never
# waking OpenBLAS's own threads (same process, directions interleaved as in training, 2 threads, ms, shared vs
# own): case 4 im2col fwd 31.0 vs 14.2, bwd-params 15.1 vs 13.3; case 5 fwd 8.5 vs 7.0, bwd-params 9.0 vs
# 8.3; case 3 alike. (Earlier measurements that favoured shared GEMMs for large weights had OpenBLAS's idle
# workers spinning on the cores that the own-GEMM threads needed.)
_OWN_GEMM_BYTES = 64 << 20

# Weight-gradient bytes up to which each thread sums its chunks into a partial of its own (_SPLIT partials,
# added at the end): beyond, the threads split dw's columns instead, so no dw-sized partials are allocated.
_PARTIAL_BYTES = 256 << 10

# Threads' share of a call's tile bound: the tiles in flight at once (also the number of partial sums of a
# chunked weight gradient, so that its result does not depend on the thread count).
_SPLIT = 2


def _fastBackwardParams(x, dy, wShape, stride, pad, dilation, groups, withBias=False):
    """(dw, db or None): dw as GEMMs (O/g, pixels) @ (pixels, rows) with the pixels the inner dimension of both.

    Units of work are (chunk of the batch's pixels, block of dw's columns = channel-taps of one group). If dw
    is small (_ownGemms) each thread runs whole units, gather and GEMM, with BLAS single-threaded (see
    _fastForward; case 3: 28 -> 19 ms), else the units run in turn on the threads of the gather and of BLAS.
    When all the batch's pixels fit one chunk, each block's GEMM is the final value of its slice of dw,
    written in place. Otherwise a dw of at most _PARTIAL_BYTES on threads of their own has its chunks cut
    into _SPLIT fixed runs, each summed by one thread into its own (kg, O) partial, and the partials added;
    else each block (dealt out to the threads, if they run their own) sums its chunks in order in place (a
    block-sized product added each time). Either way the blocks, chunks and partials are fixed by the shape:
    the same result on any number of threads. A chunk within one item reads dy in place (rows of pixels);
    one spanning items gets dy transposed to (O, items * pixels). A strided last axis is de-interleaved once
    for the call (one item per chunk, one block, x no larger than dy: case 3), or per unit, item by item, for
    its block's channels (chunks of whole items, where the buffer fits the bound: case 5), else read in place.
    With fixed partials and one block, the bias gradient rides along: a row of ones below the columns makes
    each partial's last row a sum of dy over its chunks' pixels (case 3: no separate pass over its 25 MiB dy).
    """
    n, c = x.shape[:2]
    o = dy.shape[1]
    kernel = tuple(wShape[2:])
    taps = prod(kernel)
    kg, og = (c // groups) * taps, o // groups
    dw = np.empty((o, kg), dtype=x.dtype)
    x5, tables, o5 = _fastPlanT(x, kernel, stride, pad, dilation)
    pixels = prod(o5)
    if n * pixels == 0 or kg == 0:
        dw.fill(0)
        return dw.reshape(wShape), biasGrad(dy) if withBias else None
    chunks, blocks, rows, inner, phased, localPhases, channels, plane, parts, workers, ones = _dwPlan(
        x.shape, wShape, o5, stride, groups, x.itemsize, withBias, tileBytes())
    dyFlat = np.ascontiguousarray(dy).reshape(n, o, pixels)
    if phased or localPhases:
        xs, tables5, _ = _fastPlan(x, kernel, stride, pad, dilation, phased)
    folded = any(n1 - n0 > 1 for n0, n1, _, _ in chunks)
    # Scratch (taken here: the workspace is not thread-safe): per thread a column block, dy's transposed
    # chunk where chunks span items, a partial product; the _SPLIT partial sums where chunks are summed.
    if parts:
        # Each thread sums its run of chunks into its own partials (of _SPLIT fixed runs), added at the end.
        halves = conv_common.runs(chunks, parts)
        runs = [[(h, chunk, block) for h in range(k, parts, workers) for chunk in halves[h] for block in blocks]
                for k in range(workers)]
        # Own partials are kept transposed, (kg, O): cols @ dy.T runs faster than dy @ cols.T on these thin
        # products (case 3, one thread: 21.9 vs 25.4 ms). With ``ones``, the bias gradient is one more row.
        partials = workspace.get("im2col-dw-partials", (parts, kg + ones, o), x.dtype)
    else:
        # Each thread a contiguous run of dw's column blocks, written in place: per block the chunks in order,
        # the first written, the others added (each element sums its chunks in the same order on any threads).
        halves = [chunks]
        runs = [[(0, chunk, block) for block in share for chunk in chunks]
                for share in conv_common.runs(blocks, workers)]
        partials = None
    shared = None
    if folded and len(chunks) == 1:  # one chunk spanning items: dy transposed once, read by every thread
        (n0, n1, r0, r1), = chunks
        shared = workspace.get("im2col-dw-dy", (o, n1 - n0, (r1 - r0) * o5[2]), x.dtype)
        np.copyto(shared, dyFlat[n0:n1, :, r0 * o5[2]:r1 * o5[2]].transpose(1, 0, 2))
        shared = shared.reshape(o, -1)
    if localPhases:
        phases = [workspace.get(f"im2col-dw-phases{k}", (1, channels) + plane, x.dtype) for k in range(workers)]
    scratch = [(workspace.get(f"im2col-dw-cols{k}", ((rows + ones) * inner,), x.dtype),
                workspace.get(f"im2col-dw-dy{k}", (og * inner,), x.dtype) if folded and shared is None else None,
                workspace.get(f"im2col-dw-part{k}", (og * (rows + ones),), x.dtype) if len(chunks) > 1 else None)
               for k in range(workers)]
    firsts = [half[0] for half in halves]

    def gemm(k, chunk, block, target, summed, flipped):
        (n0, n1, r0, r1), (g, k0, k1) = chunk, block
        nb, span = n1 - n0, (r1 - r0) * o5[2]
        colsBuf, dyBuf, partBuf = scratch[k]
        withOnes = colsBuf[:(k1 - k0 + ones) * nb * span].reshape(k1 - k0 + ones, nb * span)
        cols = withOnes[:k1 - k0]
        if ones:
            withOnes[-1] = 1
        start = g * kg
        if phased:
            _fastGather(xs, tables5, cols.reshape(1, kg, span), n0, r0, r1, split=workers == 1)
        elif localPhases:
            c0, c1 = k0 // taps, -(-k1 // taps)
            _gatherItems5(x5, phases[k][:, :c1 - c0], cols.reshape(-1), stride[-1], *tables5, n0, nb, r0, r1, k0,
                          k1, c0, c1, nb * span, span)
        else:
            _fastGatherT(x5, tables, cols, n0, nb, r0, r1, start + k0, start + k1, split=workers == 1)
        if nb == 1:
            dyOp = dyFlat[n0, g * og:(g + 1) * og, r0 * o5[2]:r1 * o5[2]]
        elif shared is not None:
            dyOp = shared[g * og:(g + 1) * og]
        else:
            dyOp = dyBuf[:og * nb * span].reshape(og, nb, span)
            np.copyto(dyOp, dyFlat[n0:n1, g * og:(g + 1) * og, r0 * o5[2]:r1 * o5[2]].transpose(1, 0, 2))
            dyOp = dyOp.reshape(og, nb * span)
        out = target[k0:k1 + ones, g * og:(g + 1) * og] if flipped else target[g * og:(g + 1) * og, k0:k1]
        left, right = (withOnes, dyOp.T) if flipped else (dyOp, cols.T)
        if summed:
            part = partBuf[:og * (k1 - k0 + ones)].reshape(out.shape)
            conv_common.matmul(left, right, part)
            out += part
        else:
            conv_common.matmul(left, right, out)

    def work(k):
        for h, chunk, block in runs[k]:
            if partials is None:
                gemm(k, chunk, block, dw, chunk is not firsts[0], False)
            else:
                gemm(k, chunk, block, partials[h], chunk is not firsts[h], True)

    if workers == 1:  # as in _fastForward
        work(0)
    else:
        conv_common.runChunks(work, workers)
    db = None
    if partials is not None:
        np.copyto(dw, partials[0, :kg].T)
        for h in range(1, len(partials)):
            dw += partials[h, :kg].T
        if ones:
            db = partials[0, kg].copy()
            for h in range(1, len(partials)):
                db += partials[h, kg]
    if withBias and db is None:
        db = biasGrad(dy)
    return dw.reshape(wShape), db


def _dwPlan(xShape, wShape, o5, stride, groups, itemsize, withBias, bound):
    """The units of _fastBackwardParams under the call's tile bound ``bound``, from the shapes alone: (chunks,
    blocks, rows, inner, phased, localPhases, channels, plane, parts, workers, ones).

    chunks: of the batch's pixels (n0, n1, r0, r1); blocks: of dw's columns (group, k0, k1), at most ``rows``
    each; inner: the largest chunk's pixels; phased / localPhases: a strided last axis de-interleaved once for
    the call / per unit, ``channels`` at a time, into buffers of (1, channels) + ``plane``; parts: the number of
    partial sums (0: blocks summed in place); workers: the threads; ones: 1 where the bias gradient rides along.
    """
    n, c = xShape[:2]
    o = wShape[0]
    taps = prod(wShape[2:])
    kg = (c // groups) * taps
    own = _ownGemms(o * kg * itemsize)
    limit = max(1, bound // _SPLIT) if own else bound
    rowsWanted = min(kg, _DW_ROWS)
    if n * prod(o5) * rowsWanted * itemsize <= limit:
        chunks = [(0, n, 0, o5[0] * o5[1])]  # the whole batch in one inner dimension
    else:
        chunks = rowTiles(n, o5[0] * o5[1], rowsWanted * o5[2] * itemsize, limit)
    inner = _largestTile(chunks) * o5[2]
    rows = max(1, min(kg, limit // max(inner * itemsize, 1)))
    strided = groups == 1 and o5[2] > 1 and stride[-1] > 1
    count = -(-kg // rows)
    if own and count > 1:  # a multiple of _SPLIT blocks, so that two threads get equal shares (any thread count)
        count = -(-count // _SPLIT) * _SPLIT
        rows = -(-kg // count)
    blocks = [(g, k0, min(kg, k0 + rows)) for g in range(groups) for k0 in range(0, kg, rows)]
    # Each chunk's whole column matrix in one block, one item per chunk: that is the forward's tile layout,
    # and a strided last axis is then cheaper de-interleaved once (contiguous row copies, as the forward's
    # gather: case 3 gather 9.7 -> 2.5 ms of one thread) than read in place, if x is no larger than dy.
    phased = (strided and rows == kg and prod(xShape) <= n * o * prod(o5)
              and all(n1 - n0 == 1 for n0, n1, _, _ in chunks))
    # Chunks of whole items otherwise, on threads of their own: each unit takes its items in turn, de-interleaves
    # the item's channels of its block into a small buffer of its thread's and gathers from it as the forward does
    # (one compiled call, _gatherItems5; case 5: gather 0.38 -> 0.27 ms an item, one thread), where that buffer
    # fits the bound next to the block's columns.
    plane = _phasesShape(shape5(xShape), stride[-1])[2:]
    channels = max(-(-k1 // taps) - k0 // taps for _, k0, k1 in blocks)
    localPhases = (not phased and strided and all(r1 - r0 == o5[0] * o5[1] for _, _, r0, r1 in chunks)
                   and (rows * inner + channels * prod(plane)) * itemsize <= limit)
    if len(chunks) > 1 and own and o * kg * itemsize <= _PARTIAL_BYTES:
        # _SPLIT fixed partial sums; with one block, the bias gradient as one more row of the partials.
        parts = _SPLIT
        workers = conv_common.chunkWorkers(parts)
        ones = int(withBias and len(blocks) == 1)
    else:  # each thread a contiguous run of dw's column blocks, written in place
        parts, ones = 0, 0
        workers = conv_common.chunkWorkers(len(blocks)) if own else 1
    localPhases = localPhases and (workers > 1 or conv_common.THREADS == 1)  # the compiled call is not split
    return chunks, blocks, rows, inner, phased, localPhases, channels, plane, parts, workers, ones


# Inner dimension (channel-taps) below which the forward folds the bias into its GEMMs (see _fastForward).
_FOLD_BIAS_INNER = 512
# Deepest inner dimension whose forward GEMMs go through sgemm rather than OpenBLAS. Same process,
# interleaved, 2 threads, ms, OpenBLAS vs sgemm: case 3 (inner 147) 14.9 vs 14.2 (before conv_implicit took it);
# 64->128 56x56 s2 (576) 6.0 vs 5.8; 64->256 (576) 10.6 vs 9.9; case 5 (1152) 5.6 vs 5.4 (it lost, 5.9 vs 6.1,
# while the tile still read its output before writing it); 256->512 14x14 s2 (2304) 6.4 vs 7.3, 512->512
# 14x14 (4608) 40.7 vs 47.5: with deep products OpenBLAS's packed, cache-blocked copies win.
_SGEMM_DEPTH = 1152

# Rows (channel-taps) of the weight-gradient GEMM's output block below which it runs far from peak.
_DW_ROWS = 256


def _fastPlanT(x, kernel, stride, pad, dilation):
    """5-D view of x (no copy when contiguous) and the per-tap tables of _gatherRowsT."""
    x5, (kw_, s, p, d), o5, geometry = _plan5(x, kernel, stride, pad, dilation)
    start, lo, hi = (np.empty(kw_, dtype=np.int64) for _ in range(3))
    for kw in range(kw_):
        lo[kw], hi[kw], start[kw] = tapRange(x5.shape[4], o5[2], kw, s, p, d)
    return x5, (start, lo, hi) + geometry, o5


def _fastGatherT(x5, tables, cols, n0, nb, r0, r1, k0, k1, split=True):
    """_gatherRowsT of rows [k0, k1) into cols (rows, items * pixels), split between threads if ``split``."""
    flat = cols.reshape(-1)
    span = cols.shape[1] // max(nb, 1)
    _splitRows(lambda a, b: _gatherRowsT(x5, flat, *tables, n0, nb, r0, r1, k0, cols.shape[1], span, a, b), k0, k1,
               cols.size * GATHER_COST, split)


def _gatherRowsT(x5, dst, start, lo, hi, st, pd, dl, kshape, oshape, n0, nb, r0, r1, kBase, kPitch, itemPitch,
                 k0, k1):
    """dst[(k - kBase) * kPitch + b * itemPitch + (r - r0) * OW + ow] = x[n0 + b, tap k of row r, column ow].

    Rows k in [k0, k1) of the column matrix (k = channel * taps + tap), items [n0, n0 + nb), output rows
    r (= od * OH + oh) in [r0, r1). Tap kw reads input columns start[kw] + (ow - lo[kw]) * stride for ow in
    [lo[kw], hi[kw]) and is zero elsewhere; a strided last axis is read in place (no de-interleaved copy).
    """
    dd_, hh_, ww_ = x5.shape[2], x5.shape[3], x5.shape[4]
    kd_, kh_, kw_ = kshape[0], kshape[1], kshape[2]
    oh_, ow_ = oshape[1], oshape[2]
    sw = st[2]
    taps = kd_ * kh_ * kw_
    planePitch = hh_ * ww_
    chanPitch = dd_ * planePitch
    itemSrc = x5.shape[1] * chanPitch
    src = x5.reshape(-1)
    zero = dst.dtype.type(0)
    st0, st1, dl0, dl1, pd0, pd1 = st[0], st[1], dl[0], dl[1], pd[0], pd[1]  # locals, as in _gatherRows5
    for k in range(k0, k1):
        c = k // taps
        t = k % taps
        kd = t // (kh_ * kw_)
        kh = (t // kw_) % kh_
        kw = t % kw_
        l0, l1 = lo[kw], hi[kw]
        tapBase = c * chanPitch + start[kw]
        for b in range(nb):
            out = (k - kBase) * kPitch + b * itemPitch
            itemBase = (n0 + b) * itemSrc + tapBase
            od = r0 // oh_
            oh = r0 % oh_
            for _ in range(r1 - r0):
                idd = od * st0 + kd * dl0 - pd0
                ih = oh * st1 + kh * dl1 - pd1
                if idd < 0 or idd >= dd_ or ih < 0 or ih >= hh_ or l1 <= l0:
                    for j in range(ow_):
                        dst[out + j] = zero
                else:
                    for j in range(l0):
                        dst[out + j] = zero
                    first = np.uintp(out + l0)
                    at = np.uintp(itemBase + idd * planePitch + ih * ww_)
                    if sw == 1:
                        for j in range(np.uintp(l1 - l0)):
                            dst[first + j] = src[at + j]
                    elif sw == 2:  # a constant stride vectorises (case 5's gather 0.38 -> 0.31 ms an item)
                        for j in range(np.uintp(l1 - l0)):
                            dst[first + j] = src[at + j * np.uintp(2)]
                    else:
                        for j in range(np.uintp(l1 - l0)):
                            dst[first + j] = src[at + j * sw]
                    for j in range(l1, ow_):
                        dst[out + j] = zero
                out += ow_
                oh += 1
                if oh == oh_:
                    oh = 0
                    od += 1


if useNumba:
    _gatherRowsT = njit(cache=True, nogil=True)(_gatherRowsT)


def _scatterRowsT(x5, src, start, lo, hi, st, pd, dl, kshape, oshape, n0, nb, r0, r1, kBase, kPitch, itemPitch,
                  k0, k1):
    """The adjoint of _gatherRowsT: x[n0 + b, tap k of row r, column ow] += src[...] (same indexing; in bounds only).

    Each element of x gets its taps' terms in tap order (one per tap within a tile), as _scatterAdd adds them.
    """
    dd_, hh_, ww_ = x5.shape[2], x5.shape[3], x5.shape[4]
    kd_, kh_, kw_ = kshape[0], kshape[1], kshape[2]
    oh_ = oshape[1]
    ow_ = oshape[2]
    sw = st[2]
    taps = kd_ * kh_ * kw_
    planePitch = hh_ * ww_
    chanPitch = dd_ * planePitch
    itemDst = x5.shape[1] * chanPitch
    dst = x5.reshape(-1)
    for k in range(k0, k1):
        c = k // taps
        t = k % taps
        kd = t // (kh_ * kw_)
        kh = (t // kw_) % kh_
        kw = t % kw_
        l0, l1 = lo[kw], hi[kw]
        if l1 <= l0:
            continue
        tapBase = c * chanPitch + start[kw]
        for b in range(nb):
            out = (k - kBase) * kPitch + b * itemPitch
            itemBase = (n0 + b) * itemDst + tapBase
            od = r0 // oh_
            oh = r0 % oh_
            for _ in range(r1 - r0):
                idd = od * st[0] + kd * dl[0] - pd[0]
                ih = oh * st[1] + kh * dl[1] - pd[1]
                if 0 <= idd < dd_ and 0 <= ih < hh_:
                    first = np.uintp(out + l0)
                    at = np.uintp(itemBase + idd * planePitch + ih * ww_)
                    if sw == 1:
                        for j in range(np.uintp(l1 - l0)):
                            dst[at + j] += src[first + j]
                    else:
                        for j in range(np.uintp(l1 - l0)):
                            dst[at + j * sw] += src[first + j]
                out += ow_
                oh += 1
                if oh == oh_:
                    oh = 0
                    od += 1


if useNumba:
    _scatterRowsT = njit(cache=True, nogil=True)(_scatterRowsT)


def _fastBackwardData(dy, w, xShape, stride, pad, dilation, groups):
    """GEMM + col2im per tile: the GEMM's columns split between the threads (conv_common.matmul), then a
    compiled scatter split over channel ranges.

    Each thread adds into its own channels of dx, and each element of dx sums its taps' terms in one fixed
    order (as _scatterAdd), so the result does not depend on the number of threads. One thread's CPU time
    for the scatter: case 3 (7x7 stride 2) 36 -> 11 ms, case 4 4.4 -> 3.0 ms, case 5 3.2 -> 2.9 ms. Batches
    large enough run whole items per thread instead (conv_col2im: the same scatter, its own units of work).
    """
    dx, operands = col2imOperands(dy, w, xShape, stride, pad, dilation, groups)
    if operands is None:
        return dx
    x5, tables, o5, wgT, dyg = operands
    c, taps, rowLen = xShape[1], prod(w.shape[2:]), o5[2]
    ck, ckg = c * taps, c * taps // groups
    for n0, n1, r0, r1 in _col2imTiles(dy.shape[0], ck, o5, dy.itemsize, tileBytes()):
        nb, span = n1 - n0, (r1 - r0) * rowLen
        dcols = workspace.get("col2im-fast", (nb * ck * span,), dy.dtype)
        conv_common.matmul(wgT, dyg[n0:n1, :, :, r0 * rowLen:r1 * rowLen], dcols.reshape(nb, groups, ckg, span))
        _scatterTile(x5, dcols, tables, n0, nb, r0, r1, span, c, taps)
    return dx


def _col2imTiles(n, ck, o5, itemsize, bound):
    """_fastBackwardData's tiles of output rows: their columns (C * taps by pixels) within ``bound`` bytes."""
    return rowTiles(n, o5[0] * o5[1], ck * o5[2] * itemsize, bound)


def col2imOperands(dy, w, xShape, stride, pad, dilation, groups):
    """(dx zeroed, (x5, tables, o5, wgT, dyg)) for GEMM + col2im: dx viewed 5-D with its scatter tables, the
    kernel as (groups, C/g * taps, O/g) and dy as (N, groups, O/g, pixels); operands None when dx is empty."""
    n, o = dy.shape[:2]
    dx = np.zeros(xShape, dtype=dy.dtype)
    if n == 0 or min(dy.shape[2:]) <= 0:
        return dx, None
    ckg = xShape[1] * prod(w.shape[2:]) // groups
    x5, tables, o5 = _fastPlanT(dx, tuple(w.shape[2:]), stride, pad, dilation)
    assert tuple(o5[-dy.ndim + 2:]) == tuple(dy.shape[2:])
    wgT = np.ascontiguousarray(w).reshape(groups, o // groups, ckg).transpose(0, 2, 1)
    dyg = np.ascontiguousarray(dy).reshape(n, groups, o // groups, -1)
    return dx, (x5, tables, o5, wgT, dyg)


def _scatterTile(x5, dcols, tables, n0, nb, r0, r1, span, c, taps):
    """One tile's columns added into x5, split between threads over channel ranges (disjoint parts of x5)."""
    def scatter(c0, c1):
        _scatterRowsT(x5, dcols, *tables, n0, nb, r0, r1, 0, span, c * taps * span, c0 * taps, c1 * taps)

    parallel(scatter, c, dcols.size)


# -- scratch estimates (conv.workspaceBytes) -----------------------------------------------------------------
# Sized from the calls' own plans (_forwardTiles, _col2imTiles, _dwPlan): each workspace buffer at its largest
# request (conv_common.workspace keeps one per tag, all held until the call returns), plus what the calls
# allocate outside it: sgemm's per-thread edge tiles and backward-data's flipped kernel.
def workspaceBytes(direction, xShape, wShape, stride, pad, dilation, groups, dtype, bound):
    """Scratch bytes of one im2col call in ``direction`` whose tiles are bounded by ``bound`` (the call's
    conv_common.tileBytesFor its result)."""
    args = (tuple(xShape), tuple(wShape), stride, pad, dilation, groups, np.dtype(dtype), bound)
    if direction == "forward":
        return _forwardBytes(*args)
    if direction == "backwardData":
        return _backwardDataBytes(*args)
    return _backwardParamsBytes(*args)


def _forwardBytes(xShape, wShape, stride, pad, dilation, groups, dtype, bound, withBias=True):
    """im2colForward's: a column tile per thread, the weights packed for sgemm (or with the bias folded in: a
    bias is assumed, it can only add that copy), a strided last axis de-interleaved (per thread or once), and
    sgemm's edge tiles."""
    n, c = xShape[:2]
    o = wShape[0]
    ck = c * prod(wShape[2:])
    itemsize = dtype.itemsize
    out = outputShape(xShape[2:], wShape[2:], stride, pad, dilation)
    if min(out + (n,)) <= 0:
        return 0
    if not _fastApplies(len(xShape)):
        return _numpyTileBytes(n, ck, out, itemsize, bound)
    o5 = lead3(out)
    fast = kernelForward(dtype, ck // groups)
    ckA = ck + _foldsBias(fast, withBias, groups, ck)
    tiles, workers, local = _forwardTiles(n, ck, o5, stride, prod(wShape) * itemsize, itemsize, bound)
    total = workers * _largestTile(tiles) * ckA * o5[2]
    if fast:
        total += sgemm.packedSize((groups, o // groups, ck // groups))
    elif ckA > ck:
        total += o * ckA
    if local:
        total += workers * prod(_localPhasesShape(shape5(xShape), stride[-1], tiles))
    elif stride[-1] != 1:
        total += prod(_phasesShape(shape5(xShape), stride[-1]))
    if not fast:
        return total * itemsize
    # Each thread's sgemm.Scratch: the threads' own (tiles of their own), or those a shared tile's product is
    # split between (_packedProduct, each part with a Scratch of its own).
    depth = ckA // groups
    if workers == 1:
        workers = max(_productThreads(n1 - n0, o, (r1 - r0) * o5[2], depth) for n0, n1, r0, r1 in tiles)
    return (total + workers * sgemm.Scratch.elements(depth)) * itemsize  # float32 here (fast)


def _productThreads(nb, o, span, depth):
    """The threads _packedProduct shares a tile's product between: nb items of o maps by span pixels."""
    return conv_common.threadCount(-(-span // sgemm.NR), nb * o * span * depth)


def _numpyTileBytes(n, ck, out, itemsize, bound):
    """The numpy gather's (and scatter's) column tile: rows of the first output axis, within ``bound``."""
    tiles = rowTiles(n, out[0], _rowBytes(ck, out, itemsize), bound)
    return _largestTile(tiles) * _rowBytes(ck, out, itemsize)


def _backwardDataBytes(xShape, wShape, stride, pad, dilation, groups, dtype, bound):
    """im2colBackwardData's: with unit strides the forward's, with the flipped kernel held meanwhile (made through
    one more copy as large, dropped before the forward starts); else one tile of GEMM + col2im columns."""
    n, c = xShape[:2]
    o = wShape[0]
    kernel = tuple(wShape[2:])
    ck = c * prod(kernel)
    itemsize = dtype.itemsize
    out = outputShape(xShape[2:], kernel, stride, pad, dilation)
    weights = prod(wShape) * itemsize
    if _flipsKernel(stride, weights, prod(xShape) * itemsize, c // groups):
        forward = _forwardBytes((n, o) + out, (c, o // groups) + kernel, stride, transposedPad(kernel, pad, dilation),
                                dilation, groups, dtype, bound, withBias=False)
        return weights + max(weights, forward)
    if n * prod(out) == 0:
        return 0
    if not _fastApplies(len(xShape)):
        return _numpyTileBytes(n, ck, out, itemsize, bound)
    o5 = lead3(out)
    return _largestTile(_col2imTiles(n, ck, o5, itemsize, bound)) * ck * o5[2] * itemsize


def _backwardParamsBytes(xShape, wShape, stride, pad, dilation, groups, dtype, bound):
    """im2colBackwardParamsAndBias's (a bias assumed: its row of ones can only add): per thread a column block, a
    chunk of dy transposed, a partial product and de-interleaved channels, where the plan takes them; for the
    call the partial sums, dy transposed once or x de-interleaved once."""
    n, c = xShape[:2]
    o = wShape[0]
    kernel = tuple(wShape[2:])
    ck, kg, og = c * prod(kernel), c // groups * prod(kernel), o // groups
    itemsize = dtype.itemsize
    out = outputShape(xShape[2:], kernel, stride, pad, dilation)
    if n * prod(out) == 0 or kg == 0:
        return 0
    if not _fastApplies(len(xShape)):  # im2colBackwardParams: a tile of columns and dy, the product added to dw
        tiles = rowTiles(n, out[0], _rowBytes(ck + o, out, itemsize), bound)
        return _largestTile(tiles) * _rowBytes(ck + o, out, itemsize) + o * kg * itemsize
    o5 = lead3(out)
    chunks, blocks, rows, inner, phased, localPhases, channels, plane, parts, workers, ones = _dwPlan(
        xShape, wShape, o5, stride, groups, itemsize, True, bound)
    folded = any(n1 - n0 > 1 for n0, n1, _, _ in chunks)  # as the call: chunks spanning items
    shared = folded and len(chunks) == 1  # dy transposed once for all threads, not a chunk per thread
    perThread = ((rows + ones) * inner + (og * inner if folded and not shared else 0)
                 + (og * (rows + ones) if len(chunks) > 1 else 0) + (channels * prod(plane) if localPhases else 0))
    total = workers * perThread + parts * (kg + ones) * o + (o * inner if shared else 0)
    if phased:
        total += prod(_phasesShape(shape5(xShape), stride[-1]))
    return total * itemsize
