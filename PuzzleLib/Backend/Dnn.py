"""Convolution dispatch: GPUArrays in, the engine's kernels on their storage, GPUArrays out.

``stride``, ``pad`` and ``dilation`` are ints or tuples with one entry per spatial axis.
``algo`` names the engine algorithm for that direction (None: the engine's heuristic);
``convNdAlgorithms`` lists those that apply, ``timeConvAlgorithms`` measures them and
``optimizeConvAlgorithm`` picks the one to keep for a shape.
Parameter gradients are accumulated as ``scale * new + momentum * old``.
"""

from PuzzleLib.Backend import Blas, getEngine
from PuzzleLib.Backend.gpuarray import GPUArray

# Directions, in the names the engine uses.
FORWARD, BACKWARD_DATA, BACKWARD_PARAMS = "forward", "backwardData", "backwardParams"


# The module passes tuples already; _tuple is only called for ints and lists (small inputs are all overhead).
def convNd(data, W, bias=None, stride=1, pad=0, dilation=1, groups=1, algo=None):
    w = W.ary
    nd = w.ndim - 2
    return GPUArray(getEngine().conv.forward(
        data.ary, w, None if bias is None else bias.ary.reshape(-1),
        stride if type(stride) is tuple else _tuple(stride, nd), pad if type(pad) is tuple else _tuple(pad, nd),
        dilation if type(dilation) is tuple else _tuple(dilation, nd), groups, algo,
    ))


def convNdPlan(shape, dtype, Wshape, stride=1, pad=0, dilation=1, groups=1, algo=None):
    """``plan(data, W, bias) -> output`` for data of exactly this shape and dtype, for a caller that keeps it
    (ConvND, per input shape): the engine's runner for it (conv.forwardRunner: the direct kernels' prepared
    runner where they serve the shape, all their per-call setup done once; else the engine's forward), with the
    arguments' normalisation done once."""
    nd = len(Wshape) - 2
    run = getEngine().conv.forwardRunner(tuple(shape), tuple(Wshape), dtype, _tuple(stride, nd), _tuple(pad, nd),
                                         _tuple(dilation, nd), groups, algo)

    def plan(data, W, bias=None):
        return GPUArray(run(data.ary, W.ary, None if bias is None else bias.ary.reshape(-1)))

    return plan


def convNdBackwardData(grad, W, data, stride=1, pad=0, dilation=1, groups=1, algo=None):
    w = W.ary
    nd = w.ndim - 2
    return GPUArray(getEngine().conv.backwardData(
        grad.ary, w, data.ary.shape,
        stride if type(stride) is tuple else _tuple(stride, nd), pad if type(pad) is tuple else _tuple(pad, nd),
        dilation if type(dilation) is tuple else _tuple(dilation, nd), groups, algo,
    ))


def convNdBackwardParams(data, grad, W, bias=None, stride=1, pad=0, dilation=1, groups=1,
                         wgrad=None, bgrad=None, scale=1.0, momentum=0.0, algo=None):
    """Weight and bias gradients; written into wgrad/bgrad (accumulating) when given."""
    w = W.ary
    nd = w.ndim - 2
    dw, db = getEngine().conv.backwardParams(
        data.ary, grad.ary, w.shape, bias is not None,
        stride if type(stride) is tuple else _tuple(stride, nd), pad if type(pad) is tuple else _tuple(pad, nd),
        dilation if type(dilation) is tuple else _tuple(dilation, nd), groups, algo,
    )
    wgrad = _store(wgrad, dw, scale, momentum)
    bgrad = None if db is None else _store(bgrad, db.reshape(bias.ary.shape), scale, momentum)
    return wgrad, bgrad


def convNdAlgorithms(direction, shape, Wshape, stride=1, pad=0, dilation=1, groups=1):
    """Names of the algorithms that can run this convolution (input ``shape``) in ``direction``."""
    nd = len(Wshape) - 2
    return getEngine().conv.algorithms(direction, tuple(shape), tuple(Wshape), _tuple(stride, nd), _tuple(pad, nd),
                                       _tuple(dilation, nd), groups)


def timeConvAlgorithms(direction, shape, Wshape, stride=1, pad=0, dilation=1, groups=1, dtype=None,
                       memlimit=None, withBias=True, repeats=5):
    """[(algo, seconds, workspace bytes)], fastest first, leaving out those needing more than memlimit bytes."""
    nd = len(Wshape) - 2
    conv = getEngine().conv
    kwargs = {} if dtype is None else {"dtype": dtype}
    return conv.timeAlgorithms(direction, tuple(shape), tuple(Wshape), _tuple(stride, nd), _tuple(pad, nd),
                               _tuple(dilation, nd), groups, memlimit=memlimit, repeats=repeats,
                               withBias=withBias, **kwargs)


def optimizeConvAlgorithm(direction, shape, Wshape, stride=1, pad=0, dilation=1, groups=1, dtype=None,
                          memlimit=None, withBias=True):
    """The algorithm to keep for this shape in ``direction``: measured, within memlimit bytes, never one
    measured slower than the engine's default choice; the smallest-workspace one when none fits."""
    nd = len(Wshape) - 2
    kwargs = {} if dtype is None else {"dtype": dtype}
    algo, _ = getEngine().conv.optimizeAlgorithm(direction, tuple(shape), tuple(Wshape), _tuple(stride, nd),
                                                 _tuple(pad, nd), _tuple(dilation, nd), groups, memlimit=memlimit,
                                                 withBias=withBias, **kwargs)
    return algo


def _store(dest, new, scale, momentum):
    if dest is None:
        return GPUArray(new if scale == 1.0 else new * scale)
    return Blas.accumulate(dest, new, scale, momentum)


def _tuple(value, nd):
    if type(value) is tuple and len(value) == nd:
        return value
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd
