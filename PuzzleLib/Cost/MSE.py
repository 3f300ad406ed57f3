"""Mean squared error: error |t - p|^2 / (2N), grad (t - p) / N, N counting every element."""

from PuzzleLib.Backend import CostKernels
from PuzzleLib.Cost.Cost import RegressionCost


class MSE(RegressionCost):
    def kernel(self, pred, target, withGrad):
        return CostKernels.mse(pred, target, withGrad)
