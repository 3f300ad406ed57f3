"""Pooling dispatch. ``size``, ``stride`` and ``pad``: tuples, one entry per spatial axis.

Max pooling returns a workspace (which window tap held each maximum) that its backward pass needs.
"""

from PuzzleLib.Backend import getEngine
from PuzzleLib.Backend.gpuarray import GPUArray


def maxPoolNd(data, size, stride, pad):
    y, taps = getEngine().pool.maxForward(data.ary, size, stride, pad)
    return GPUArray(y), GPUArray(taps)


def maxPoolNdBackward(grad, workspace, inShape, size, stride, pad):
    return GPUArray(getEngine().pool.maxBackward(grad.ary, workspace.ary, inShape, size, stride, pad))


def maxPoolNdMask(workspace, inShape, size, stride, pad):
    """Flat (row-major) index into each input map of every maximum, int32."""
    return GPUArray(getEngine().pool.maxIndices(workspace.ary, inShape, size, stride, pad))


def avgPoolNd(data, size, stride, pad, includePad=True):
    return GPUArray(getEngine().pool.avgForward(data.ary, size, stride, pad, includePad))


def avgPoolNdBackward(grad, inShape, size, stride, pad, includePad=True):
    return GPUArray(getEngine().pool.avgBackward(grad.ary, inShape, size, stride, pad, includePad))
