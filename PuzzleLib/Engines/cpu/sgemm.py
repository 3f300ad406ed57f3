"""A register-tiled float32 GEMM, C = A @ B (+ C or + a bias per row), for the thin products of convolution.

OpenBLAS's sgemm (SkylakeX kernel, one thread) ran these products at 98-103 GFLOP/s on this machine's cores (AMD
EPYC, AVX-512), the tile here at 106-115, near a core's peak (two runs of ``python benchmarks/engine_micro.py
--sgemm`` on 2026-11-26: a 7x7 stem's im2col product as BLAS gets it (64 x 148) @ (148 x 3472), case 5's per
item (256 x 1152) @ (1152 x 196), case 4's F(2x2) block (504 x 512) @ (512 x 128)). Numba cannot vectorise a
tile whose accumulators stay in registers from Python source (its arrays live in memory, and every FMA then
loads and stores its accumulator), so the tile is written as LLVM vector IR through numba's ``intrinsic``: MR x
NR accumulators held across the whole inner dimension, one broadcast of A and NR/16 loads of B per step. That
keeps it inside numba (compiled on first use, cached on disk), with no C extension to build.

Operands of ``gemm``:
- A packed once per product (``packA``: panels of MR rows, k-major, the rows past M zero), or read in place
  with any strides (a transposed view too).
- B read in place: any row stride, unit column stride (an im2col tile, a Winograd transform's rows); the
  ``tileRows`` tiles take B's rows through a table of offsets instead (conv_implicit: the input itself).
- C written in place: any row stride, unit column stride (a view of the layer's output).

Each output element is one chain of fused multiply-adds over k in order, started from zero, the bias, or
C's old value: its bits do not depend on how the columns are shared between threads, or on tiling.
Edges (rows past M, columns past the last full panel) go through small scratch tiles, and 16- and 8-wide
tiles take a row's last columns.

``dotTile`` is the other shape of product, C = A @ B^T with both operands read along their rows (a weight
gradient's reduction over pixels): 16-lane partial sums per output, added up by the caller.

Float32 on AVX-512 hosts only (``applies``): float64 (the gradient checks) stays on BLAS.

For whoever edits this file: the compiled kernels of conv_implicit, conv_winograd_s2 and conv_pointwise embed
these intrinsics (and ``columns``), and numba's on-disk cache checks only the source file of the cached function.
After changing an emitter, ``columns`` or a tile constant here, touch those three files (or clear the
``__pycache__`` *.nbi / *.nbc files), or their cached kernels keep the old code.
"""

import numpy as np

try:
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - numba is a dependency; without it every product stays on BLAS
    njit = None

# Tile: MR rows of A by NR columns of B, i.e. 16 accumulators of 16 floats (AVX-512's 32 registers hold them
# with the B row and the broadcast). Measured against 12 x 32, 6 x 64 and 4 x 64 on the three shapes above
# (packed A, B in place), in the runs that chose the tile (an earlier session; the module docstring gives today's):
# 8 x 32 ran 101-113 GFLOP/s, the others 83-116 with at least one shape worse.
MR = 8
_LANES = 16
_VECTORS = 2
NR = _LANES * _VECTORS
# From this many elements of B (half a core's L2) on, the full tile prefetches the next panel's rows of B as it
# goes (_tileAhead): a B larger than the caches is otherwise fetched from memory a panel at a time, each of its
# K rows a separate stream, too many for the hardware prefetcher. Same process, one thread, time with against
# without (median of 31 paired ratios): 1x1 (64 x 256) @ (256 x 3136) 0.83, (256 x 64) @ (64 x 3136) 0.96, case
# 5's im2col (256 x 1152) @ (1152 x 196) 0.90, a 7x7 stem's (64 x 148) @ (148 x 3472) 0.93; on B that fit the
# caches no gain, some loss: case 4's F(2x2) (64 x 512) @ (512 x 128) 0.99-1.02, (64 x 256) @ (256 x 200)
# 0.98-1.04, case 5's stride-2 Winograd (64 x 512) @ (512 x 200) 1.00. Bits are the same either way.
AHEAD_ELEMENTS = 128 << 10


