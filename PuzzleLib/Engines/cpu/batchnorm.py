"""Batch normalization over every axis but the maps axis (1) of (N, C, *spatial) arrays.

Per-map statistics arrays (scale, bias, mean, var, invstd) are shaped (1, C, 1, ...) to
broadcast against the data. Results are in the data's dtype.
"""

import numpy as np


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def forwardTrain(x, scale, bias, epsilon):
    """(y, mean, invstd, var) with the batch's mean and biased variance per map."""
    axes = _axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=axes, keepdims=True)
    invstd = 1 / np.sqrt(var + epsilon)
    y = centered * (invstd * scale) + bias
    return y.astype(x.dtype, copy=False), mean, invstd, var


def updateRunning(runMean, runVar, mean, var, count, factor):
    """running = (1 - factor) * running + factor * batch, in place; the variance is made unbiased."""
    unbiased = var * (count / (count - 1)) if count > 1 else var
    runMean *= 1 - factor
    runMean += factor * mean
    runVar *= 1 - factor
    runVar += factor * unbiased


def forwardTest(x, scale, bias, mean, var, epsilon):
    y = (x - mean) * (scale / np.sqrt(var + epsilon)) + bias
    return y.astype(x.dtype, copy=False)


def backwardTrain(x, grad, scale, mean, invstd):
    """Input gradient through the batch statistics."""
    axes = _axes(x)
    count = x.size // x.shape[1]
    xhat = (x - mean) * invstd
    dbias = grad.sum(axis=axes, keepdims=True)
    dscale = np.sum(grad * xhat, axis=axes, keepdims=True)
    dx = (scale * invstd) * (grad - (dbias + xhat * dscale) / count)
    return dx.astype(grad.dtype, copy=False)


def backwardTest(grad, scale, var, epsilon):
    """Input gradient when the running statistics (constants) normalized the data."""
    return (grad * (scale / np.sqrt(var + epsilon))).astype(grad.dtype, copy=False)


def paramGrads(x, grad, mean, invstd):
    """(d scale, d bias), shaped like the per-map statistics."""
    axes = _axes(x)
    dscale = np.sum(grad * ((x - mean) * invstd), axis=axes, keepdims=True)
    dbias = grad.sum(axis=axes, keepdims=True)
    return dscale, dbias
