"""The contract every loss follows, as in PuzzleLib.

``cost(pred, target)`` checks its inputs, computes the batch error and the NEGATIVE
gradient of that error with respect to ``pred`` (a step ``pred += lr * grad`` lowers
the loss) and returns ``(error, grad)``, or only ``grad`` with ``queryError=False``.
Each call also adds ``error * batch`` to an accumulator, so ``getMeanError()`` is the
sample-weighted mean error since the last ``resetAccumulator()``. ``validate(pred,
target)`` returns the validation metric (the error itself for regression losses, the
error rate for classification losses) without touching the accumulator.

Subclasses implement ``calcGrad`` (error and gradient), ``calcVal`` and the checks.
"""

import numpy as np

from PuzzleLib.Modules.Module import ModuleError, asArray

# Prediction dtypes a loss accepts: the engine's calculation type, and float64 for checks.
_FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float64))


class CostError(ModuleError):
    """Bad input to a loss; a ModuleError, so code catching those catches these too."""


class Cost:
    def __init__(self):
        self.error = None
        self.valError = None
        self.grad = None

        self.batchsize = 0
        self.numOfSamples = 0
        self.accumErr = 0.0
        # The last batch's error summed over its samples (error * batchsize).
        self.devErr = 0.0

    def __str__(self):
        return f"Cost {type(self).__name__}"

    # -- running error ------------------------------------------------------------------------
    def resetAccumulator(self):
        self.accumErr = 0.0
        self.batchsize = 0
        self.numOfSamples = 0

    def getError(self):
        """The last batch's error (None before the first call)."""
        return self.error

    def getMeanError(self):
        """Sample-weighted mean error over every batch since resetAccumulator (0.0 if none)."""
        return self.accumErr / self.numOfSamples if self.numOfSamples > 0 else 0.0

    def getValError(self):
        return self.valError

    def reset(self):
        self.error = None
        self.valError = None
        self.grad = None

    # -- computing ------------------------------------------------------------------------------
    def __call__(self, pred, target, queryError=True):
        pred, target = self._prepared(pred, target)
        self.reset()

        error, grad = self.calcGrad(pred, target)
        batchsize = self.getBatchsize(pred)

        self.error, self.grad = error, grad
        self.devErr = error * batchsize
        self.accumErr += self.devErr
        self.batchsize = batchsize
        self.numOfSamples += batchsize

        return (self.error, self.grad) if queryError else self.grad

    def validate(self, pred, target):
        pred, target = self._prepared(pred, target)
        self.valError = self.calcVal(pred, target)
        return self.valError

    def _prepared(self, pred, target):
        pred = self._asArray(pred, "Prediction")
        target = self._asArray(target, "Target")
        self.checkDataType(pred, target)
        self.checkDataShape(pred, target)
        return pred, target

    def calcGrad(self, pred, target):
        """(batch error, negative gradient GPUArray); no side effects."""
        raise NotImplementedError(f"{type(self).__name__} does not implement calcGrad")

    def calcVal(self, pred, target):
        raise NotImplementedError(f"{type(self).__name__} does not implement calcVal")

    def getBatchsize(self, pred):
        return pred.shape[0]

    # -- checks -------------------------------------------------------------------------------
    def checkDataShape(self, pred, target):
        self.checkBatchAxis(pred, target)
        if pred.shape[0] != target.shape[0]:
            raise self.costError(
                f"target batch size must match prediction batch size {pred.shape[0]} (got {target.shape[0]})"
            )

    def checkBatchAxis(self, pred, target):
        if pred.ndim < 1 or target.ndim < 1:
            raise self.costError(
                f"Expected prediction and target with a batch axis, got shapes {pred.shape} and {target.shape}"
            )

    def checkDataType(self, pred, target):
        self.checkPredType(pred)

    def checkPredType(self, pred):
        if pred.dtype not in _FLOAT_TYPES:
            raise self.costError(f"Expected prediction dtype float32 or float64, got {pred.dtype}")

    def checkLabelType(self, labels):
        if labels.dtype != np.int32:
            raise self.costError(f"Expected labels dtype int32, got {labels.dtype}")

    def costError(self, message):
        return CostError(f"{type(self).__name__}: {message}")

    @staticmethod
    def _asArray(ary, what):
        return asArray(ary, what, CostError)


class RegressionCost(Cost):
    """A loss comparing a prediction with a real-valued target of the same shape and dtype."""

    def checkDataType(self, pred, target):
        self.checkPredType(pred)
        if target.dtype != pred.dtype:
            raise self.costError(f"Expected target dtype {pred.dtype} (the prediction's), got {target.dtype}")

    def checkDataShape(self, pred, target):
        self.checkBatchAxis(pred, target)
        if pred.shape != target.shape:
            raise self.costError(f"Expected target shape {pred.shape} (the prediction's), got {target.shape}")
        if pred.size == 0:
            raise self.costError(f"Expected a non-empty prediction, got shape {pred.shape}")

    def calcVal(self, pred, target):
        return self.kernel(pred, target, withGrad=False)[0]

    def calcGrad(self, pred, target):
        return self.kernel(pred, target, withGrad=True)

    def kernel(self, pred, target, withGrad):
        raise NotImplementedError(f"{type(self).__name__} does not implement kernel")
