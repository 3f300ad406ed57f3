"""Plain stochastic gradient descent: p += lr * g."""

from PuzzleLib.Backend import OptKernels
from PuzzleLib.Optimizers.Optimizer import Optimizer


class SGD(Optimizer):
    def __init__(self, learnRate=1e-3):
        super().__init__(learnRate)

    def updateVar(self, var, state):
        OptKernels.sgd(var.data, var.grad, self.learnRate * var.learnRate)
