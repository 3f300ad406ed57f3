"""Loss functions on numpy arrays.

Every function returns ``(error, grad)``: ``error`` a Python float, ``grad`` the
NEGATIVE gradient of that error with respect to the prediction (PuzzleLib's
convention: a step ``pred += lr * grad`` lowers the loss), or None when
``withGrad`` is false. Arithmetic stays in the prediction's dtype.
"""

import numpy as np


def mse(pred, target, withGrad=True):
    """error = |t - p|^2 / (2N), grad = (t - p) / N, N counting every element."""
    diff = np.subtract(target, pred)
    n = diff.size
    error = float(np.vdot(diff.ravel(), diff.ravel())) / (2.0 * n)
    if not withGrad:
        return error, None
    diff *= diff.dtype.type(1.0 / n)
    return error, diff


def l1(pred, target, withGrad=True):
    """error = sum |t - p| / N, grad = sign(t - p) / N."""
    diff = np.subtract(target, pred)
    n = diff.size
    error = float(np.abs(diff).sum(dtype=np.float64)) / n
    if not withGrad:
        return error, None
    grad = np.sign(diff)
    grad *= grad.dtype.type(1.0 / n)
    return error, grad


def smoothL1(pred, target, withGrad=True):
    """Huber loss with threshold 1, averaged over all N elements.

    Per element: d^2 / 2 where |d| < 1, else |d| - 1/2 (d = t - p); grad = clip(d, -1, 1) / N.
    """
    diff = np.subtract(target, pred)
    n = diff.size
    absDiff = np.abs(diff)
    small = absDiff < 1.0
    perElement = np.where(small, 0.5 * diff * diff, absDiff - 0.5)
    error = float(perElement.sum(dtype=np.float64)) / n
    if not withGrad:
        return error, None
    grad = np.clip(diff, -1.0, 1.0, out=diff)
    grad *= grad.dtype.type(1.0 / n)
    return error, grad


def _softplus(x):
    """log(1 + exp(x)) without overflow for large |x|."""
    return np.logaddexp(x.dtype.type(0), x)


def bce(scores, labels, withGrad=True):
    """Binary cross-entropy on logits; labels (0 or 1) have as many elements as scores.

    error = mean(softplus(x) - t*x) (= -t log s - (1-t) log(1-s), s = sigmoid(x)),
    grad = (t - s) / N.
    """
    target = labels.reshape(scores.shape).astype(scores.dtype)
    n = scores.size
    error = float((_softplus(scores) - target * scores).sum(dtype=np.float64)) / n
    if not withGrad:
        return error, None
    # sigmoid(x) = exp(-softplus(-x)) is finite for every x.
    sigmoid = np.exp(-_softplus(-scores))
    grad = np.subtract(target, sigmoid, out=target)
    grad *= grad.dtype.type(1.0 / n)
    return error, grad


def bceErrorRate(scores, labels):
    """Fraction of elements whose predicted class (score > 0) differs from the label."""
    predicted = scores.reshape(labels.shape) > 0
    return float(np.count_nonzero(predicted != (labels != 0))) / labels.size


def _logSoftmax(scores):
    """log softmax over axis 1, shifted by the maximum so that exp never overflows."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted


def crossEntropy(scores, labels, weights=None, withGrad=True):
    """Softmax cross-entropy; classes on axis 1, labels shaped like scores without axis 1.

    error = -sum(w[l] * log softmax[l]) / (number of labels);
    grad = w[l] * (onehot(l) - softmax) / batch.
    """
    logProb = _logSoftmax(scores)
    index = np.expand_dims(labels.astype(np.intp), 1)
    picked = np.take_along_axis(logProb, index, axis=1)[:, 0]
    sampleWeights = None if weights is None else weights.astype(scores.dtype)[labels]
    if sampleWeights is not None:
        picked = picked * sampleWeights
    error = -float(picked.sum(dtype=np.float64)) / labels.size
    if not withGrad:
        return error, None
    grad = np.exp(logProb, out=logProb)
    np.negative(grad, out=grad)
    np.put_along_axis(grad, index, np.take_along_axis(grad, index, axis=1) + 1, axis=1)
    if sampleWeights is not None:
        grad *= np.expand_dims(sampleWeights, 1)
    grad *= grad.dtype.type(1.0 / scores.shape[0])
    return error, grad


def classErrorRate(scores, labels):
    """Fraction of labels that differ from the arg-max over axis 1."""
    return float(np.count_nonzero(scores.argmax(axis=1) != labels)) / labels.size


def labelRange(labels):
    """(min, max) of an integer label array, (0, 0) when empty."""
    if labels.size == 0:
        return 0, 0
    return int(labels.min()), int(labels.max())
