"""RMSProp: ms = factor * ms + (1 - factor) * g^2; p += lr * g / (sqrt(ms) + epsilon)."""

from PuzzleLib.Backend import OptKernels
from PuzzleLib.Optimizers.Optimizer import Optimizer, checkedRate


class RMSProp(Optimizer):
    stateNames = ("ms",)

    def __init__(self, learnRate=1e-3, factor=0.9, epsilon=1e-5):
        super().__init__(learnRate)
        self.factor = checkedRate("factor", factor)
        self.epsilon = checkedRate("epsilon", epsilon)

    def updateVar(self, var, state):
        OptKernels.rmsProp(
            var.data, var.grad, state["ms"], self.learnRate * var.learnRate, self.factor, self.epsilon
        )
