"""Loss dispatch: GPUArrays in, the engine's loss kernels on their storage, (error, grad) out.

Each loss returns ``(error, grad)`` with ``error`` a float and ``grad`` a GPUArray holding
the NEGATIVE gradient of the error (None when ``withGrad`` is false).
"""

from PuzzleLib.Backend import getEngine
from PuzzleLib.Backend.gpuarray import GPUArray


def _wrapped(result):
    error, grad = result
    return error, None if grad is None else GPUArray(grad)


def mse(pred, target, withGrad=True):
    return _wrapped(getEngine().cost.mse(pred.ary, target.ary, withGrad))


def l1(pred, target, withGrad=True):
    return _wrapped(getEngine().cost.l1(pred.ary, target.ary, withGrad))


def smoothL1(pred, target, withGrad=True):
    return _wrapped(getEngine().cost.smoothL1(pred.ary, target.ary, withGrad))


def bce(scores, labels, withGrad=True):
    return _wrapped(getEngine().cost.bce(scores.ary, labels.ary, withGrad))


def bceErrorRate(scores, labels):
    return getEngine().cost.bceErrorRate(scores.ary, labels.ary)


def crossEntropy(scores, labels, weights=None, withGrad=True):
    result = getEngine().cost.crossEntropy(scores.ary, labels.ary, None if weights is None else weights.ary, withGrad)
    return _wrapped(result)


def classErrorRate(scores, labels):
    return getEngine().cost.classErrorRate(scores.ary, labels.ary)


def labelRange(labels):
    """(min, max) of an integer label array."""
    return getEngine().cost.labelRange(labels.ary)
