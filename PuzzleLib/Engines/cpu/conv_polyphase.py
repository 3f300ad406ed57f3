"""2-D 3x3 stride-1 dilated convolutions as undilated Winograd convolutions on polyphase sub-planes.

With stride 1 and dilation (dh, dw), output pixel (i, j) reads padded input pixels (i + dh*ki, j + dw*kj):
all in the same residue class (i mod dh, j mod dw). So output phase y[..., a::dh, b::dw] is the undilated
3x3 convolution of input phase xp[..., a::dh, b::dw] (xp: x padded), and the dh*dw phases are independent
convolutions that conv_winograd runs (each with its own size), with the chunk bound of the whole call
(a phase's own, a quarter of it, made GEMMs too thin: case 8 forward phases ran 2.0 ms each, 1.2 with it).
Backward-data splits the same way (dx phases from dy phases); the weight gradient is the sum of the phases'
gradients, added in a fixed order (deterministic).

The forward reads each phase's input where it lies, a strided view of x (``_pixels``), whenever the phase's
buffer would hold x's pixels only (its margins of padding left to the Winograd call: every phase of case 8);
Winograd's own tile copy then gathers the strided rows. Case 8's forward, same process, two threads, median of
15-21 paired ratios against copying each phase first (``/tmp/s10/ab8.py``): 0.93-0.94 with caches warm,
0.92 with a 32 MiB array written before each call (one thread: 1.01), and its peak fell from 9.9 to 8.4 MiB
(torch 12.3). Other phases are copied into one buffer of their padded size (zeros where the padding is), one
phase at a time: about one phase of x (1 / (dh*dw) of it) plus Winograd's own bounded buffers. Backward-data
and the weight gradient, where the phases are of equal size, stack all phases of a chunk of batch items along
the batch axis instead (one Winograd call per chunk): those buffers are bounded by half the call's result
(_stackLimit), the chunk holding at least n / phases items (_batchStep). Reading their phases where they lie, as
the forward does, one Winograd call per phase, was not kept: on case 8, against the stacked copies, same process,
two threads, median of 11 paired ratios, backward-data 0.935 and the weight gradient 0.947 with caches warm, but
1.012 and 1.018 with a 32 MiB array written before each call, and 1.12 on one thread (the stacked copy reads each
cache line of dy or x once for all phases; the phases' strided reads, one call after another, read it again).

Where a phase's buffer is its interior (x's pixels) with the same margin of padding on both sides (all phases
alike, for the stacked directions), only the interior is stored and the Winograd call pads by the margin instead
(_interior). The forward and the weight gradient keep their tiles (the same bits), with less to copy and hold;
backward-data computes only the dx phases' interiors: case 8's 28x28 of the 30x30 its phases padded to, 7x7
tiles instead of 8x8, 0.83-0.86 of the time (``/tmp/s10/ab8.py``, warm and flushed, median of 12 paired ratios)
and 0.5 MiB less at its peak (11.4 MiB against torch's 12.2 in ``benchmarks/conv.py --cases 8``).

These copies are compiled (_phaseRows), each row of the source read once for all its phases,
split between the threads by channels. Case 8's arrays, two threads, ms, numpy's strided copies (one pass per
phase) against them (``/tmp/s10/mv.py``, median of 15 alternated rounds): with caches warm, the stacked dy
phases 0.85 vs 0.35, x's padded phases 1.37 vs 0.48, dx from its phases 0.93 vs 0.29; with a 32 MiB array read
before each copy they tie (1.03 vs 1.12, 1.66 vs 1.70, 1.19 vs 1.16: memory-bound). Whole calls against numpy's
copies, same process, median of 12 paired ratios (``/tmp/s10/ab8.py``): backward-data 0.96 warm and 0.95
flushed, weight gradient 0.93 and 0.94, forward 0.93 and 0.99.
"""


import numpy as np

from PuzzleLib.Engines.cpu import conv_common, conv_winograd
from PuzzleLib.Engines.cpu.conv_common import leadingView, workspace
from PuzzleLib.Engines.cpu.conv_im2col import flippedKernel

try:
    from numba import njit, uintp
except ImportError:  # pragma: no cover - numba is a dependency; without it Winograd (and so this) is unavailable
    njit = None


