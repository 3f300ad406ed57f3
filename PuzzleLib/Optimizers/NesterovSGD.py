"""SGD with Nesterov momentum: p += mu^2 * m + (1 + mu) * lr * g; m = mu * m + lr * g."""

from PuzzleLib.Backend import OptKernels
from PuzzleLib.Optimizers.MomentumSGD import MomentumSGD


class NesterovSGD(MomentumSGD):
    def updateVar(self, var, state):
        OptKernels.nesterovSGD(
            var.data, var.grad, state["mom"], self.learnRate * var.learnRate, self.momRate * var.momRate
        )
