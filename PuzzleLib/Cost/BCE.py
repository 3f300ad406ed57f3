"""Binary cross-entropy on logits with int32 labels 0 or 1.

error = mean over elements of -t log s - (1 - t) log(1 - s), s = sigmoid(score);
grad = (t - s) / N. ``validate`` returns the error rate (class 1 where score > 0).
Scores (N, 1) take labels (N,); otherwise labels hold as many elements per sample as
the scores.
"""

import math

from PuzzleLib.Backend import CostKernels
from PuzzleLib.Cost.Cost import Cost


class BCE(Cost):
    def checkDataType(self, pred, target):
        self.checkPredType(pred)
        self.checkLabelType(target)

    def checkDataShape(self, pred, target):
        super().checkDataShape(pred, target)
        perSample, labelsPerSample = math.prod(pred.shape[1:]), math.prod(target.shape[1:])
        if perSample != labelsPerSample:
            raise self.costError(
                f"Expected {perSample} labels per sample (scores {pred.shape}), "
                f"got {labelsPerSample} (labels {target.shape})"
            )
        if pred.size == 0:
            raise self.costError(f"Expected non-empty scores, got shape {pred.shape}")
        low, high = CostKernels.labelRange(target)
        if low < 0 or high > 1:
            raise self.costError(f"Expected labels 0 or 1, got values in [{low}, {high}]")

    def calcGrad(self, pred, target):
        return CostKernels.bce(pred, target, withGrad=True)

    def calcVal(self, pred, target):
        return CostKernels.bceErrorRate(pred, target)
