"""Flattens every axis but the batch axis: (N, d1, d2, ...) -> (N, d1 * d2 * ...), without a copy."""

import math

from PuzzleLib.Modules.Module import Module, ModuleError


class Flatten(Module):
    def __init__(self, name=None):
        super().__init__(name)
        self.inshape = None

    def updateData(self, data):
        self.inshape = data.shape
        self.data = data.reshape(self.dataShapeFrom(data.shape))

    def updateGrad(self, grad):
        self.grad = grad.reshape(self.inshape)

    def dataShapeFrom(self, shape):
        return (shape[0], math.prod(shape[1:]))

    def gradShapeFrom(self, shape):
        return (shape[0],) + tuple(self.inshape[1:])

    def checkDataShape(self, shape):
        if len(shape) < 2:
            raise ModuleError(f"Data must be at least 2d tensor (got {len(shape)}d tensor of shape {tuple(shape)})")

    def checkGradShape(self, shape):
        self.checkRank(shape, 2, "Grad")
        super().checkGradShape(shape)

    def reset(self):
        super().reset()
        self.inshape = None