def applies(kernel, stride, dilation):
    return (len(kernel) == 2 and tuple(kernel) == (3, 3) and tuple(stride) == (1, 1)
            and tuple(dilation) != (1, 1) and all(d >= 1 for d in dilation))


def _axisPhases(size, pad, dil):
    """Per phase a of one axis: (a, output length, buffer length, j0, j1, first x index) where buffer
    entries [j0, j1) hold x[first::dil] and the rest is padding (zero)."""
    out = size + 2 * pad - 2 * dil
    phases = []
    for a in range(dil):
        olen = len(range(a, max(out, 0), dil))
        if olen == 0:
            continue
        length = olen + 2
        j0 = max(0, -(-(pad - a) // dil))
        j1 = min(length, -(-(size + pad - a) // dil))
        phases.append((a, olen, length, j0, max(j0, j1), a + dil * j0 - pad))
    return phases


def _complete(size, pad, dil):
    """Whether the phases' buffers cover every x index (else backward-data leaves zeros)."""
    return sum(j1 - j0 for _, _, _, j0, j1, _ in _axisPhases(size, pad, dil)) == size


def _phases(shape, pad, dilation):
    rows, cols = (_axisPhases(shape[0], pad[0], dilation[0]), _axisPhases(shape[1], pad[1], dilation[1]))
    return [(r, c) for r in rows for c in cols]


def _strided(x, r, c, dilation):
    """The pixels of x (or dx) that phase (r, c)'s buffer holds in [j0, j1) x [k0, k1): a strided view."""
    _, _, _, j0, j1, first = r
    _, _, _, k0, k1, cfirst = c
    return x[:, :, first:first + dilation[0] * (j1 - j0 - 1) + 1:dilation[0],
             cfirst:cfirst + dilation[1] * (k1 - k0 - 1) + 1:dilation[1]]


def _gather(x, buf, r, c, dilation):
    """x's phase (r, c) into buf (its padded size): zeros at the borders, x's strided pixels inside."""
    _, _, _, j0, j1, _ = r
    _, _, _, k0, k1, _ = c
    buf[:, :, :j0] = 0
    buf[:, :, j1:] = 0
    buf[:, :, j0:j1, :k0] = 0
    buf[:, :, j0:j1, k1:] = 0
    if j1 > j0 and k1 > k0:
        buf[:, :, j0:j1, k0:k1] = _strided(x, r, c, dilation)
    return buf


def _tables(phases):
    """The stacked phases [(r, c)] (rows outer, columns inner, as _phases orders them) as two int64 tables of
    (j0, j1, first index): the row phases', the column phases'."""
    rows = list(dict.fromkeys(r for r, _ in phases))
    cols = list(dict.fromkeys(c for _, c in phases))
    assert [(r, c) for r in rows for c in cols] == list(phases)
    return tuple(np.array([(a[3], a[4], a[5]) for a in axis], dtype=np.int64).reshape(-1, 3) for axis in (rows, cols))


def _phaseRows(x, phased, rows, cols, dh, dw, c0, c1, gather):
    """The stacked phases of x (N, C, H, W), channels [c0, c1), ``gather``: phased[ri * len(cols) + ci, b, c, j,
    k] = x[b, c, first + dh (j - j0), cfirst + dw (k - k0)] for j in [j0, j1) (rows[ri]) and k in [k0, k1)
    (cols[ci]), zero elsewhere (the padding); else the reverse on the interiors, x from its phases.

    Each row of x is read (or written) once, while it is in cache, for all its column phases (numpy made one
    strided pass over x per phase); with two column phases of dilation 2 one loop splits the row into both, or
    interleaves them back (an interleaved access LLVM vectorises). Flat unsigned indices, as conv_winograd's
    copies."""
    n, C, H, W = x.shape
    length, width = phased.shape[3], phased.shape[4]
    nc = cols.shape[0]
    flat, ph = x.reshape(-1), phased.reshape(-1)
    plane = length * width
    stride = n * C * plane  # of the phases in phased
    pair = _pairs(cols, dw)
    for b in range(n):
        for c in range(c0, c1):
            base = (b * C + c) * plane
            for ri in range(rows.shape[0]):
                j0, j1, first = rows[ri, 0], rows[ri, 1], rows[ri, 2]
                if gather:
                    for ci in range(nc):
                        _zeroMargins(ph, (ri * nc + ci) * stride + base, j0, j1, cols[ci, 0], cols[ci, 1], length,
                                     width)
                for j in range(j0, j1):
                    row = ((b * C + c) * H + first + dh * (j - j0)) * W
                    if pair:
                        p0 = uintp((ri * nc) * stride + base + j * width + cols[0, 0])
                        p1 = p0 + uintp(stride)
                        s0 = uintp(row + cols[0, 2])
                        if gather:
                            for k in range(cols[0, 1] - cols[0, 0]):
                                u = uintp(k)
                                ph[p0 + u] = flat[s0 + uintp(2) * u]
                                ph[p1 + u] = flat[s0 + uintp(2) * u + uintp(1)]
                        else:
                            for k in range(cols[0, 1] - cols[0, 0]):
                                u = uintp(k)
                                flat[s0 + uintp(2) * u] = ph[p0 + u]
                                flat[s0 + uintp(2) * u + uintp(1)] = ph[p1 + u]
                        continue
                    for ci in range(nc):
                        q = uintp((ri * nc + ci) * stride + base + j * width + cols[ci, 0])
                        s0 = uintp(row + cols[ci, 2])
                        if gather:
                            for k in range(cols[ci, 1] - cols[ci, 0]):
                                ph[q + uintp(k)] = flat[s0 + uintp(dw * k)]
                        else:
                            for k in range(cols[ci, 1] - cols[ci, 0]):
                                flat[s0 + uintp(dw * k)] = ph[q + uintp(k)]


def _zeroMargins(ph, o, j0, j1, k0, k1, length, width):
    """Zero the padding of the phase plane at ph[o:]: rows outside [j0, j1), columns outside [k0, k1)."""
    for t in range(j0 * width):
        ph[uintp(o + t)] = 0
    for t in range(j1 * width, length * width):
        ph[uintp(o + t)] = 0
    for j in range(j0, j1):
        for k in range(k0):
            ph[uintp(o + j * width + k)] = 0
        for k in range(k1, width):
            ph[uintp(o + j * width + k)] = 0


def _pairs(cols, dw):
    """Whether the column phases are two of dilation 2 over the same buffer columns, the second one input column
    after the first: then one loop moves a row to or from both."""
    return (dw == 2 and cols.shape[0] == 2 and cols[0, 0] == cols[1, 0] and cols[0, 1] == cols[1, 1]
            and cols[1, 2] == cols[0, 2] + 1)


if njit is not None:
    _pairs = njit(cache=True, nogil=True, inline="always")(_pairs)
    _zeroMargins = njit(cache=True, nogil=True, inline="always")(_zeroMargins)
    _phaseRows = njit(cache=True, nogil=True)(_phaseRows)


def _outputPhases(phases):
    """The phases of the output (dy): each the whole of its strided sub-plane, no padding, in _axisPhases' form."""
    return [tuple((a, olen, olen, 0, olen, a) for a, olen, *_ in axis) for axis in phases]


def _movePhases(x, phased, phases, dilation, gather=True):
    """_phaseRows over the channels, split between the engine's threads (the channels' rows are disjoint: any
    split gives the same bits)."""
    rows, cols = _tables(phases)
    conv_common.parallel(lambda c0, c1: _phaseRows(x, phased, rows, cols, dilation[0], dilation[1], c0, c1, gather),
                         x.shape[1], x.size + phased.size)


def _buffer(x, r, c):
    """The scratch buffer of one gathered phase of x (padded), from the workspace."""
    return workspace.get("poly-x", x.shape[:2] + (r[2], c[2]), x.dtype)


def workspaceBytes(direction, xShape, wShape, pad, dilation, groups, itemsize=4):
    """Scratch bytes of one call in ``direction``: the phase buffers of the plan the call runs (one phase at a
    time, or the stacked chunk of the backward directions), the kernel transform, and the Winograd call's own
    buffers under the chunk bound it is handed (the whole call's, not a phase's)."""
    n, ch, h, wd = xShape
    o, cg = wShape[:2]
    phases = _phases((h, wd), pad, dilation)
    if direction == "backwardData":
        phases = [(r, c) for r, c in phases if r[4] > r[3] and c[4] > c[3]]
    if n == 0 or not phases:
        return 0
    # The buffers the call fills: each phase's interior where its margins allow (_interior; the forward per
    # phase, the stacked backward directions all at once), else the padded phases.
    stacked = direction != "forward" and _equal(phases)
    if direction == "forward":
        cuts = [_interior([phase]) for phase in phases]
    else:
        cut, margins = _interior(phases) if stacked else (phases, (0, 0))
        cuts = [([phase], margins) for phase in cut]
    ([(r, c)], margins) = max(cuts, key=lambda cut: cut[0][0][0][2] * cut[0][0][1][2])
    (_, olh, length, *_), (_, olw, width, *_) = r, c
    xPhase, dyPhase = ch * length * width * itemsize, o * olh * olw * itemsize  # per batch item
    xBytes = n * ch * h * wd * itemsize
    dyBytes = n * o * (h + 2 * pad[0] - 2 * dilation[0]) * (wd + 2 * pad[1] - 2 * dilation[1]) * itemsize
    u, weights = 36 * o * cg * itemsize, 9 * o * cg * itemsize
    if direction == "forward":
        # A phase of x's pixels only is read where it lies (_pixels): no buffer.
        xPhase = 0 if all(_pixelsOnly(*cut[0][0]) for cut in cuts) else xPhase
        return (n * xPhase + u + conv_winograd.workspaceBytes((n, ch, length, width), o, margins, itemsize,
                                                              tileBytes=conv_winograd.chunkBytes(dyBytes),
                                                              groups=groups))
    items = n
    if stacked:
        limit = _stackLimit(xBytes if direction == "backwardData" else max(xBytes, dyBytes))
        items = len(phases) * _batchStep(n, len(phases), len(phases) * (xPhase + dyPhase), limit)
    if direction == "backwardData":
        # The stacked chunk's dy and dx phases, or one dx phase; the flipped kernel and its transform.
        buffers = items * (xPhase + dyPhase) if stacked else n * xPhase
        return buffers + weights + u + conv_winograd.workspaceBytes(
            (items, o, olh, olw), ch, (2 - margins[0], 2 - margins[1]), itemsize,
            tileBytes=conv_winograd.chunkBytes(xBytes), groups=groups)
    # The weight gradient: the chunk's (or one phase's) x and dy phases, the call's dU parts and its result.
    # Stacked, the call's parts split the chunks (byChunks), each over every tile position: at most twice the
    # buffers of parts that split the positions, which is what conv_winograd's estimate counts.
    grad = conv_winograd.workspaceBytes((items, ch, length, width), o, margins, itemsize, grad=True, groups=groups,
                                        tileBytes=conv_winograd.chunkBytes(max(xBytes, dyBytes)))
    return items * (xPhase + dyPhase) + 3 * u + weights + (2 * grad if stacked else grad)


def forward(x, w, bias, pad, dilation, groups):
    n, o = x.shape[0], w.shape[0]
    oh, ow = (x.shape[2] + 2 * pad[0] - 2 * dilation[0], x.shape[3] + 2 * pad[1] - 2 * dilation[1])
    y = np.empty((n, o, max(oh, 0), max(ow, 0)), dtype=x.dtype)
    phases = _phases(x.shape[2:], pad, dilation)
    if n == 0 or not phases:
        return y
    u = conv_winograd.kernelTransform(w, groups)
    tile = conv_winograd.chunkBytes(y.nbytes)
    x = np.ascontiguousarray(x)  # the phase kernel indexes flat
    for phase in phases:
        (out, margins), (r, c) = _interior([phase]), phase  # the interior only, its margins as padding
        source = _pixels(x, *out[0], dilation)
        if source is None:  # the phase's buffer holds padding too: gathered into a buffer of its own
            source = _buffer(x, *out[0])
            _movePhases(x, source[None], out, dilation)
        conv_winograd.forward(source, w, bias, margins, groups, tileBytes=tile, u=u, strided=True,
                              out=y[:, :, r[0]::dilation[0], c[0]::dilation[1]])
        del source
    return y


def _pixelsOnly(r, c):
    """Whether the buffer of phase (r, c) holds x's pixels only, no padding (or the margins stand for it)."""
    return (r[3], r[4], c[3], c[4]) == (0, r[2], 0, c[2])


def _pixels(x, r, c, dilation):
    """x's phase (r, c) as a strided view of x where its buffer would hold x's pixels only (_pixelsOnly); else
    None."""
    return _strided(x, r, c, dilation) if _pixelsOnly(r, c) else None


def _equal(phases):
    """Whether every phase has the same padded size (so the phases stack along the batch axis)."""
    return len({(r[2], c[2]) for r, c in phases}) == 1


def _batchStep(n, phases, perItem, limit):
    """Batch items per stacked chunk: at least n / phases (each Winograd call then has as many images as a
    per-phase call would, and the stacked buffers take about the per-phase path's memory: case 8 ran 5-7%
    faster than per-phase calls with the same peak), more while the chunk's stacked buffers (perItem bytes
    per batch item, all phases) stay within ``limit`` (case 8 gained nothing more from larger chunks)."""
    return max(1, min(n, max(-(-n // phases), limit // max(perItem, 1))))


def _stackLimit(resultBytes):
    """Bound of the stacked phase buffers: half the call's result (peak memory stays under torch's on case 8
    while one Winograd call serves all phases of several batch items)."""
    return max(1, resultBytes // 2)


def backwardData(dy, w, xShape, pad, dilation, groups, stackBytes=None):
    xShape = tuple(xShape)
    n, ch, h, wd = xShape
    full = _complete(h, pad[0], dilation[0]) and _complete(wd, pad[1], dilation[1])
    dx = np.empty(xShape, dtype=dy.dtype) if full else np.zeros(xShape, dtype=dy.dtype)
    phases = [(r, c) for r, c in _phases((h, wd), pad, dilation) if r[4] > r[3] and c[4] > c[3]]
    if n == 0 or not phases:
        return dx
    # conv_winograd's backward-data (the forward of the flipped kernel, padded by 2), the kernel flipped and
    # transformed once for all phases.
    tile = conv_winograd.chunkBytes(dx.nbytes)
    wf = flippedKernel(w, groups)
    u = conv_winograd.kernelTransform(wf, groups)
    if _equal(phases):
        _backwardDataStacked(dy, wf, u, tile, dx, phases, dilation, groups,
                             _stackLimit(dx.nbytes) if stackBytes is None else stackBytes)
        return dx
    # Phases of unequal sizes: one call each (its interior only, where its margins allow).
    for phase in phases:
        ([(r, c)], margins) = _interior([phase])
        dyp = dy[:, :, r[0]::dilation[0], c[0]::dilation[1]]
        dxp = conv_winograd.forward(dyp, wf, None, (2 - margins[0], 2 - margins[1]), groups, tileBytes=tile, u=u)
        _scatter(dx, dxp, r, c, dilation)
        del dxp
    return dx


def _scatter(dx, dxp, r, c, dilation):
    """The interior of a dx phase (where x is, not its padding) into dx's strided pixels."""
    _, _, _, j0, j1, _ = r
    _, _, _, k0, k1, _ = c
    _strided(dx, r, c, dilation)[...] = dxp[:, :, j0:j1, k0:k1]


def _backwardDataStacked(dy, wf, u, tile, dx, phases, dilation, groups, limit):
    """All phases of a chunk of batch items stacked along the batch axis (phase-major): one Winograd call
    per chunk instead of one thin call per phase (case 8: four phase calls cost more than one undilated
    convolution, one stacked call about the same). wf, u: the flipped kernel and its transform; tile: the
    Winograd calls' chunk bound."""
    n, ch = dx.shape[:2]
    o = dy.shape[1]
    dy = np.ascontiguousarray(dy)  # the phase kernels index flat
    # Only the dx phases' interiors (where x is) are computed, when their margins allow (_interior): case 8's
    # 28x28 of the 30x30, 7x7 tiles of 4x4 instead of 8x8.
    phases, margins = _interior(phases)
    (_, olh, length, *_), (_, olw, width, *_) = phases[0]
    p = len(phases)
    step = _batchStep(n, p, p * (o * olh * olw + ch * length * width) * dy.itemsize, limit)
    dyFlat = workspace.get("poly-dy", (p * step * o * olh * olw,), dy.dtype)
    dxFlat = workspace.get("poly-dx", (p * step * ch * length * width,), dy.dtype)
    for b0 in range(0, n, step):
        b1 = min(n, b0 + step)
        dys = leadingView(dyFlat, (p, b1 - b0, o, olh, olw))
        _movePhases(dy[b0:b1], dys, _outputPhases(phases), dilation)
        dxs = leadingView(dxFlat, (p * (b1 - b0), ch, length, width))
        conv_winograd.forward(dys.reshape((-1,) + dys.shape[2:]), wf, None, (2 - margins[0], 2 - margins[1]), groups,
                              tileBytes=tile, u=u, out=dxs)
        _movePhases(dx[b0:b1], dxs.reshape((p, b1 - b0) + dxs.shape[1:]), phases, dilation, gather=False)


def _interior(phases):
    """(phases, margins): where every row phase's buffer has the same margin e of padding above and below its
    interior (j0 = e = length - j1), and likewise the columns, the phases cut to their interiors (length j1 - j0,
    j0 = 0) and the margins; else the phases as they are and margins of 0. A buffer is its interior padded by
    its margins, so a convolution's padding can stand for them."""
    rows = {r[2:5] for r, _ in phases}
    cols = {c[2:5] for _, c in phases}
    if len(rows) != 1 or len(cols) != 1:
        return phases, (0, 0)
    (length, j0, j1), (width, k0, k1) = rows.pop(), cols.pop()
    if j0 != length - j1 or k0 != width - k1:
        return phases, (0, 0)

    def cut(a):
        return a[:2] + (a[4] - a[3], 0, a[4] - a[3]) + a[5:]

    return [(cut(r), cut(c)) for r, c in phases], (j0, k0)


def backwardParams(x, dy, wShape, pad, dilation, groups, stackBytes=None):
    phases = _phases(x.shape[2:], pad, dilation)
    if x.shape[0] > 0 and phases and _equal(phases):
        return _backwardParamsStacked(x, dy, wShape, phases, dilation, groups,
                                      _stackLimit(max(x.nbytes, dy.nbytes)) if stackBytes is None else stackBytes)
    dw = None
    tile = conv_winograd.chunkBytes(max(x.nbytes, dy.nbytes))
    for r, c in phases:  # fixed order: deterministic sum
        buf = _gather(x, _buffer(x, r, c), r, c, dilation)
        dyp = np.ascontiguousarray(dy[:, :, r[0]::dilation[0], c[0]::dilation[1]])
        part = conv_winograd.backwardParams(buf, dyp, wShape, (0, 0), groups, tileBytes=tile)
        del buf, dyp
        if dw is None:
            dw = part
        else:
            dw += part
    if dw is None:
        dw = np.zeros(wShape, dtype=x.dtype)
    return dw


def _backwardParamsStacked(x, dy, wShape, phases, dilation, groups, limit):
    """All phases of a chunk of batch items stacked along the batch axis: the phases' gradients sum inside
    one Winograd weight-gradient call (its fixed chunk order), the chunks' results in batch order."""
    n, ch = x.shape[:2]
    o = dy.shape[1]
    x, dy = np.ascontiguousarray(x), np.ascontiguousarray(dy)  # the phase kernels index flat
    phases, margins = _interior(phases)  # x's phases without their margins, which the padding stands for
    (_, olh, length, *_), (_, olw, width, *_) = phases[0]
    p = len(phases)
    step = _batchStep(n, p, p * (o * olh * olw + ch * length * width) * x.itemsize, limit)
    tile = conv_winograd.chunkBytes(max(x.nbytes, dy.nbytes))
    dw = None
    xFlat = workspace.get("poly-x", (p * step * ch * length * width,), x.dtype)
    dyFlat = workspace.get("poly-dy", (p * step * o * olh * olw,), x.dtype)
    for b0 in range(0, n, step):
        b1 = min(n, b0 + step)
        xs = leadingView(xFlat, (p, b1 - b0, ch, length, width))
        dys = leadingView(dyFlat, (p, b1 - b0, o, olh, olw))
        _movePhases(x[b0:b1], xs, phases, dilation)
        _movePhases(dy[b0:b1], dys, _outputPhases(phases), dilation)
        part = conv_winograd.backwardParams(xs.reshape((-1,) + xs.shape[2:]), dys.reshape((-1,) + dys.shape[2:]),
                                            wShape, margins, groups, tileBytes=tile, byChunks=True)
        if dw is None:
            dw = part
        else:
            dw += part
    return dw
