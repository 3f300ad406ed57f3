"""Cache hints for the compiled kernels: ``prefetch(a, i)`` asks the CPU to start loading the cache line that
holds ``a[i]`` (a 1-D array) while the kernel goes on with other work.

The hardware prefetchers follow a few long runs of addresses, but not a kernel that reads short rows of many
planes in turn (a stride-2 Winograd input transform reads 28 floats of one row, then jumps to the next plane):
each plane's first lines then arrive at memory latency. Numba has no prefetch of its own, so this is an
``intrinsic`` emitting LLVM's ``llvm.prefetch`` (read, highest locality, data cache). A prefetch never faults,
but the callers keep their indices inside the array all the same.

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

prefetch = None


if intrinsic is not None:
    @intrinsic
    def prefetch(typingctx, array, index):
        """Start loading the cache line of array[index] (1-D, C-contiguous); returns nothing."""
        sig = types.void(array, index)

        def codegen(context, builder, signature, args):
            arrayType = signature.args[0]
            view = context.make_array(arrayType)(context, builder, args[0])
            address = cgutils.get_item_pointer(context, builder, arrayType, view, [args[1]], wraparound=False,
                                               boundscheck=False)
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            hint = builder.module.declare_intrinsic("llvm.prefetch", (i8p,), ir.FunctionType(
                ir.VoidType(), [i8p, i32, i32, i32]))
            builder.call(hint, [builder.bitcast(address, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                                ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen
