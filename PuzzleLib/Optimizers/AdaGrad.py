"""AdaGrad: h += g^2; p += lr * g / (sqrt(h) + epsilon)."""

from PuzzleLib.Backend import OptKernels
from PuzzleLib.Optimizers.Optimizer import Optimizer, checkedRate


class AdaGrad(Optimizer):
    stateNames = ("h",)

    def __init__(self, learnRate=1e-3, epsilon=1e-8):
        super().__init__(learnRate)
        self.epsilon = checkedRate("epsilon", epsilon)

    def updateVar(self, var, state):
        OptKernels.adaGrad(var.data, var.grad, state["h"], self.learnRate * var.learnRate, self.epsilon)
