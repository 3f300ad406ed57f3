"""Softmax cross-entropy: scores with classes on axis 1, int32 labels without that axis.

error = -mean over labels of w[l] * log softmax(scores)[l] (w = 1 without weights);
grad = w[l] * (onehot(l) - softmax) / batch. The softmax is computed inside, shifted
by the maximum, so large scores never overflow. ``validate`` returns the error rate
of the arg-max class. ``maxlabels``, when given, is the number of classes the scores
must have; ``weights`` (one per class) scale each label's error and gradient.
"""

import numpy as np

from PuzzleLib.Backend import CostKernels, gpuarray
from PuzzleLib.Backend.gpuarray import GPUArray
from PuzzleLib.Cost.Cost import Cost


class CrossEntropy(Cost):
    def __init__(self, maxlabels=None, weights=None):
        super().__init__()
        if maxlabels is not None and (not isinstance(maxlabels, (int, np.integer)) or maxlabels < 1):
            raise ValueError(f"maxlabels must be a positive int or None, got {maxlabels!r}")
        if weights is not None:
            if not isinstance(weights, (GPUArray, np.ndarray)):
                raise ValueError(f"weights must be a GPUArray or a numpy array, got {type(weights).__name__}")
            if weights.ndim != 1:
                raise ValueError(f"weights must be a 1-d array (one weight per class), got shape {weights.shape}")
            if maxlabels is not None and weights.shape[0] != maxlabels:
                raise ValueError(f"weights must have {maxlabels} entries (maxlabels), got {weights.shape[0]}")
            weights = gpuarray.to_gpu(weights)
        self.maxlabels = maxlabels
        self.weights = weights

    def checkDataType(self, pred, target):
        self.checkPredType(pred)
        self.checkLabelType(target)

    def checkDataShape(self, pred, target):
        if pred.ndim < 2:
            raise self.costError(f"Expected scores with axes (batch, classes, ...), got shape {pred.shape}")
        if target.ndim != pred.ndim - 1:
            raise self.costError(
                f"Expected labels of {pred.ndim - 1} dimensions for scores {pred.shape}, got shape {target.shape}"
            )
        super().checkDataShape(pred, target)
        if pred.shape[2:] != target.shape[1:]:
            raise self.costError(f"Expected labels spatial shape {pred.shape[2:]}, got {target.shape[1:]}")
        classes = pred.shape[1]
        if self.maxlabels is not None and classes != self.maxlabels:
            raise self.costError(f"Expected {self.maxlabels} classes on axis 1 (maxlabels), got {classes}")
        if self.weights is not None and self.weights.shape[0] != classes:
            raise self.costError(f"Expected {self.weights.shape[0]} classes (one per weight), got {classes}")
        if pred.size == 0:
            raise self.costError(f"Expected non-empty scores, got shape {pred.shape}")
        low, high = CostKernels.labelRange(target)
        if low < 0 or high >= classes:
            raise self.costError(f"Expected labels in [0, {classes - 1}], got values in [{low}, {high}]")

    def calcGrad(self, pred, target):
        return CostKernels.crossEntropy(pred, target, self.weights, withGrad=True)

    def calcVal(self, pred, target):
        return CostKernels.classErrorRate(pred, target)
