"""Convolution dispatch: GPUArrays in, the engine's kernels on their storage, GPUArrays out.

``stride``, ``pad`` and ``dilation`` are tuples with one entry per spatial axis.
Parameter gradients are accumulated as ``scale * new + momentum * old``.
"""

from PuzzleLib.Backend import Blas, getEngine
from PuzzleLib.Backend.gpuarray import GPUArray


def convNd(data, W, bias=None, stride=1, pad=0, dilation=1, groups=1):
    stride, pad, dilation = _tuples(W.ndim - 2, stride, pad, dilation)
    y = getEngine().conv.forward(
        data.ary, W.ary, None if bias is None else bias.ary.reshape(-1), stride, pad, dilation, groups
    )
    return GPUArray(y)


def convNdBackwardData(grad, W, data, stride=1, pad=0, dilation=1, groups=1):
    stride, pad, dilation = _tuples(W.ndim - 2, stride, pad, dilation)
    return GPUArray(getEngine().conv.backwardData(grad.ary, W.ary, data.shape, stride, pad, dilation, groups))


def convNdBackwardParams(data, grad, W, bias=None, stride=1, pad=0, dilation=1, groups=1,
                         wgrad=None, bgrad=None, scale=1.0, momentum=0.0):
    """Weight and bias gradients; written into wgrad/bgrad (accumulating) when given."""
    stride, pad, dilation = _tuples(W.ndim - 2, stride, pad, dilation)
    dw, db = getEngine().conv.backwardParams(
        data.ary, grad.ary, W.shape, bias is not None, stride, pad, dilation, groups
    )
    wgrad = _store(wgrad, dw, scale, momentum)
    bgrad = None if db is None else _store(bgrad, db.reshape(bias.shape), scale, momentum)
    return wgrad, bgrad


def _store(dest, new, scale, momentum):
    if dest is None:
        return GPUArray(new if scale == 1.0 else new * scale)
    return Blas.accumulate(dest, new, scale, momentum)


def _tuples(nd, *values):
    return tuple(tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd for v in values)
