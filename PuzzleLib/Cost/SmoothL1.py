"""Smooth L1 (Huber, threshold 1) averaged over every element.

Per element, with d = t - p: d^2 / 2 where |d| < 1, else |d| - 1/2. The gradient returned
is the negative one, clip(d, -1, 1) / N, like every other loss here.
"""

from PuzzleLib.Backend import CostKernels
from PuzzleLib.Cost.Cost import RegressionCost


class SmoothL1(RegressionCost):
    def kernel(self, pred, target, withGrad):
        return CostKernels.smoothL1(pred, target, withGrad)
