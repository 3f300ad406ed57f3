"""Softmax over axis 1 (classes, or maps of (N, C, ...) data), each position independently."""

from PuzzleLib.Backend import Norm
from PuzzleLib.Modules.Module import Module


class SoftMax(Module):
    def __init__(self, name=None):
        super().__init__(name)

    def updateData(self, data):
        self.data = Norm.softmaxNd(data)

    def updateGrad(self, grad):
        self.grad = Norm.softmaxNdBackward(grad, self.data)

    def dataShapeFrom(self, shape):
        return tuple(shape)

    def gradShapeFrom(self, shape):
        return tuple(shape)

    def checkDataShape(self, shape):
        self.checkMinRank(shape, 2, "Data")

    def checkGradShape(self, shape):
        self.checkMinRank(shape, 2, "Grad")
        super().checkGradShape(shape)
