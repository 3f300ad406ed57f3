"""Mean absolute error: error sum|t - p| / N, grad sign(t - p) / N, N counting every element."""

from PuzzleLib.Backend import CostKernels
from PuzzleLib.Cost.Cost import RegressionCost


class Abs(RegressionCost):
    def kernel(self, pred, target, withGrad):
        return CostKernels.l1(pred, target, withGrad)