def _hostHasAvx512():
    try:
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features()
    except Exception:  # pragma: no cover - no feature query: assume the worst
        return False
    return bool(features.get("avx512f") and features.get("fma"))


# The tiles are sized for AVX-512's 32 vector registers (16 accumulators of 16 floats, plus the loads). Elsewhere
# LLVM still compiles them correctly (narrower vectors, or library calls without FMA), but they would spill or
# crawl, and they were measured only here: the algorithms then keep their BLAS GEMMs (``applies``); the kernels
# stay callable (the tests run them on any host).
available = njit is not None and _hostHasAvx512()


def applies(dtype):
    """Whether products in ``dtype`` go through this kernel (float32 on a host with AVX-512)."""
    return available and dtype == np.float32


def _tileIntrinsic(lanes, vectors, indirectB=False, prefetch=False):
    """An intrinsic computing an MR x (lanes * vectors) tile (see _emitTile)."""
    @intrinsic
    def tile(typingctx, depth, a, rsa, csa, b, ldb, c, ldc, bias, accumulate):
        """C[MR, width] at c (row stride ldc) = (C if accumulate else bias[i]) + sum over k < depth of
        a[i * rsa + k * csa] * b[k * ldb + j]. Pointers are addresses, strides in elements, all integers.
        ``indirectB``: B's row k is at b + ldb[k] instead (ldb: the address of an int64 offset table)."""
        sig = types.void(*([types.intp] * 10))

        def codegen(context, builder, signature, args):
            _emitTile(builder, lanes, vectors, indirectB, prefetch, *args)
            return context.get_dummy_value()

        return sig, codegen

    return tile


if njit is not None:
    # The full tile, and two narrower ones for a row's last columns (so that 196 columns waste 4, not 28).
    _tile = _tileIntrinsic(_LANES, _VECTORS)
    # The full tile fetching the next panel of columns ahead, for a B larger than the caches (see columns).
    _tileAhead = _tileIntrinsic(_LANES, _VECTORS, prefetch=True)
    _tile16 = _tileIntrinsic(16, 1)
    _tile8 = _tileIntrinsic(8, 1)
    # B's rows through an offset table (a convolution's input rows read in place: conv_implicit).
    tileRows = _tileIntrinsic(_LANES, _VECTORS, indirectB=True)
    tileRows16 = _tileIntrinsic(16, 1, indirectB=True)
    tileRows8 = _tileIntrinsic(8, 1, indirectB=True)


def _phis(builder, typ, count):
    """``count`` phi nodes of ``typ`` (created together: LLVM wants a block's phis at its top)."""
    return [builder.phi(typ) for _ in range(count)]


def _incoming(phis, *sources):
    """Each phi's value flowing in from each (values, block) source, position by position."""
    for values, block in sources:
        for phi, value in zip(phis, values):
            phi.add_incoming(value, block)
    return phis


class _Shorthands:
    """What both tiles' IR needs: integer constants, float vectors loaded at element offsets, splats, the FMA."""

    def __init__(self, builder, lanes, intp):
        self.builder, self.intp = builder, intp
        self.vec = ir.VectorType(ir.FloatType(), lanes)
        self.fma = builder.module.declare_intrinsic(f"llvm.fma.v{lanes}f32", (), ir.FunctionType(self.vec,
                                                                                                  [self.vec] * 3))

    def const(self, value):
        return ir.Constant(self.intp, value)

    def vectorAt(self, base, offset):
        return self.builder.bitcast(self.builder.gep(base, [offset]), self.vec.as_pointer())

    def splat(self, value, vectorType=None):
        vectorType = vectorType or self.vec
        i32 = ir.IntType(32)
        undef = ir.Constant(vectorType, ir.Undefined)
        return self.builder.shuffle_vector(self.builder.insert_element(undef, value, ir.Constant(i32, 0)), undef,
                                           ir.Constant(ir.VectorType(i32, vectorType.count), [0] * vectorType.count))


