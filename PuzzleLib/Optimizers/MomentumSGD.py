"""SGD with classical momentum: m = mu * m + lr * g; p += m."""

from PuzzleLib.Backend import OptKernels
from PuzzleLib.Optimizers.Optimizer import checkedRate
from PuzzleLib.Optimizers.SGD import SGD


class MomentumSGD(SGD):
    stateNames = ("mom",)

    def __init__(self, learnRate=1e-3, momRate=0.9):
        super().__init__(learnRate)
        self.momRate = checkedRate("momRate", momRate)

    def updateVar(self, var, state):
        OptKernels.momentumSGD(
            var.data, var.grad, state["mom"], self.learnRate * var.learnRate, self.momRate * var.momRate
        )
