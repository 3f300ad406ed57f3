"""Optimizer dispatch: in-place update rules on GPUArrays' storage.

``grad`` is the NEGATIVE gradient; every rule adds its step to ``param``.
"""

from PuzzleLib.Backend import getEngine


def sgd(param, grad, lr):
    getEngine().optim.sgd(param.ary, grad.ary, lr)


def momentumSGD(param, grad, mom, lr, mr):
    getEngine().optim.momentumSGD(param.ary, grad.ary, mom.ary, lr, mr)


def nesterovSGD(param, grad, mom, lr, mr):
    getEngine().optim.nesterovSGD(param.ary, grad.ary, mom.ary, lr, mr)


def adam(param, grad, mg, ms, lr, fix1, fix2, epsilon):
    getEngine().optim.adam(param.ary, grad.ary, mg.ary, ms.ary, lr, fix1, fix2, epsilon)


def adaGrad(param, grad, h, lr, epsilon):
    getEngine().optim.adaGrad(param.ary, grad.ary, h.ary, lr, epsilon)


def rmsProp(param, grad, ms, lr, factor, epsilon):
    getEngine().optim.rmsProp(param.ary, grad.ary, ms.ary, lr, factor, epsilon)


def weightDecay(grad, param, rate):
    getEngine().optim.weightDecay(grad.ary, param.ary, rate)