def _emitTile(builder, lanes, vectors, indirectB, prefetch, depth, a, rsa, csa, b, ldb, c, ldc, bias, accumulate):
    """The tile's IR: start values (C or the bias), a loop over k whose phi nodes carry the MR x vectors
    accumulators in registers (one broadcast of A and ``vectors`` loads of B per row of A), then the stores.
    Accumulator t is row t // vectors, vector t % vectors. ``prefetch``: each step also asks for the same row's
    next ``lanes * vectors`` columns (the next panel's; a hint, never a fault, whatever the address)."""
    f32 = ir.FloatType()
    intp = depth.type
    count = MR * vectors
    e = _Shorthands(builder, lanes, intp)
    vec, const, splat, vectorAt, fma = e.vec, e.const, e.splat, e.vectorAt, e.fma
    A, B, C, bias = (builder.inttoptr(p, f32.as_pointer()) for p in (a, b, c, bias))
    slots = [vectorAt(C, builder.add(builder.mul(ldc, const(t // vectors)), const(lanes * (t % vectors))))
             for t in range(count)]
    aRows = [builder.mul(rsa, const(i)) for i in range(MR)]
    # The start values: C's old values or the bias, behind a branch: a select would load C (often memory not
    # yet written, read from DRAM) even when it is only written.
    biasRows = [splat(builder.load(builder.gep(bias, [const(i)]))) for i in range(MR)]
    fromBias = builder.block
    fromC = builder.append_basic_block("tile.c")
    begin = builder.append_basic_block("tile.begin")
    builder.cbranch(builder.icmp_signed("!=", accumulate, const(0)), fromC, begin)
    builder.position_at_end(fromC)
    loaded = [builder.load(slot, align=4) for slot in slots]
    builder.branch(begin)
    builder.position_at_end(begin)
    start = _incoming(_phis(builder, vec, count), ([biasRows[t // vectors] for t in range(count)], fromBias),
                      (loaded, fromC))

    entry = builder.block
    loop = builder.append_basic_block("tile.k")
    done = builder.append_basic_block("tile.done")
    builder.cbranch(builder.icmp_signed(">", depth, const(0)), loop, done)

    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    if prefetch:  # llvm.prefetch(address, read, highest locality, data cache)
        prefetch = builder.module.declare_intrinsic("llvm.prefetch", (i8p,), ir.FunctionType(
            ir.VoidType(), [i8p, i32, i32, i32]))

    builder.position_at_end(loop)
    k = builder.phi(intp)
    acc = _phis(builder, vec, count)
    if indirectB:
        bRow = builder.gep(B, [builder.load(builder.gep(builder.inttoptr(ldb, intp.as_pointer()), [k]))])
    else:
        bRow = builder.gep(B, [builder.mul(k, ldb)])
    bVec = [builder.load(vectorAt(bRow, const(lanes * j)), align=4) for j in range(vectors)]
    if prefetch:
        for j in range(vectors):
            builder.call(prefetch, [builder.bitcast(builder.gep(bRow, [const(lanes * (vectors + j))]), i8p),
                                    ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
    aCol = builder.gep(A, [builder.mul(k, csa)])
    aVec = [splat(builder.load(builder.gep(aCol, [aRows[i]]))) for i in range(MR)]
    nxt = [builder.call(fma, [aVec[t // vectors], bVec[t % vectors], acc[t]]) for t in range(count)]
    k1 = builder.add(k, const(1))
    body = builder.block
    _incoming([k], ([const(0)], entry), ([k1], body))
    _incoming(acc, (start, entry), (nxt, body))
    builder.cbranch(builder.icmp_signed("<", k1, depth), loop, done)

    builder.position_at_end(done)
    final = _incoming(_phis(builder, vec, count), (start, entry), (nxt, body))
    for value, slot in zip(final, slots):
        builder.store(value, slot, align=4)


# The dot-product tile: DOT_ROWS rows of A against DOT_COLS rows of B, 24 partial-sum vectors (10 loads per 24
# FMAs). Against 4 x 4 (8 loads per 16), same process, ms: case 3's weight gradient 11.1 vs 11.6, N8 3->64
# 224x224 k3 9.5 vs 9.8, 16->128 112x112 s2 7.4 vs 8.0.
DOT_ROWS = 6
DOT_COLS = 4

def _dotIntrinsic(onesLast):
    """The dot tile (see dotTile); with ``onesLast`` its last row of A is ones, not read: that row's sums are
    the sums of B's rows (a bias gradient riding along with a weight gradient)."""
    @intrinsic
    def tile(typingctx, rows, vectors, tail, a, aRows, aTaps, b, ldb, bPitch, sums):
        """Lane partial sums of dot products along rows: for i < DOT_ROWS, j < DOT_COLS, r < rows,
        sums[(i * DOT_COLS + j) * 16 + l] += products of lanes l of A_i(r) = a + aRows[r] + aTaps[i] and
        B_j(r) = b + r * bPitch + j * ldb over ``vectors`` full vectors of 16, then, if ``tail`` > 0, the last
        ``tail`` elements (a vector ending at 16 * vectors + tail, its first 16 - tail lanes masked off).
        aRows, aTaps: addresses of int64 offset tables; offsets and strides in elements."""
        sig = types.void(*([types.intp] * 10))

        def codegen(context, builder, signature, args):
            _emitDot(builder, onesLast, *args)
            return context.get_dummy_value()

        return sig, codegen

    return tile


if njit is not None:
    dotTile = _dotIntrinsic(False)
    dotTileOnes = _dotIntrinsic(True)


def _emitDot(builder, onesLast, rows, vectors, tail, a, aRows, aTaps, b, ldb, bPitch, sums):
    """The dot tile's IR: the partial sums loaded, an outer loop over rows and an inner one over vectors whose
    phi nodes carry the 16 accumulators, an optional masked tail per row, the sums stored back."""
    f32 = ir.FloatType()
    intp = rows.type
    i32 = ir.IntType(32)
    e = _Shorthands(builder, _LANES, intp)
    vec, const, vectorAt, fma = e.vec, e.const, e.vectorAt, e.fma
    A, B, S = (builder.inttoptr(p, f32.as_pointer()) for p in (a, b, sums))
    rowTable, tapTable = (builder.inttoptr(p, intp.as_pointer()) for p in (aRows, aTaps))
    count = DOT_ROWS * DOT_COLS
    slots = [vectorAt(S, const(_LANES * t)) for t in range(count)]
    taps = [builder.load(builder.gep(tapTable, [const(i)])) for i in range(DOT_ROWS)]
    bCols = [builder.mul(ldb, const(j)) for j in range(DOT_COLS)]
    zero = ir.Constant(vec, [0.0] * _LANES)
    lanes = ir.Constant(ir.VectorType(i32, _LANES), list(range(_LANES)))
    first = builder.trunc(builder.sub(const(_LANES), tail), i32)
    mask = builder.icmp_signed(">=", lanes, e.splat(first, ir.VectorType(i32, _LANES)))  # the tail's own lanes
    start = [builder.load(slot, align=4) for slot in slots]

    def step(aBases, bBases, offset, acc, masked):
        av = [builder.load(vectorAt(base, offset), align=4) for base in aBases]
        if onesLast:
            av[-1] = ir.Constant(vec, [1.0] * _LANES)
        bv = [builder.load(vectorAt(base, offset), align=4) for base in bBases]
        if masked:
            av = [builder.select(mask, v, zero) for v in av]
            bv = [builder.select(mask, v, zero) for v in bv]
        return [builder.call(fma, [av[t // DOT_COLS], bv[t % DOT_COLS], acc[t]]) for t in range(count)]

    entry = builder.block
    outer = builder.append_basic_block("dot.row")
    inner = builder.append_basic_block("dot.vector")
    merge = builder.append_basic_block("dot.merge")
    masked = builder.append_basic_block("dot.tail")
    latch = builder.append_basic_block("dot.next")
    done = builder.append_basic_block("dot.done")
    builder.cbranch(builder.icmp_signed(">", rows, const(0)), outer, done)

    builder.position_at_end(outer)
    r = builder.phi(intp)
    accRow = _phis(builder, vec, count)
    aRow = builder.gep(A, [builder.load(builder.gep(rowTable, [r]))])
    aBases = [builder.gep(aRow, [t]) for t in taps]
    bRow = builder.gep(B, [builder.mul(r, bPitch)])
    bBases = [builder.gep(bRow, [c]) for c in bCols]
    builder.cbranch(builder.icmp_signed(">", vectors, const(0)), inner, merge)

    builder.position_at_end(inner)
    v = builder.phi(intp)
    accVec = _phis(builder, vec, count)
    nextVec = step(aBases, bBases, builder.mul(v, const(_LANES)), accVec, False)
    v1 = builder.add(v, const(1))
    builder.cbranch(builder.icmp_signed("<", v1, vectors), inner, merge)
    _incoming([v], ([const(0)], outer), ([v1], inner))
    _incoming(accVec, (accRow, outer), (nextVec, inner))

    builder.position_at_end(merge)
    accMerged = _incoming(_phis(builder, vec, count), (accRow, outer), (nextVec, inner))
    builder.cbranch(builder.icmp_signed(">", tail, const(0)), masked, latch)

    builder.position_at_end(masked)
    offset = builder.sub(builder.add(builder.mul(vectors, const(_LANES)), tail), const(_LANES))
    accTail = step(aBases, bBases, offset, accMerged, True)
    builder.branch(latch)

    builder.position_at_end(latch)
    accNext = _incoming(_phis(builder, vec, count), (accMerged, merge), (accTail, masked))
    r1 = builder.add(r, const(1))
    builder.cbranch(builder.icmp_signed("<", r1, rows), outer, done)
    _incoming([r], ([const(0)], entry), ([r1], latch))
    _incoming(accRow, (start, entry), (accNext, latch))

    builder.position_at_end(done)
    final = _incoming(_phis(builder, vec, count), (start, entry), (accNext, latch))
    for value, slot in zip(final, slots):
        builder.store(value, slot, align=4)


def _packA(a, out):
    """a (M, K) into out (ceil(M / MR), K, MR): panel p holds rows [p * MR, p * MR + MR) k-major, zero past M."""
    m, depth = a.shape
    for p in range(out.shape[0]):
        for k in range(depth):
            for i in range(MR):
                row = p * MR + i
                out[p, k, i] = a[row, k] if row < m else 0


def columns(a, packed, b, c, bias, accumulate, j0, j1, edgeA, edgeB, edgeC):
    """Columns [j0, j1) of c = (c if accumulate else bias) + A @ b, by column panels, each over all row panels
    (``gemm``'s compiled core, called directly from other compiled kernels: conv_winograd_s2, conv_pointwise).

    A is ``a`` (M, K) with any strides, or, if ``packed``, ``a`` is packA's panels as (panels * K, MR).
    b (K, N) and c (M, N) have unit column strides; bias has at least ceil(M / MR) * MR entries. edgeA (K, MR),
    edgeB (K, NR) and edgeC (MR, NR) are scratch for the last rows (unpacked A), a last partial panel of
    columns, and tiles that run past c's edges.
    """
    m = c.shape[0]
    depth = b.shape[0]
    ldb, ldc = b.strides[0] // 4, c.strides[0] // 4
    if packed:
        rsa, csa, pitch = 1, MR, depth * MR
    else:
        rsa, csa, pitch = a.strides[0] // 4, a.strides[1] // 4, MR * (a.strides[0] // 4)
    full = m // MR
    rest = m - full * MR
    pa, pb, pc, pbias = a.ctypes.data, b.ctypes.data, c.ctypes.data, bias.ctypes.data
    pEdgeB = edgeB.ctypes.data
    ahead = depth * ldb >= AHEAD_ELEMENTS
    pRest = pa + 4 * full * pitch  # the last rows' panel: packA's (zero rows past M), or a copy in edgeA
    if rest and not packed:
        for k in range(depth):
            for i in range(MR):
                edgeA[k, i] = a[full * MR + i, k] if i < rest else 0
        pRest = edgeA.ctypes.data
    j = j0
    while j < j1:
        width, count = tileWidth(j1 - j)
        source, sourcePitch = pb + 4 * j, ldb
        if count < width:  # the last few columns, copied into scratch (its other columns are never read back)
            for k in range(depth):
                for q in range(count):
                    edgeB[k, q] = b[k, j + q]
            source, sourcePitch = pEdgeB, NR
        for p in range(full):
            panel = pa + 4 * p * pitch
            if count == width:
                _anyTile(width, depth, panel, rsa, csa, source, sourcePitch, pc + 4 * (p * MR * ldc + j), ldc,
                         pbias + 4 * p * MR, accumulate, ahead)
            else:
                _edge(c, edgeC, p * MR, MR, j, width, count, depth, panel, rsa, csa, source, sourcePitch, pbias,
                      accumulate)
        if rest:
            _edge(c, edgeC, full * MR, rest, j, width, count, depth, pRest, 1, MR, source, sourcePitch, pbias,
                  accumulate)
        j += count


def wholeTiles(columns):
    """``columns`` rounded up to whole tiles of the narrowest width (8): a B or C padded so has its last columns
    run in place, not through the edge copies."""
    return -(-columns // 8) * 8


def tileWidth(left):
    """(width, count): the tile (NR, 16 or 8 columns) that runs the next of ``left`` columns of a row, and how many
    of them it covers (fewer than its width at a row's end: those go through scratch)."""
    width = NR if left >= NR else 16 if left >= 16 else 8
    return width, min(width, left)


def _anyTile(width, depth, a, rsa, csa, b, ldb, c, ldc, bias, accumulate, ahead=False):
    """The tile of ``width`` columns (NR, 16 or 8); ``ahead``: the full tile that prefetches the next panel."""
    if width == NR and ahead:
        _tileAhead(depth, a, rsa, csa, b, ldb, c, ldc, bias, accumulate)
    elif width == NR:
        _tile(depth, a, rsa, csa, b, ldb, c, ldc, bias, accumulate)
    elif width == 16:
        _tile16(depth, a, rsa, csa, b, ldb, c, ldc, bias, accumulate)
    else:
        _tile8(depth, a, rsa, csa, b, ldb, c, ldc, bias, accumulate)


def _edge(c, edgeC, r0, rows, j, width, count, depth, panel, rsa, csa, source, pitch, pbias, accumulate):
    """One tile whose rows or columns run past c's edge (``rows`` and ``count`` of them are c's), computed in
    the scratch tile edgeC."""
    if accumulate:
        for i in range(rows):
            for q in range(count):
                edgeC[i, q] = c[r0 + i, j + q]
    _anyTile(width, depth, panel, rsa, csa, source, pitch, edgeC.ctypes.data, NR, pbias + 4 * r0, accumulate)
    for i in range(rows):
        for q in range(count):
            c[r0 + i, j + q] = edgeC[i, q]


if njit is not None:
    _packA = njit(cache=True, nogil=True)(_packA)
    tileWidth = njit(cache=True, nogil=True, inline="always")(tileWidth)
    _anyTile = njit(cache=True, nogil=True, inline="always")(_anyTile)
    _edge = njit(cache=True, nogil=True)(_edge)
    columns = njit(cache=True, nogil=True)(columns)


def packedShape(m, depth):
    """packA's result shape for an (m, depth) matrix."""
    return (-(-m // MR), depth, MR)


def packA(a, out=None):
    """a (M, K) float32 as row panels for ``gemm`` (packed=True): (ceil(M / MR), K, MR), ``out`` if given.

    Worth it for a matrix with a long K used against many columns: its panels are then read contiguously
    (case 5's (256 x 1152) weights: 108 GFLOP/s packed, 94 read in place, one thread).
    """
    if out is None:
        out = np.empty(packedShape(*a.shape), dtype=np.float32)
    _packA(a, out)
    return out


_zeroRows = np.zeros(0, dtype=np.float32)


def biasRows(bias, m):
    """The bias ``gemm`` starts its sums from: bias (or zeros) padded to whole panels of rows, float32."""
    global _zeroRows
    rows = -(-m // MR) * MR
    if bias is None:
        if _zeroRows.size < rows:  # replaced whole, never written: safe to read from any thread
            _zeroRows = np.zeros(rows, dtype=np.float32)
        return _zeroRows
    padded = np.zeros(rows, dtype=np.float32)
    padded[:m] = np.ravel(bias)
    return padded


class Scratch:
    """Edge tiles of ``gemm``, grown on demand: one per thread, never shared between threads."""

    @staticmethod
    def elements(depth):
        """float32 elements of one Scratch for products of inner dimension ``depth``: the A and B edge strips and
        a C tile (what the scratch estimates count)."""
        return depth * (MR + NR) + MR * NR

    def __init__(self):
        self.edgeA = np.empty((0, MR), dtype=np.float32)
        self.edgeB = np.empty((0, NR), dtype=np.float32)
        self.edgeC = np.empty((MR, NR), dtype=np.float32)

    def forDepth(self, depth):
        if self.edgeB.shape[0] < depth:
            self.edgeA = np.empty((depth, MR), dtype=np.float32)
            self.edgeB = np.empty((depth, NR), dtype=np.float32)
        return self.edgeA[:depth], self.edgeB[:depth], self.edgeC


def gemm(a, b, c, bias=None, accumulate=False, cols=None, scratch=None, packed=False):
    """c[:, cols] = (c if accumulate else bias) + a @ b on the calling thread.

    a (M, K): a float32 2-D view with any strides, or with ``packed`` packA's result for it. b (K, N) and
    c (M, N): float32 2-D views with unit column strides. bias: ``biasRows``' result (zeros if None); cols a
    (j0, j1) range (all columns by default). The bits of each column do not depend on ``cols``.
    """
    m = c.shape[0]
    j0, j1 = cols if cols is not None else (0, c.shape[1])
    edgeA, edgeB, edgeC = (scratch or Scratch()).forDepth(b.shape[0])
    rows = bias if bias is not None else biasRows(None, m)
    source = a.reshape(-1, MR) if packed else a
    columns(source, packed, b, c, rows, int(bool(accumulate)), j0, j1, edgeA, edgeB, edgeC)


def batched(a, b, c, bias=None, accumulate=False, cols=None, scratch=None, packed=False):
    """``gemm`` over the leading axes: c[i] = a[i] @ b[i] (+ bias or c[i]) for every leading index i.

    a (..., M, K) (or packA's panels (..., panels, K, MR) with ``packed``), b (..., K, N), c (..., M, N);
    a's leading axes are matched with c's last ones, as numpy broadcasts (a (G, ...) against c (N, G, ...)).
    The products of c's last leading axis run in one compiled loop (a Python call each cost ~2 us: case 4's
    F(2x2) forward makes 128 of them).
    """
    tail = 3 if packed else 2
    lead = a.ndim - tail
    if c.ndim == 2 or lead > 1:
        for index in np.ndindex(*c.shape[:-2]):
            gemm(a[index[len(index) - lead:]] if lead else a, b[index], c[index], bias, accumulate, cols, scratch,
                 packed)
        return
    j0, j1 = cols if cols is not None else (0, c.shape[-1])
    edgeA, edgeB, edgeC = (scratch or Scratch()).forDepth(b.shape[-2])
    rows = bias if bias is not None else biasRows(None, c.shape[-2])
    # a as (1 or L, rows, columns) for columns, packA's panels flattened to (panels * K, MR) as in gemm.
    source = a[None] if lead == 0 else a
    if packed:
        source = source.reshape(source.shape[0], -1, MR)
    for index in np.ndindex(*c.shape[:-3]):
        _batched(source, packed, b[index], c[index], rows, int(bool(accumulate)), j0, j1, edgeA, edgeB, edgeC)


def _batched(a, packed, b, c, bias, accumulate, j0, j1, edgeA, edgeB, edgeC):
    """columns for every index of the leading axis of b and c, and of a unless it has one matrix (shared)."""
    for i in range(c.shape[0]):
        columns(a[0 if a.shape[0] == 1 else i], packed, b[i], c[i], bias, accumulate, j0, j1, edgeA, edgeB, edgeC)


if njit is not None:
    _batched = njit(cache=True, nogil=True)(_batched)


def packedSize(shape):
    """float32 elements ``packGroups`` needs for a grouped matrix of ``shape`` (groups, M, K)."""
    groups, m, depth = shape
    return groups * int(np.prod(packedShape(m, depth)))


def packGroups(w, buffer=None):
    """Each group's matrix of w (groups, M, K) packed (packA): (groups, panels, K, MR), in ``buffer`` if given
    (at least ``packedSize(w.shape)`` float32 elements)."""
    groups, m, depth = w.shape
    shape = (groups,) + packedShape(m, depth)
    flat = np.empty(packedSize(w.shape), dtype=np.float32) if buffer is None else buffer[:packedSize(w.shape)]
    panels = flat.reshape(shape)
    for g in range(groups):
        _packA(w[g], panels[g])
    return panels
