"""Element-wise dispatch: activations and dropout masks.

``inplace`` writes the result into the input's (or the gradient's) own storage.
``slc`` restricts an activation to a slice of the flattened array; the rest passes through.
"""

from PuzzleLib.Backend import getEngine
from PuzzleLib.Backend.gpuarray import GPUArray


def activation(data, kind, args=(), slc=None, inplace=False):
    out = data.ary if inplace else None
    result = getEngine().activation.forward(data.ary, kind, args, slc, out)
    return data if inplace else GPUArray(result)


def activationBackward(grad, outdata, kind, args=(), slc=None, inplace=False):
    out = grad.ary if inplace else None
    result = getEngine().activation.backward(grad.ary, outdata.ary, kind, args, slc, out)
    return grad if inplace else GPUArray(result)


def dropoutMask(shape, p, dtype, rng=None, slc=None):
    """A new mask: 0 with probability p, else 1 / (1 - p) (1 outside the flat slice slc, if given)."""
    return GPUArray(getEngine().activation.dropoutMask(shape, p, dtype, rng, slc))


def multiply(data, mask, inplace=False):
    if inplace:
        getEngine().activation.multiply(data.ary, mask.ary, out=data.ary)
        return data
    return GPUArray(getEngine().activation.multiply(data.ary, mask.ary))
