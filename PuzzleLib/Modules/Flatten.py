"""Flattens every axis but the batch axis: (N, d1, d2, ...) -> (N, d1 * d2 * ...), without a copy."""

import math

from PuzzleLib.Modules.Module import Module


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
        self.checkMinRank(shape, 2, "Data")

    def checkGradShape(self, shape):
        self.checkRank(shape, 2, "Grad")
        super().checkGradShape(shape)

    def reset(self):
        super().reset()
        self.inshape = None
