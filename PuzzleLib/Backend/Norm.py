"""Normalization dispatch: batch normalization and softmax.

Batch-norm statistics are GPUArrays shaped (1, maps, 1, ...). Parameter gradients are
accumulated as ``scale * new + momentum * old``.
"""

from PuzzleLib.Backend import Blas, getEngine
from PuzzleLib.Backend.gpuarray import GPUArray


def batchNormNd(data, scale, bias, mean, var, epsilon=1e-5, factor=1.0, test=False):
    """Test mode: y from the running statistics. Train mode: (y, savemean, saveinvstd), and the
    running mean and var are moved towards the batch's by ``factor``, in place."""
    engine = getEngine().batchnorm
    if test:
        return GPUArray(engine.forwardTest(data.ary, scale.ary, bias.ary, mean.ary, var.ary, epsilon))
    y, batchMean, invstd, batchVar = engine.forwardTrain(data.ary, scale.ary, bias.ary, epsilon)
    engine.updateRunning(mean.ary, var.ary, batchMean, batchVar, data.size // data.shape[1], factor)
    return GPUArray(y), GPUArray(batchMean), GPUArray(invstd)


def batchNormNdBackward(data, grad, scale, savemean, saveinvstd):
    return GPUArray(getEngine().batchnorm.backwardTrain(data.ary, grad.ary, scale.ary, savemean.ary, saveinvstd.ary))


def batchNormNdBackwardTest(grad, scale, var, epsilon=1e-5):
    return GPUArray(getEngine().batchnorm.backwardTest(grad.ary, scale.ary, var.ary, epsilon))


def batchNormNdParamGrads(data, grad, savemean, saveinvstd, scalegrad, biasgrad, scale=1.0, momentum=0.0):
    dscale, dbias = getEngine().batchnorm.paramGrads(data.ary, grad.ary, savemean.ary, saveinvstd.ary)
    Blas.accumulate(scalegrad, dscale, scale, momentum)
    Blas.accumulate(biasgrad, dbias, scale, momentum)
    return scalegrad, biasgrad


def softmaxNd(data):
    return GPUArray(getEngine().softmax.forward(data.ary))


def softmaxNdBackward(grad, outdata):
    return GPUArray(getEngine().softmax.backward(grad.ary, outdata.ary))
