"""Direct convolution for depthwise and small-group convolutions (few input channels per group).

There the GEMM of im2col is a stack of tiny products (C/groups * K wide) and the column copy
dominates; a direct loop reads each input row once per tap and accumulates into an output row.
The kernels are numba-compiled (cache on disk) loops over (item, output map, output row), with the
innermost loop along the output row (vectorised for unit stride) and a loop over kernel taps.
3x3 "same" layers (unit stride, pad = dilation; depthwise MobileNet-style blocks) have their own
kernels: flat runs over whole planes with the nine taps unrolled (``_same3Plane``, ``_gradPlane``).
One 3-D kernel serves 1-D, 2-D and 3-D: lower ranks are viewed with unit leading spatial axes.
Without numba the same algorithm runs as numpy array operations, one per (channel in group, tap).
Every accumulation runs in a fixed order: results are identical run to run and for any thread count
(the 3x3 weight gradient's order is the one its compiled loops fix, see _gradRun3).
"""

import numpy as np

from PuzzleLib.Engines.cpu import conv_common
from PuzzleLib.Engines.cpu.conv_common import (
    as5,
    lead3,
    memo,
    outputShape,
    parallel,
    params3,
    prod,
    shape5,
    tapRange,
    threadCount,
    transposedPad,
)

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; the numpy path is the fallback
    njit = None

useNumba = njit is not None


