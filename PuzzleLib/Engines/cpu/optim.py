"""Optimizer update rules on numpy arrays, all in place.

``grad`` is the NEGATIVE gradient (PuzzleLib's convention), so every rule ADDS its step
to the parameter. Arithmetic stays in the parameter's dtype: scalars are cast to it.
"""

import numpy as np


def _scalar(ary, value):
    return ary.dtype.type(value)


def sgd(param, grad, lr):
    """p += lr * g."""
    param += _scalar(param, lr) * grad


def momentumSGD(param, grad, mom, lr, mr):
    """m = mr * m + lr * g; p += m."""
    mom *= _scalar(mom, mr)
    mom += _scalar(mom, lr) * grad
    param += mom


def nesterovSGD(param, grad, mom, lr, mr):
    """p += mr^2 * m + (1 + mr) * lr * g; then m = mr * m + lr * g (m the old momentum in the first)."""
    step = _scalar(param, lr) * grad
    param += _scalar(param, mr * mr) * mom
    param += _scalar(param, 1.0 + mr) * step
    mom *= _scalar(mom, mr)
    mom += step


def adam(param, grad, mg, ms, lr, fix1, fix2, epsilon):
    """mg += fix1 (g - mg); ms += fix2 (g^2 - ms); p += lr * mg / (sqrt(ms) + eps).

    fix1 = 1 - beta1, fix2 = 1 - beta2; lr already carries the bias correction.
    """
    tmp = np.subtract(grad, mg)
    tmp *= _scalar(tmp, fix1)
    mg += tmp
    np.multiply(grad, grad, out=tmp)
    tmp -= ms
    tmp *= _scalar(tmp, fix2)
    ms += tmp
    _addScaledRatio(param, mg, ms, lr, epsilon, tmp)


def adaGrad(param, grad, h, lr, epsilon):
    """h += g^2; p += lr * g / (sqrt(h) + eps)."""
    tmp = np.multiply(grad, grad)
    h += tmp
    _addScaledRatio(param, grad, h, lr, epsilon, tmp)


def rmsProp(param, grad, ms, lr, factor, epsilon):
    """ms = factor * ms + (1 - factor) * g^2; p += lr * g / (sqrt(ms) + eps)."""
    tmp = np.multiply(grad, grad)
    tmp *= _scalar(tmp, 1.0 - factor)
    ms *= _scalar(ms, factor)
    ms += tmp
    _addScaledRatio(param, grad, ms, lr, epsilon, tmp)


def _addScaledRatio(param, num, sq, lr, epsilon, tmp):
    """param += lr * num / (sqrt(sq) + epsilon), using tmp as scratch."""
    np.sqrt(sq, out=tmp)
    tmp += _scalar(tmp, epsilon)
    np.divide(num, tmp, out=tmp)
    tmp *= _scalar(tmp, lr)
    param += tmp


def weightDecay(grad, param, rate):
    """g -= rate * p: the negative gradient of (rate / 2) |p|^2 added to the loss."""
    grad -= _scalar(grad, rate) * param
