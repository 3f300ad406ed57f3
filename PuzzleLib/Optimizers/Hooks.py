"""Optimizer hooks: called as ``hook(var, state)`` on each variable right before its update."""

from PuzzleLib.Backend import OptKernels
from PuzzleLib.Optimizers.Optimizer import checkedRate


class Hook:
    def __call__(self, var, state):
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")


class WeightDecay(Hook):
    """L2 weight decay: g -= rate * var.wc * p, for each variable whose ``wc`` is positive.

    ``var.wc`` (0.0 by default) is the per-variable coefficient: set it to 1.0 on the
    variables to decay (typically weights, not biases).
    """

    def __init__(self, rate):
        self.rate = checkedRate("rate", rate)

    def __call__(self, var, state):
        if var.wc > 0.0:
            OptKernels.weightDecay(var.grad, var.data, self.rate * var.wc)