def _ranges(size, out, k, s, p, d):
    """Per tap: output range [lo, hi) with in-bounds input, and the input offset t * d - p."""
    lo = np.empty(k, dtype=np.int64)
    hi = np.empty(k, dtype=np.int64)
    off = np.empty(k, dtype=np.int64)
    for t in range(k):
        offset = t * d - p
        first = 0 if offset >= 0 else (-offset + s - 1) // s
        last = min(out, (size - 1 - offset) // s + 1)
        lo[t], hi[t], off[t] = first, max(first, last), offset
    return lo, hi, off


def _span(lo, hi, offset, stride):
    """(first output column, its input column, count, stride) as unsigned ints for columns [lo, hi)."""
    return np.uintp(lo), np.uintp(lo * stride + offset), np.uintp(hi - lo), np.uintp(stride)


def _forward5(x, w, bias, y, st, pd, dl, o0, o1):
    n_, c_, dd_, hh_, ww_ = x.shape
    o_, cg, kd_, kh_, kw_ = w.shape
    od_, oh_, ow_ = y.shape[2], y.shape[3], y.shape[4]
    og = o_ // (c_ // cg)
    lo, hi, off = _ranges(ww_, ow_, kw_, st[2], pd[2], dl[2])
    acc = np.empty(ow_, dtype=y.dtype)
    for b in range(n_):
        for oc in range(o0, o1):
            g = oc // og
            for od in range(od_):
                for oh in range(oh_):
                    acc[:] = bias[oc]
                    for c in range(cg):
                        ic = g * cg + c
                        for kd in range(kd_):
                            idd = od * st[0] + kd * dl[0] - pd[0]
                            if idd < 0 or idd >= dd_:
                                continue
                            for kh in range(kh_):
                                ih = oh * st[1] + kh * dl[1] - pd[1]
                                if ih < 0 or ih >= hh_:
                                    continue
                                row = x[b, ic, idd, ih]
                                for kw in range(kw_):
                                    wv = w[oc, c, kd, kh, kw]
                                    # Unsigned indices: no negative-index wraparound test, so the loop vectorises.
                                    first, base, count, step = _span(lo[kw], hi[kw], off[kw], st[2])
                                    if step == 1:
                                        for j in range(count):
                                            acc[first + j] += wv * row[base + j]
                                    else:
                                        for j in range(count):
                                            acc[first + j] += wv * row[base + j * step]
                    y[b, oc, od, oh, :] = acc


def _fillPlane(buf, src, pD, pH, pd, plane, pitch, c0, c1):
    """Copy one input plane src (D, H, W) into the interior of the flat zero-bordered buffer."""
    dd_, hh_ = src.shape[0], src.shape[1]
    if c1 <= c0:
        return
    for d in range(pD):
        sd = d - pd[0]
        if sd < 0 or sd >= dd_:
            continue
        for h in range(pH):
            sh = h - pd[1]
            if sh < 0 or sh >= hh_:
                continue
            start = np.uintp(d * plane + h * pitch + c0 + pd[2])
            row = src[sd, sh]
            for j in range(np.uintp(c1 - c0)):
                buf[start + j] = row[np.uintp(c0) + j]


def _laneSum(a, lanes):
    """Sum of a in a fixed order that vectorises: 16 interleaved partial sums, then those in turn."""
    lanes[:] = 0
    full = a.shape[0] // 16 * 16
    for base in range(0, full, 16):
        for k in range(16):
            lanes[k] += a[base + k]
    total = lanes[0]
    for k in range(1, 16):
        total += lanes[k]
    for i in range(full, a.shape[0]):
        total += a[i]
    return total


def _backwardParamsFlat5(x, dy, dw, pd, dl, o0, o1):
    """Unit-stride weight gradient on flattened planes (see _forwardFlat5): per output map, the products
    of the gradient plane (laid out on the padded pitch, gaps zero) with each shifted input plane are
    accumulated elementwise, then summed in a fixed order."""
    n_, c_ = x.shape[0], x.shape[1]
    o_, cg, kd_, kh_, kw_ = dw.shape
    od_, oh_, ow_ = dy.shape[2], dy.shape[3], dy.shape[4]
    og = o_ // (c_ // cg)
    pD, pH, pW = od_ + dl[0] * (kd_ - 1), oh_ + dl[1] * (kh_ - 1), ow_ + dl[2] * (kw_ - 1)
    plane, pitch = pH * pW, pW
    length = (od_ - 1) * plane + (oh_ - 1) * pitch + ow_
    buf = np.zeros(pD * plane, dtype=x.dtype)
    grad = np.zeros(length, dtype=x.dtype)
    taps = kd_ * kh_ * kw_
    acc = np.empty((cg, taps, length), dtype=dw.dtype)
    lanes = np.empty(16, dtype=dw.dtype)
    c0, c1 = max(0, -pd[2]), min(x.shape[4], pW - pd[2])
    for oc in range(o0, o1):
        g = oc // og
        acc[:] = 0
        for b in range(n_):
            for od in range(od_):
                for oh in range(oh_):
                    grad[od * plane + oh * pitch:od * plane + oh * pitch + ow_] = dy[b, oc, od, oh]
            for c in range(cg):
                _fillPlane(buf, x[b, g * cg + c], pD, pH, pd, plane, pitch, c0, c1)
                t = 0
                for kd in range(kd_):
                    for kh in range(kh_):
                        for kw in range(kw_):
                            off = np.uintp(kd * dl[0] * plane + kh * dl[1] * pitch + kw * dl[2])
                            a = acc[c, t]
                            for i in range(np.uintp(length)):
                                a[i] += grad[i] * buf[off + i]
                            t += 1
        for c in range(cg):
            t = 0
            for kd in range(kd_):
                for kh in range(kh_):
                    for kw in range(kw_):
                        dw[oc, c, kd, kh, kw] = _laneSum(acc[c, t], lanes)
                        t += 1


def _tapTable(w, row, col, flip, kd_, kh_, kw_, dl, plane, pitch, wt, offs):
    """Weights of kernel w[row, col] (taps in row-major order; in reverse when ``flip``) and the flat
    buffer offsets of the taps."""
    t = 0
    for kd in range(kd_):
        for kh in range(kh_):
            for kw in range(kw_):
                if flip:
                    wt[t] = w[row, col, kd_ - 1 - kd, kh_ - 1 - kh, kw_ - 1 - kw]
                else:
                    wt[t] = w[row, col, kd, kh, kw]
                offs[t] = kd * dl[0] * plane + kh * dl[1] * pitch + kw * dl[2]
                t += 1


def _tapPasses(acc, buf, wt, offs, taps, length, init):
    """acc (+)= sum over taps of wt[t] * buf[offs[t] + i], nine (then three, then one) taps per pass over acc.

    One pass adds up to nine products per element before touching acc, so acc is loaded and stored once
    per nine taps instead of once per tap (a 3x3 kernel is one pass). The order is fixed: deterministic.
    With ``init`` the first pass writes acc (acc = init + products) instead of reading it.
    """
    n = np.uintp(length)
    t = 0
    first = True
    while t < taps:
        left = taps - t
        if left >= 9:
            w0, w1, w2, w3, w4, w5, w6, w7, w8 = (wt[t], wt[t + 1], wt[t + 2], wt[t + 3], wt[t + 4], wt[t + 5],
                                                  wt[t + 6], wt[t + 7], wt[t + 8])
            f0, f1, f2, f3, f4 = offs[t], offs[t + 1], offs[t + 2], offs[t + 3], offs[t + 4]
            f5, f6, f7, f8 = offs[t + 5], offs[t + 6], offs[t + 7], offs[t + 8]
            if first and init is not None:
                for i in range(n):
                    acc[i] = init + (w0 * buf[f0 + i] + w1 * buf[f1 + i] + w2 * buf[f2 + i] + w3 * buf[f3 + i]
                                     + w4 * buf[f4 + i] + w5 * buf[f5 + i] + w6 * buf[f6 + i] + w7 * buf[f7 + i]
                                     + w8 * buf[f8 + i])
            else:
                for i in range(n):
                    acc[i] += (w0 * buf[f0 + i] + w1 * buf[f1 + i] + w2 * buf[f2 + i] + w3 * buf[f3 + i]
                               + w4 * buf[f4 + i] + w5 * buf[f5 + i] + w6 * buf[f6 + i] + w7 * buf[f7 + i]
                               + w8 * buf[f8 + i])
            t += 9
        elif left >= 3:
            w0, w1, w2 = wt[t], wt[t + 1], wt[t + 2]
            f0, f1, f2 = offs[t], offs[t + 1], offs[t + 2]
            if first and init is not None:
                for i in range(n):
                    acc[i] = init + (w0 * buf[f0 + i] + w1 * buf[f1 + i] + w2 * buf[f2 + i])
            else:
                for i in range(n):
                    acc[i] += w0 * buf[f0 + i] + w1 * buf[f1 + i] + w2 * buf[f2 + i]
            t += 3
        else:
            w0 = wt[t]
            f0 = offs[t]
            if first and init is not None:
                for i in range(n):
                    acc[i] = init + w0 * buf[f0 + i]
            else:
                for i in range(n):
                    acc[i] += w0 * buf[f0 + i]
            t += 1
        first = False
    if first and init is not None:
        acc[:length] = init


def _forwardFlat5(x, w, bias, y, pd, dl, o0, o1, transposed):
    """Unit-stride forward on flattened planes: each input plane is copied into a zero-bordered buffer,
    after which every kernel tap is a multiply-add with a constant shift (output computed on the
    padded row pitch, then compacted); up to nine taps are summed per pass (_tapPasses). Long contiguous
    loops vectorise well even for small maps.

    ``transposed``: run the transposed convolution of kernel w (O, C/g, *k) instead, i.e. the kernel
    (C, O/g, *k) flipped in space (backward-data with unit stride), reading w in place: no flipped copy
    is made, and none is kept that could go stale when w is modified.
    """
    n_, c_, dd_, hh_, ww_ = x.shape
    kd_, kh_, kw_ = w.shape[2], w.shape[3], w.shape[4]
    if transposed:
        o_, cg = y.shape[1], w.shape[0] // (y.shape[1] // w.shape[1])
    else:
        o_, cg = w.shape[0], w.shape[1]
    od_, oh_, ow_ = y.shape[2], y.shape[3], y.shape[4]
    og = o_ // (c_ // cg)
    pD, pH, pW = od_ + dl[0] * (kd_ - 1), oh_ + dl[1] * (kh_ - 1), ow_ + dl[2] * (kw_ - 1)
    plane, pitch = pH * pW, pW
    length = (od_ - 1) * plane + (oh_ - 1) * pitch + ow_
    buf = np.zeros(pD * plane, dtype=x.dtype)
    acc = np.empty(length, dtype=y.dtype)
    taps = kd_ * kh_ * kw_
    wt = np.empty(taps, dtype=y.dtype)
    offs = np.empty(taps, dtype=np.uintp)
    # Input columns [c0, c1) land at buffer columns [c0 + pd[2], c1 + pd[2]); rows likewise.
    c0, c1 = max(0, -pd[2]), min(ww_, pW - pd[2])
    for b in range(n_):
        for oc in range(o0, o1):
            g = oc // og
            for c in range(cg):
                _fillPlane(buf, x[b, g * cg + c], pD, pH, pd, plane, pitch, c0, c1)
                if transposed:  # logical kernel[oc, c] = w[group's map c, oc's channel in group], flipped
                    _tapTable(w, g * cg + c, oc - g * og, True, kd_, kh_, kw_, dl, plane, pitch, wt, offs)
                else:
                    _tapTable(w, oc, c, False, kd_, kh_, kw_, dl, plane, pitch, wt, offs)
                _tapPasses(acc, buf, wt, offs, taps, length, bias[oc] if c == 0 else None)
            for od in range(od_):
                for oh in range(oh_):
                    y[b, oc, od, oh, :] = acc[od * plane + oh * pitch:od * plane + oh * pitch + ow_]


def _backwardData5(dy, w, dx, st, pd, dl):
    n_, c_, dd_, hh_, ww_ = dx.shape
    o_, cg, kd_, kh_, kw_ = w.shape
    od_, oh_, ow_ = dy.shape[2], dy.shape[3], dy.shape[4]
    og = o_ // (c_ // cg)
    lo, hi, off = _ranges(ww_, ow_, kw_, st[2], pd[2], dl[2])
    for b in range(n_):
        for oc in range(o_):
            g = oc // og
            for od in range(od_):
                for oh in range(oh_):
                    grow = dy[b, oc, od, oh]
                    for c in range(cg):
                        ic = g * cg + c
                        for kd in range(kd_):
                            idd = od * st[0] + kd * dl[0] - pd[0]
                            if idd < 0 or idd >= dd_:
                                continue
                            for kh in range(kh_):
                                ih = oh * st[1] + kh * dl[1] - pd[1]
                                if ih < 0 or ih >= hh_:
                                    continue
                                row = dx[b, ic, idd, ih]
                                for kw in range(kw_):
                                    wv = w[oc, c, kd, kh, kw]
                                    first, base, count, step = _span(lo[kw], hi[kw], off[kw], st[2])
                                    if step == 1:
                                        for j in range(count):
                                            row[base + j] += wv * grow[first + j]
                                    else:
                                        for j in range(count):
                                            row[base + j * step] += wv * grow[first + j]


def _backwardParams5(x, dy, dw, st, pd, dl, o0, o1):
    n_, c_, dd_, hh_, ww_ = x.shape
    o_, cg, kd_, kh_, kw_ = dw.shape
    od_, oh_, ow_ = dy.shape[2], dy.shape[3], dy.shape[4]
    og = o_ // (c_ // cg)
    lo, hi, off = _ranges(ww_, ow_, kw_, st[2], pd[2], dl[2])
    # Per output map, products are accumulated elementwise along the output row, summed at the end.
    acc = np.empty((cg, kd_, kh_, kw_, ow_), dtype=dw.dtype)
    for oc in range(o0, o1):
        g = oc // og
        acc[:] = 0
        for b in range(n_):
            for od in range(od_):
                for oh in range(oh_):
                    grow = dy[b, oc, od, oh]
                    for c in range(cg):
                        ic = g * cg + c
                        for kd in range(kd_):
                            idd = od * st[0] + kd * dl[0] - pd[0]
                            if idd < 0 or idd >= dd_:
                                continue
                            for kh in range(kh_):
                                ih = oh * st[1] + kh * dl[1] - pd[1]
                                if ih < 0 or ih >= hh_:
                                    continue
                                row = x[b, ic, idd, ih]
                                for kw in range(kw_):
                                    a = acc[c, kd, kh, kw]
                                    first, base, count, step = _span(lo[kw], hi[kw], off[kw], st[2])
                                    if step == 1:
                                        for j in range(count):
                                            a[first + j] += grow[first + j] * row[base + j]
                                    else:
                                        for j in range(count):
                                            a[first + j] += grow[first + j] * row[base + j * step]
        for c in range(cg):
            for kd in range(kd_):
                for kh in range(kh_):
                    for kw in range(kw_):
                        total = acc[c, kd, kh, kw, 0]
                        for j in range(1, ow_):
                            total += acc[c, kd, kh, kw, j]
                        dw[oc, c, kd, kh, kw] = total


# -- "same" convolutions (unit stride, output shape = input shape, kernel 3 wide) ---------------------
# The output plane has the input's pitch, so every tap is a constant shift of the flat input and the
# result is written straight into y: no zero-bordered copy of the input, no compaction of the output.
# Flat shifts by -d/+d wrap across rows at the left/right columns; there the taps are masked out by a
# select (mL/mR per column of the plane: not a multiply, so an inf/nan from the wrapped column never
# leaks in). Rows are grouped in bands with the same valid kernel rows; each band's first and last
# d pixels (whose wrapped reads could leave the plane) go through the checked per-pixel routine.
def _rowBands(od, oh, dd_, hh_, kd_, kh_, pd, dl):
    """Valid kernel ranges [kdlo, kdhi) x [khlo, khhi) for output row oh of slice od, and the end of the
    run of rows sharing them."""
    kdlo, kdhi = _validRange(od, dd_, kd_, pd[0], dl[0])
    khlo, khhi = _validRange(oh, hh_, kh_, pd[1], dl[1])
    r1 = oh + 1
    while r1 < hh_:
        lo, hi = _validRange(r1, hh_, kh_, pd[1], dl[1])
        if lo != khlo or hi != khhi:
            break
        r1 += 1
    return kdlo, kdhi, khlo, khhi, r1


def _validRange(o, size, k, p, d):
    """Taps t of a unit-stride axis with input o + t * d - p inside [0, size): a range [lo, hi)."""
    lo, hi = 0, k
    while lo < k and o + lo * d - p < 0:
        lo += 1
    while hi > lo and o + (hi - 1) * d - p >= size:
        hi -= 1
    return lo, hi


def _pixelSame(yf, xf, i, od, oh, ow, dd_, hh_, ww_, wk, pd, dl, init, add):
    """One output pixel with every tap bounds-checked (band ends)."""
    kd_, kh_, kw_ = wk.shape
    total = yf[i] if add else init
    for kd in range(kd_):
        idd = od + kd * dl[0] - pd[0]
        if idd < 0 or idd >= dd_:
            continue
        for kh in range(kh_):
            ih = oh + kh * dl[1] - pd[1]
            if ih < 0 or ih >= hh_:
                continue
            for kw in range(kw_):
                iw = ow + kw * dl[2] - pd[2]
                if 0 <= iw < ww_:
                    total += wk[kd, kh, kw] * xf[(idd * hh_ + ih) * ww_ + iw]
    yf[i] = total


def _bandPass(yf, xf, start, count, mofs, mL, mR, wr, offs, r0, nr, dw_, init, add):
    """yf[start + k] (+)= select(mL) left taps + centre taps + select(mR) right taps over kernel rows
    [r0, r0 + nr) (nr <= 3), k in [0, count). Reads are in bounds: the caller trims the band ends."""
    n = np.uintp(count)
    s = np.uintp(start)
    m = np.uintp(mofs)
    z = yf.dtype.type(0)
    a0 = np.uintp(start + offs[r0])
    l0, c0, q0 = wr[r0, 0], wr[r0, 1], wr[r0, 2]
    d = np.uintp(dw_)
    if nr == 3:
        a1, a2 = np.uintp(start + offs[r0 + 1]), np.uintp(start + offs[r0 + 2])
        l1, c1, q1 = wr[r0 + 1, 0], wr[r0 + 1, 1], wr[r0 + 1, 2]
        l2, c2, q2 = wr[r0 + 2, 0], wr[r0 + 2, 1], wr[r0 + 2, 2]
        for k in range(n):
            left = l0 * xf[a0 + k - d] + l1 * xf[a1 + k - d] + l2 * xf[a2 + k - d]
            right = q0 * xf[a0 + k + d] + q1 * xf[a1 + k + d] + q2 * xf[a2 + k + d]
            v = (yf[s + k] if add else init) + (c0 * xf[a0 + k] + c1 * xf[a1 + k] + c2 * xf[a2 + k])
            v += left if mL[m + k] else z
            v += right if mR[m + k] else z
            yf[s + k] = v
    elif nr == 2:
        a1 = np.uintp(start + offs[r0 + 1])
        l1, c1, q1 = wr[r0 + 1, 0], wr[r0 + 1, 1], wr[r0 + 1, 2]
        for k in range(n):
            left = l0 * xf[a0 + k - d] + l1 * xf[a1 + k - d]
            right = q0 * xf[a0 + k + d] + q1 * xf[a1 + k + d]
            v = (yf[s + k] if add else init) + (c0 * xf[a0 + k] + c1 * xf[a1 + k])
            v += left if mL[m + k] else z
            v += right if mR[m + k] else z
            yf[s + k] = v
    else:
        for k in range(n):
            v = (yf[s + k] if add else init) + c0 * xf[a0 + k]
            v += l0 * xf[a0 + k - d] if mL[m + k] else z
            v += q0 * xf[a0 + k + d] if mR[m + k] else z
            yf[s + k] = v


def _kernelOf(w, oc, c, cg, og, transposed, wk):
    """wk = logical kernel [oc, c] (the transposed convolution: w[group's map c, oc's channel], flipped)."""
    kd_, kh_, kw_ = wk.shape
    if transposed:
        g = oc // og
        row, col = g * cg + c, oc - g * og
    else:
        row, col = oc, c
    for kd in range(kd_):
        for kh in range(kh_):
            for kw in range(kw_):
                if transposed:
                    wk[kd, kh, kw] = w[row, col, kd_ - 1 - kd, kh_ - 1 - kh, kw_ - 1 - kw]
                else:
                    wk[kd, kh, kw] = w[row, col, kd, kh, kw]


def _forwardSame5(x, w, bias, y, dims, pd, dl, o0, o1, transposed, mL, mR):
    """Unit-stride "same" forward (or transposed, see _forwardFlat5) on (N, C, D*H*W) views."""
    dd_, hh_, ww_ = dims
    n_, c_ = x.shape[0], x.shape[1]
    kd_, kh_ = w.shape[2], w.shape[3]
    if transposed:
        o_, cg = y.shape[1], w.shape[0] // (y.shape[1] // w.shape[1])
    else:
        o_, cg = w.shape[0], w.shape[1]
    og = o_ // (c_ // cg)
    hw = hh_ * ww_
    dw_ = dl[2]
    wk = np.empty((kd_, kh_, 3), dtype=y.dtype)
    wr = np.empty((kd_ * kh_, 3), dtype=y.dtype)
    offs = np.empty(kd_ * kh_, dtype=np.int64)
    for b in range(n_):
        for oc in range(o0, o1):
            g = oc // og
            yf = y[b, oc]
            init = bias[oc]
            for c in range(cg):
                xf = x[b, g * cg + c]
                _kernelOf(w, oc, c, cg, og, transposed, wk)
                add = c > 0
                for od in range(dd_):
                    oh = 0
                    while oh < hh_:
                        kdlo, kdhi, khlo, khhi, r1 = _rowBands(od, oh, dd_, hh_, kd_, kh_, pd, dl)
                        nr = 0
                        for kd in range(kdlo, kdhi):
                            for kh in range(khlo, khhi):
                                offs[nr] = (kd * dl[0] - pd[0]) * hw + (kh * dl[1] - pd[1]) * ww_
                                wr[nr, 0], wr[nr, 1], wr[nr, 2] = wk[kd, kh, 0], wk[kd, kh, 1], wk[kd, kh, 2]
                                nr += 1
                        first, last = od * hw + oh * ww_, od * hw + r1 * ww_
                        lo, hi = first + dw_, last - dw_
                        if hi <= lo:
                            lo = hi = last
                        for i in range(first, lo):
                            _pixelSame(yf, xf, i, od, (i - od * hw) // ww_, (i - od * hw) % ww_, dd_, hh_, ww_,
                                       wk, pd, dl, init, add)
                        if nr == 0:
                            for i in range(lo, hi):
                                yf[i] = yf[i] if add else init
                        r = 0
                        while r < nr:
                            step = min(3, nr - r)
                            _bandPass(yf, xf, lo, hi - lo, lo - od * hw, mL, mR, wr, offs, r, step, dw_, init,
                                      add or r > 0)
                            r += step
                        for i in range(hi, last):
                            _pixelSame(yf, xf, i, od, (i - od * hw) // ww_, (i - od * hw) % ww_, dd_, hh_, ww_,
                                       wk, pd, dl, init, add)
                        oh = r1

# -- 3x3 "same" planes (kernel 1 x 3 x 3, unit stride, pad = dilation on H and W) -------------------------
# Depthwise and small-group 3x3 layers. Each plane is three flat runs: the top dH rows (kernel rows 1-2),
# the interior rows (all three kernel rows, nine taps unrolled, weights in scalars) and the bottom dH rows
# (kernel rows 0-1). In a run every read is in bounds, so there is no test per element and the loop
# vectorises over the whole run; the left and right taps of a pixel in the first/last dW columns read
# across the row boundary and are dropped by a select (mL/mR), never multiplied by zero, so an inf or
# nan there never leaks in. The few pixels whose wrapped reads would leave the plane (the first and last
# dW of the plane and of the interior run) add the same sums, less the missing taps, in scalar code.
# Every pixel adds its taps in one fixed order: result = (init + centre column) + left column + right
# column, each column summed over its valid kernel rows top to bottom; deterministic.
# benchmarks/conv.py case 6 (N8 256 depthwise 28x28), the banded kernels before these, interleaved in one
# process, 2 threads, medians: forward 1.06 -> 0.56 ms, backward-data 0.89 -> 0.52, weight gradient
# 2.07 -> 0.75 (torch 1.61 / 1.38 / 1.39 and onnxruntime 1.36 forward in the same loop).
def _same3Fits(hh_, ww_, dh, dw_):
    return hh_ > 2 * dh and ww_ > 2 * dw_


def _same3Run3(yf, xf, lo, n, s, d, k, mL, mR, m0, init, add):
    """Pixels [lo, lo + n) of the interior rows: all three kernel rows (k: 3x3 in scalars)."""
    k00, k01, k02, k10, k11, k12, k20, k21, k22 = k
    z = yf.dtype.type(-0.0)
    t0, t1, t2 = lo - s - d, lo - d, lo + s - d
    d2 = d + d
    for j in range(n):
        left = k00 * xf[t0 + j] + k10 * xf[t1 + j] + k20 * xf[t2 + j]
        centre = k01 * xf[t0 + j + d] + k11 * xf[t1 + j + d] + k21 * xf[t2 + j + d]
        right = k02 * xf[t0 + j + d2] + k12 * xf[t1 + j + d2] + k22 * xf[t2 + j + d2]
        v = (yf[lo + j] if add else init) + centre
        v += left if mL[m0 + j] else z
        v += right if mR[m0 + j] else z
        yf[lo + j] = v


def _same3Run2(yf, xf, lo, n, ta, tb, d, a0, a1, a2, q0, q1, q2, mL, mR, m0, init, add):
    """Pixels [lo, lo + n) of a border run: two kernel rows, a (left tap of pixel lo at flat offset ta)
    and q (at tb)."""
    z = yf.dtype.type(-0.0)
    d2 = d + d
    for j in range(n):
        left = a0 * xf[ta + j] + q0 * xf[tb + j]
        centre = a1 * xf[ta + j + d] + q1 * xf[tb + j + d]
        right = a2 * xf[ta + j + d2] + q2 * xf[tb + j + d2]
        v = (yf[lo + j] if add else init) + centre
        v += left if mL[m0 + j] else z
        v += right if mR[m0 + j] else z
        yf[lo + j] = v


def _same3Plane(yf, xf, base, k, hh_, ww_, dh, dw_, mL, mR, init, add):
    """yf[base + p] (+)= init + 3x3 convolution of plane xf[base:base + H*W] at pixel p (H > 2 dH, W > 2 dW)."""
    d, s, b0 = np.uintp(dw_), np.uintp(dh * ww_), np.uintp(base)
    hw = np.uintp(hh_ * ww_)
    top, bottom = b0 + s, b0 + hw - s   # first interior pixel, first bottom-border pixel
    k00, k01, k02, k10, k11, k12, k20, k21, k22 = k
    # The four sets of dW pixels the runs cannot take (a wrapped tap would read outside the plane) lack
    # their left (first columns) or right (last columns) taps; they add the same sums in the same order.
    for c in range(d):
        i = b0 + c  # top border, first columns: kernel rows 1-2, no left taps
        v = (yf[i] if add else init) + (k11 * xf[i] + k21 * xf[i + s])
        yf[i] = v + (k12 * xf[i + d] + k22 * xf[i + s + d])
        i = top + c  # interior, first columns
        v = (yf[i] if add else init) + (k01 * xf[i - s] + k11 * xf[i] + k21 * xf[i + s])
        yf[i] = v + (k02 * xf[i - s + d] + k12 * xf[i + d] + k22 * xf[i + s + d])
        i = bottom - d + c  # interior, last columns: no right taps
        v = (yf[i] if add else init) + (k01 * xf[i - s] + k11 * xf[i] + k21 * xf[i + s])
        yf[i] = v + (k00 * xf[i - s - d] + k10 * xf[i - d] + k20 * xf[i + s - d])
        i = b0 + hw - d + c  # bottom border, last columns: kernel rows 0-1
        v = (yf[i] if add else init) + (k01 * xf[i - s] + k11 * xf[i])
        yf[i] = v + (k00 * xf[i - s - d] + k10 * xf[i - d])
    # Top border: rows 1-2 of the kernel read rows 0 and +dH.
    _same3Run2(yf, xf, b0 + d, s - d, b0, b0 + s, d, k10, k11, k12, k20, k21, k22, mL, mR, d, init, add)
    _same3Run3(yf, xf, top + d, bottom - top - d - d, s, d, k, mL, mR, s + d, init, add)
    # Bottom border: rows 0-1 of the kernel read rows -dH and 0.
    _same3Run2(yf, xf, bottom, s - d, bottom - s - d, bottom - d, d, k00, k01, k02, k10, k11, k12, mL, mR,
               hw - s, init, add)


def _forwardSame3(x, w, bias, y, dims, dl, p0, p1, transposed, mL, mR):
    """Forward (or transposed, see _forwardFlat5) of a 1 x 3 x 3 kernel, unit stride, pad = dilation, on
    (N, C, D*H*W) views: every depth slice is one plane (_same3Plane). Output planes [p0, p1) of the
    N * O (item, map) planes in memory order."""
    dd_, hh_, ww_ = dims
    c_ = x.shape[1]
    if transposed:
        o_, cg = y.shape[1], w.shape[0] // (y.shape[1] // w.shape[1])
    else:
        o_, cg = w.shape[0], w.shape[1]
    og = o_ // (c_ // cg)
    hw = hh_ * ww_
    wk = np.empty((1, 3, 3), dtype=y.dtype)
    for p in range(p0, p1):
        b, oc = p // o_, p % o_
        g = oc // og
        yf = y[b, oc]
        for c in range(cg):
            xf = x[b, g * cg + c]
            _kernelOf(w, oc, c, cg, og, transposed, wk)
            k = (wk[0, 0, 0], wk[0, 0, 1], wk[0, 0, 2], wk[0, 1, 0], wk[0, 1, 1], wk[0, 1, 2], wk[0, 2, 0],
                 wk[0, 2, 1], wk[0, 2, 2])
            for od in range(dd_):
                _same3Plane(yf, xf, od * hw, k, hh_, ww_, dl[1], dl[2], mL, mR, bias[oc], c > 0)


# Weight gradient of the same planes: per (output map, channel in group), nine sums over every item and
# pixel, run by run in the forward's layout (a select drops the wrapped left/right products). The sums
# of a run vectorise only if the compiler may reassociate them, so the plane's runs (_gradPlane with
# _gradRun3/_gradRun2 inlined; not the scalar _gradCorners, not the generic kernels) are compiled with
# fastmath "reassoc" and no other fastmath flag: each tap's products go into a register-wide vector of
# partial sums, added up in a fixed tree at the end. The order is fixed by the compiled code and depends
# on the shape only, so the result is the same on every run and for any thread count (one thread owns
# each output map).
def _gradRun3(acc, gf, xf, lo, n, s, d, mL, mR, m0):
    """acc[0:9] += sums over pixels [lo, lo + n) of the interior rows (all nine taps)."""
    z = acc.dtype.type(-0.0)
    t0, t1, t2 = lo - s - d, lo - d, lo + s - d
    d2 = d + d
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = z
    for j in range(n):
        g = gf[lo + j]
        ml, mr = mL[m0 + j], mR[m0 + j]
        s0 += g * xf[t0 + j] if ml else z
        s1 += g * xf[t0 + j + d]
        s2 += g * xf[t0 + j + d2] if mr else z
        s3 += g * xf[t1 + j] if ml else z
        s4 += g * xf[t1 + j + d]
        s5 += g * xf[t1 + j + d2] if mr else z
        s6 += g * xf[t2 + j] if ml else z
        s7 += g * xf[t2 + j + d]
        s8 += g * xf[t2 + j + d2] if mr else z
    acc[0] += s0
    acc[1] += s1
    acc[2] += s2
    acc[3] += s3
    acc[4] += s4
    acc[5] += s5
    acc[6] += s6
    acc[7] += s7
    acc[8] += s8


def _gradRun2(acc, t, gf, xf, lo, n, ta, tb, d, mL, mR, m0):
    """acc[t:t + 6] += sums over pixels [lo, lo + n) of a border run (two kernel rows read from ta, tb)."""
    z = acc.dtype.type(-0.0)
    d2 = d + d
    s0 = s1 = s2 = s3 = s4 = s5 = z
    for j in range(n):
        g = gf[lo + j]
        ml, mr = mL[m0 + j], mR[m0 + j]
        s0 += g * xf[ta + j] if ml else z
        s1 += g * xf[ta + j + d]
        s2 += g * xf[ta + j + d2] if mr else z
        s3 += g * xf[tb + j] if ml else z
        s4 += g * xf[tb + j + d]
        s5 += g * xf[tb + j + d2] if mr else z
    acc[t] += s0
    acc[t + 1] += s1
    acc[t + 2] += s2
    acc[t + 3] += s3
    acc[t + 4] += s4
    acc[t + 5] += s5


def _gradCorners(acc, gf, xf, b0, hw, s, d):
    """acc += the products of the four sets of dW pixels the runs cannot take (see _same3Plane)."""
    top, bottom = b0 + s, b0 + hw - s
    for c in range(d):
        i = b0 + c  # top border, first columns: kernel rows 1-2, no left taps
        g = gf[i]
        acc[4] += g * xf[i]
        acc[5] += g * xf[i + d]
        acc[7] += g * xf[i + s]
        acc[8] += g * xf[i + s + d]
        i = top + c  # interior, first columns
        g = gf[i]
        acc[1] += g * xf[i - s]
        acc[2] += g * xf[i - s + d]
        acc[4] += g * xf[i]
        acc[5] += g * xf[i + d]
        acc[7] += g * xf[i + s]
        acc[8] += g * xf[i + s + d]
        i = bottom - d + c  # interior, last columns: no right taps
        g = gf[i]
        acc[0] += g * xf[i - s - d]
        acc[1] += g * xf[i - s]
        acc[3] += g * xf[i - d]
        acc[4] += g * xf[i]
        acc[6] += g * xf[i + s - d]
        acc[7] += g * xf[i + s]
        i = b0 + hw - d + c  # bottom border, last columns: kernel rows 0-1
        g = gf[i]
        acc[0] += g * xf[i - s - d]
        acc[1] += g * xf[i - s]
        acc[3] += g * xf[i - d]
        acc[4] += g * xf[i]


def _gradPlane(acc, gf, xf, base, hh_, ww_, dh, dw_, mL, mR):
    """acc[0:9] += the weight gradient of one plane pair (gradient gf, input xf at flat offset base)."""
    d, s, b0 = np.uintp(dw_), np.uintp(dh * ww_), np.uintp(base)
    hw = np.uintp(hh_ * ww_)
    top, bottom = b0 + s, b0 + hw - s
    _gradCorners(acc, gf, xf, b0, hw, s, d)
    _gradRun2(acc, 3, gf, xf, b0 + d, s - d, b0, b0 + s, d, mL, mR, d)
    _gradRun3(acc, gf, xf, top + d, bottom - top - d - d, s, d, mL, mR, s + d)
    _gradRun2(acc, 0, gf, xf, bottom, s - d, bottom - s - d, bottom - d, d, mL, mR, hw - s)


def _backwardParamsSame3(x, dy, dw, dims, dl, o0, o1, mL, mR):
    """Weight gradient of a 1 x 3 x 3 kernel, unit stride, pad = dilation, on (N, C, D*H*W) views."""
    dd_, hh_, ww_ = dims
    n_, c_ = x.shape[0], x.shape[1]
    o_, cg = dw.shape[0], dw.shape[1]
    og = o_ // (c_ // cg)
    hw = hh_ * ww_
    # Items outermost: the thread streams through its maps' planes in memory order. Each (map, channel)
    # still sums its planes in the same order (items, then depth slices).
    acc = np.zeros((o1 - o0, cg, 9), dtype=dw.dtype)
    for b in range(n_):
        for oc in range(o0, o1):
            g = oc // og
            gf = dy[b, oc]
            for c in range(cg):
                xf, a = x[b, g * cg + c], acc[oc - o0, c]
                for od in range(dd_):
                    _gradPlane(a, gf, xf, od * hw, hh_, ww_, dl[1], dl[2], mL, mR)
    for oc in range(o0, o1):
        for c in range(cg):
            for t in range(9):
                dw[oc, c, 0, t // 3, t % 3] = acc[oc - o0, c, t]


if njit is not None:
    _ranges = njit(cache=True)(_ranges)
    _span = njit(cache=True, inline="always")(_span)
    _forward5 = njit(cache=True, nogil=True)(_forward5)
    _fillPlane = njit(cache=True, nogil=True)(_fillPlane)
    _laneSum = njit(cache=True, nogil=True)(_laneSum)
    _tapTable = njit(cache=True, nogil=True)(_tapTable)
    _tapPasses = njit(cache=True, nogil=True)(_tapPasses)
    _forwardFlat5 = njit(cache=True, nogil=True)(_forwardFlat5)
    _backwardParamsFlat5 = njit(cache=True, nogil=True)(_backwardParamsFlat5)
    _backwardData5 = njit(cache=True, nogil=True)(_backwardData5)
    _backwardParams5 = njit(cache=True, nogil=True)(_backwardParams5)
    _validRange = njit(cache=True, inline="always")(_validRange)
    _rowBands = njit(cache=True)(_rowBands)
    _pixelSame = njit(cache=True, nogil=True)(_pixelSame)
    _bandPass = njit(cache=True, nogil=True)(_bandPass)
    _kernelOf = njit(cache=True, nogil=True)(_kernelOf)
    _forwardSame5 = njit(cache=True, nogil=True)(_forwardSame5)
    _same3Plane = njit(cache=True, nogil=True)(_same3Plane)
    # Inlined into _same3Plane: a call per run (and its loop's setup) cost about 30% of a 28x28 plane.
    _same3Run3 = njit(cache=True, nogil=True, inline="always")(_same3Run3)
    _same3Run2 = njit(cache=True, nogil=True, inline="always")(_same3Run2)
    _gradRun3 = njit(cache=True, nogil=True, fastmath={"reassoc"})(_gradRun3)
    _gradRun2 = njit(cache=True, nogil=True, fastmath={"reassoc"})(_gradRun2)
    _gradCorners = njit(cache=True, nogil=True)(_gradCorners)
    _gradPlane = njit(cache=True, nogil=True)(_gradPlane)
    _backwardParamsSame3 = njit(cache=True, nogil=True)(_backwardParamsSame3)
    _forwardSame3 = njit(cache=True, nogil=True)(_forwardSame3)


def _plan(xShape, wShape, stride, pad, dilation):
    """Per-shape constants of a forward call (output shape, 5-D views, kernel parameters)."""
    outSpatial = outputShape(xShape[2:], wShape[2:], stride, pad, dilation)
    yShape = (xShape[0], wShape[0]) + outSpatial
    return (yShape, shape5(xShape), shape5(wShape), shape5(yShape), params3(stride, pad, dilation),
            _isSame(xShape, wShape, stride, outSpatial))


def _isSame(xShape, wShape, stride, outSpatial):
    """Unit stride, output shape = input shape, kernel 3 wide: the _forwardSame5 family applies."""
    return all(s == 1 for s in stride) and tuple(outSpatial) == tuple(xShape[2:]) and wShape[-1] == 3


def _masks(dims, dilation):
    """Per flat position of a (H, W) plane: may the tap at -d (mL) / +d (mR) along W be read? Memoised."""
    return memo(_maskCache, (dims[1], dims[2], dilation), lambda: _makeMasks(dims[1], dims[2], dilation), limit=64)


def _makeMasks(hh_, ww_, dilation):
    col = np.tile(np.arange(ww_), hh_)
    masks = (col >= dilation, col + dilation < ww_)
    for m in masks:
        m.flags.writeable = False
    return masks


def _planT(dyShape, wShape, xShape, pad, dilation):
    """Per-shape constants of a unit-stride backward-data call (5-D views, transposed padding)."""
    same = _isSame(dyShape, wShape, (1,) * len(pad), xShape[2:])
    return (shape5(dyShape), shape5(wShape), shape5(xShape), lead3(transposedPad(wShape[2:], pad, dilation), 0),
            lead3(dilation), same)


_UNIT = {1: (1,), 2: (1, 1), 3: (1, 1, 1)}
_runners = {}
_runnersT = {}
_zeros = {}
_maskCache = {}


def _zeroBias(o, dtype):
    """A shared zero bias, private to this module (the kernels only read it). Left writeable: numba types a
    read-only array apart, so a read-only one compiled every kernel a second time (about 2 s on first use)."""
    return memo(_zeros, (o, dtype), lambda: np.zeros(o, dtype=dtype), limit=64)


# -- entry points ------------------------------------------------------------------------------------
def forward(x, w, bias, stride, pad, dilation, groups):
    return forwardRunner(x.shape, w.shape, stride, pad, dilation, groups, x.dtype)(x, w, bias)


def forwardRunner(xShape, wShape, stride, pad, dilation, groups, dtype):
    """``run(x, w, bias) -> y`` for inputs of exactly these shapes and dtype, memoised.

    Every per-shape decision (output shape, 5-D views, which kernel, border masks) is taken once here:
    on small inputs (the page example) that bookkeeping cost more than the kernel itself.
    """
    return memo(_runners, (xShape, wShape, stride, pad, dilation, groups, dtype),
                lambda: _makeForwardRunner(xShape, wShape, stride, pad, dilation, groups, np.dtype(dtype)))


def _makeForwardRunner(xShape, wShape, stride, pad, dilation, groups, dtype):
    yShape, x5, w5, y5, (st, pd, dl), same = _plan(xShape, wShape, stride, pad, dilation)
    launch = _gatherLauncher(x5, w5, y5, st, pd, dl, same, False, prod(yShape) * prod(wShape[1:]))
    zeroBias = _zeroBias(wShape[0], dtype)

    def run(x, w, bias):
        if not useNumba:  # read per call: the fallback can be switched on after the runner was made
            return _numpyForward(x, w, bias, stride, pad, dilation, groups, yShape[2:])
        y = np.empty(yShape, dtype=dtype)
        if bias is None:
            bias = zeroBias
        elif bias.dtype != dtype or not bias.flags.c_contiguous:
            bias = np.ascontiguousarray(bias, dtype=dtype)
        launch(np.ascontiguousarray(x), np.ascontiguousarray(w).reshape(w5), bias, y)
        return y

    return run


def _gatherLauncher(src5, w5, dst5, st, pd, dl, same, flip, work):
    """``launch(src, w5view, bias, dst)``: the gather kernels from src to dst viewed as 5-D. Forward: src is
    the input; flip: the transposed convolution (backward-data, unit stride) reading the kernel flipped."""
    maps = dst5[1]
    # Output maps (or (item, map) planes) are split between threads; the kernels release the GIL.
    if same and w5[2:] == (1, 3, 3) and _same3Fits(dst5[3], dst5[4], dl[1], dl[2]):
        src3, dst3, planes, dims = src5[:2] + (-1,), dst5[:2] + (-1,), dst5[0] * dst5[1], dst5[2:]
        mL, mR = _masks(dims, dl[2])

        def launch(src, wv, b, dst):
            sv, dv = src.reshape(src3), dst.reshape(dst3)
            # Threads take contiguous runs of (item, map) planes: balanced even for a few maps.
            parallel(lambda p0, p1: _forwardSame3(sv, wv, b, dv, dims, dl, p0, p1, flip, mL, mR), planes, work)
    elif same:
        src3, dst3, dims = src5[:2] + (-1,), dst5[:2] + (-1,), dst5[2:]
        mL, mR = _masks(dims, dl[2])

        def launch(src, wv, b, dst):
            sv, dv = src.reshape(src3), dst.reshape(dst3)
            parallel(lambda o0, o1: _forwardSame5(sv, wv, b, dv, dims, pd, dl, o0, o1, flip, mL, mR), maps, work)
    elif st == (1, 1, 1):
        def launch(src, wv, b, dst):
            sv, dv = src.reshape(src5), dst.reshape(dst5)
            if work < conv_common.PARALLEL_WORK:  # one thread whatever the count: no closure, no split
                _forwardFlat5(sv, wv, b, dv, pd, dl, 0, maps, flip)
            else:
                parallel(lambda o0, o1: _forwardFlat5(sv, wv, b, dv, pd, dl, o0, o1, flip), maps, work)
    else:
        def launch(src, wv, b, dst):
            sv, dv = src.reshape(src5), dst.reshape(dst5)
            parallel(lambda o0, o1: _forward5(sv, wv, b, dv, st, pd, dl, o0, o1), maps, work)
    return launch


def backwardDataRunner(dyShape, wShape, xShape, stride, pad, dilation, groups, dtype):
    """``run(dy, w) -> dx`` for exactly these shapes and dtype, memoised (as forwardRunner)."""
    return memo(_runnersT, (dyShape, wShape, xShape, stride, pad, dilation, groups, dtype),
                lambda: _makeBackwardDataRunner(dyShape, wShape, xShape, stride, pad, dilation, groups,
                                                np.dtype(dtype)))


def _makeBackwardDataRunner(dyShape, wShape, xShape, stride, pad, dilation, groups, dtype):
    if stride != _UNIT[len(stride)]:
        params = params3(stride, pad, dilation)

        def scatter(dy, w):
            if not useNumba:
                return _numpyBackwardData(dy, w, xShape, stride, pad, dilation, groups)
            dx = np.zeros(xShape, dtype=dtype)
            _backwardData5(as5(np.ascontiguousarray(dy)), as5(np.ascontiguousarray(w)), as5(dx), *params)
            return dx

        return scatter
    # Unit stride: a gather (the forward kernel run as the transposed convolution, reading w flipped in
    # place) beats the scatter-add loop.
    dy5, w5, dx5, pd, dl, same = _planT(dyShape, wShape, xShape, pad, dilation)
    launch = _gatherLauncher(dy5, w5, dx5, (1, 1, 1), pd, dl, same, True, prod(dyShape) * prod(wShape[1:]))
    zeroBias = _zeroBias(xShape[1], dtype)

    def gather(dy, w):
        if not useNumba:
            return _numpyBackwardData(dy, w, xShape, stride, pad, dilation, groups)
        dx = np.empty(xShape, dtype=dtype)
        launch(np.ascontiguousarray(dy), np.ascontiguousarray(w).reshape(w5), zeroBias, dx)
        return dx

    return gather


def backwardParams(x, dy, wShape, stride, pad, dilation, groups):
    if not useNumba:
        return _numpyBackwardParams(x, dy, wShape, stride, pad, dilation, groups)
    dw = np.empty(wShape, dtype=x.dtype)
    x5, dy5, dw5 = as5(np.ascontiguousarray(x)), as5(np.ascontiguousarray(dy)), as5(dw)
    st, pd, dl = params3(stride, pad, dilation)
    work = dy.size * prod(wShape[1:])
    if (wShape[-1] == 3 and st == (1, 1, 1) and dw5.shape[2:] == (1, 3, 3) and dy5.shape[2:] == x5.shape[2:]
            and _same3Fits(x5.shape[3], x5.shape[4], dl[1], dl[2])):
        mL, mR = _masks(x5.shape[2:], dl[2])
        x3, dy3 = x5.reshape(x5.shape[:2] + (-1,)), dy5.reshape(dy5.shape[:2] + (-1,))
        parallel(lambda o0, o1: _backwardParamsSame3(x3, dy3, dw5, x5.shape[2:], dl, o0, o1, mL, mR), wShape[0],
                 work)
        return dw
    # The flat kernel keeps (C/groups * taps) accumulator planes; fall back to rows when that is large.
    accBytes = wShape[1] * prod(wShape[2:]) * prod(x5.shape[2:]) * x.itemsize
    if st == (1, 1, 1) and accBytes * threadCount(wShape[0], work) <= (32 << 20):
        parallel(lambda o0, o1: _backwardParamsFlat5(x5, dy5, dw5, pd, dl, o0, o1), wShape[0], work)
    else:
        parallel(lambda o0, o1: _backwardParams5(x5, dy5, dw5, st, pd, dl, o0, o1), wShape[0], work)
    return dw


# -- numpy fallback: vectorised over items, groups, maps and pixels; a loop over (channel, tap) --------
def _taps(kernel, spatial, outSpatial, stride, pad, dilation):
    for tap in np.ndindex(*kernel):
        src, box = [], []
        for size, out, t, s, p, d in zip(spatial, outSpatial, tap, stride, pad, dilation):
            lo, hi, start = tapRange(size, out, t, s, p, d)
            box.append(slice(lo, hi))
            src.append(slice(start, start + max(hi - lo - 1, 0) * s + 1, s))
        if all(b.stop > b.start for b in box):
            yield tap, tuple(src), tuple(box)


def _split(a, groups):
    return a.reshape((a.shape[0], groups, a.shape[1] // groups) + a.shape[2:])


def _numpyForward(x, w, bias, stride, pad, dilation, groups, outSpatial):
    n, o = x.shape[0], w.shape[0]
    y = np.zeros((n, o) + outSpatial, dtype=x.dtype)
    yg, xg, wg = _split(y, groups), _split(x, groups), w.reshape((groups, o // groups) + w.shape[1:])
    every = (slice(None),) * 3
    bcast = (slice(None), slice(None)) + (None,) * len(outSpatial)
    for c in range(w.shape[1]):
        for tap, src, box in _taps(w.shape[2:], x.shape[2:], outSpatial, stride, pad, dilation):
            wtap = wg[(slice(None), slice(None), c) + tap][bcast]
            yg[every + box] += wtap * xg[(slice(None), slice(None), c) + src][:, :, None]
    if bias is not None:
        y += bias.reshape((1, o) + (1,) * len(outSpatial))
    return y


def _numpyBackwardData(dy, w, xShape, stride, pad, dilation, groups):
    o = w.shape[0]
    dx = np.zeros(xShape, dtype=dy.dtype)
    dxg, dyg, wg = _split(dx, groups), _split(dy, groups), w.reshape((groups, o // groups) + w.shape[1:])
    bcast = (slice(None), slice(None)) + (None,) * (dy.ndim - 2)
    for c in range(w.shape[1]):
        for tap, src, box in _taps(w.shape[2:], xShape[2:], dy.shape[2:], stride, pad, dilation):
            part = (wg[(slice(None), slice(None), c) + tap][bcast] * dyg[(slice(None),) * 3 + box]).sum(axis=2)
            dxg[(slice(None), slice(None), c) + src] += part
    return dx


def _numpyBackwardParams(x, dy, wShape, stride, pad, dilation, groups):
    o = wShape[0]
    dw = np.zeros(wShape, dtype=x.dtype)
    dwg, xg, dyg = dw.reshape((groups, o // groups) + tuple(wShape[1:])), _split(x, groups), _split(dy, groups)
    axes = (0,) + tuple(range(3, dy.ndim + 1))
    for c in range(wShape[1]):
        for tap, src, box in _taps(wShape[2:], x.shape[2:], dy.shape[2:], stride, pad, dilation):
            prod = dyg[(slice(None),) * 3 + box] * xg[(slice(None), slice(None), c) + src][:, :, None]
            dwg[(slice(None), slice(None), c) + tap] = prod.sum(axis=axes)
    return dw
