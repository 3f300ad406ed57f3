"""Two operations the compiled kernels need and numba cannot express, written as LLVM IR through numba's
``intrinsic``:

- ``prefetch(a, i)``: start loading the cache line of ``a[i]`` while the kernel goes on. The hardware
  prefetchers follow a few long runs of addresses, not a kernel that reads short rows of many planes in turn (a
  stride-2 Winograd input transform reads 28 floats of a row, then jumps to the next plane): each plane's first
  lines then arrive at memory latency. Emitted as ``llvm.prefetch`` (read, highest locality, data cache); a
  prefetch never faults, but the callers keep their indices inside the array all the same.
- ``interleavePairs(dst, d, a, b, e, count, bias, accumulate)``: one output row of up to a vector's length
  (16 float32, 8 float64) made of two sums taken in turn, ``dst[d + 2k] = a[e + k]``, ``dst[d + 2k + 1] =
  b[e + k]``, plus ``bias`` or added to what ``dst`` holds. A loop over such a row (7 pairs on case 5's 14-wide
  output) is too short for LLVM's vectoriser, which leaves it scalar; here it is two half-vector loads, one
  shuffle and one store, all masked to ``count``, so no lane outside the row is read or written.

For whoever edits this file: numba's on-disk cache checks only the source file of the cached function, so after
changing this one touch the modules whose kernels call it (conv_winograd_s2).
"""

try:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - numba is a dependency; the kernels that use this need it too
    intrinsic = None

prefetch = interleavePairs = None

# Bytes of a cache line, and of one vector (AVX-512's).
LINE_BYTES = 64
VECTOR_BYTES = 64

_I32, _I64 = (ir.IntType(32), ir.IntType(64)) if intrinsic is not None else (None, None)


def _address(context, builder, arrayType, array, index):
    """The address of array[index] (1-D), unchecked."""
    view = context.make_array(arrayType)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, arrayType, view, [index], wraparound=False, boundscheck=False)


def _splat(builder, value, lanes):
    vector = builder.insert_element(ir.Constant(ir.VectorType(value.type, lanes), ir.Undefined), value,
                                    ir.Constant(_I32, 0))
    return builder.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))


def _firstLanes(builder, count, lanes):
    """The mask of lanes [0, count)."""
    index = ir.Constant(ir.VectorType(_I64, lanes), list(range(lanes)))
    return builder.icmp_unsigned("<", index, _splat(builder, count, lanes))


def _maskedIntrinsics(builder, element, bits, lanes):
    """llvm.masked.load of lanes and of lanes // 2 floats of ``bits`` bits, and llvm.masked.store of lanes."""
    name = f"f{bits}"
    pointer = ir.PointerType(element)

    def declare(kind, width):
        vector, mask = ir.VectorType(element, width), ir.VectorType(ir.IntType(1), width)
        signature = (ir.FunctionType(vector, [pointer, _I32, mask, vector]) if kind == "load" else
                     ir.FunctionType(ir.VoidType(), [vector, pointer, _I32, mask]))
        return builder.module.declare_intrinsic(f"llvm.masked.{kind}.v{width}{name}.p0", (), signature)

    return declare("load", lanes), declare("load", lanes // 2), declare("store", lanes)


if intrinsic is not None:
    @intrinsic
    def prefetch(typingctx, array, index):
        """Start loading the cache line of array[index] (1-D, C-contiguous); returns nothing."""
        sig = types.void(array, index)

        def codegen(context, builder, signature, args):
            i8p = ir.IntType(8).as_pointer()
            hint = builder.module.declare_intrinsic("llvm.prefetch", (i8p,), ir.FunctionType(
                ir.VoidType(), [i8p, _I32, _I32, _I32]))
            address = _address(context, builder, signature.args[0], args[0], args[1])
            builder.call(hint, [builder.bitcast(address, i8p), ir.Constant(_I32, 0), ir.Constant(_I32, 3),
                                ir.Constant(_I32, 1)])
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def interleavePairs(typingctx, dst, d, a, b, e, count, bias, accumulate):
        """dst[d + j] for j < count (at most a vector's lanes) = (a if j is even else b)[e + j // 2], plus bias, or
        plus dst[d + j] where accumulate. All arrays 1-D, C-contiguous, of one float dtype."""
        sig = types.void(dst, d, a, b, e, count, bias, accumulate)
        dtype = dst.dtype

        def codegen(context, builder, signature, args):
            dstArg, dArg, aArg, bArg, eArg, countArg, biasArg, accumulateArg = args
            element = context.get_value_type(dtype)
            lanes = VECTOR_BYTES * 8 // dtype.bitwidth
            half = lanes // 2
            load, loadHalf, store = _maskedIntrinsics(builder, element, dtype.bitwidth, lanes)
            align = ir.Constant(_I32, dtype.bitwidth // 8)
            count = builder.sext(countArg, _I64) if countArg.type.width < 64 else countArg
            one = ir.Constant(_I64, 1)
            evens = _firstLanes(builder, builder.lshr(builder.add(count, one), one), half)
            odds = _firstLanes(builder, builder.lshr(count, one), half)
            outputs = _firstLanes(builder, count, lanes)
            zeros = ir.Constant(ir.VectorType(element, half), [0.0] * half)
            first = builder.call(loadHalf, [_address(context, builder, signature.args[2], aArg, eArg), align, evens,
                                            zeros])
            second = builder.call(loadHalf, [_address(context, builder, signature.args[3], bArg, eArg), align, odds,
                                             zeros])
            order = [k // 2 + (k % 2) * half for k in range(lanes)]
            row = builder.shuffle_vector(first, second, ir.Constant(ir.VectorType(_I32, lanes), order))
            target = _address(context, builder, signature.args[0], dstArg, dArg)
            with builder.if_else(accumulateArg) as (added, biased):
                with added:
                    old = builder.call(load, [target, align, outputs,
                                              ir.Constant(ir.VectorType(element, lanes), [0.0] * lanes)])
                    builder.call(store, [builder.fadd(old, row), target, align, outputs])
                with biased:
                    builder.call(store, [builder.fadd(row, _splat(builder, biasArg, lanes)), target, align, outputs])
            return context.get_dummy_value()

        return sig, codegen
