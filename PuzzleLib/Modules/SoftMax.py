"""Softmax over axis 1 (classes, or maps of (N, C, ...) data), each position independently."""

from PuzzleLib.Backend import Norm
from PuzzleLib.Modules.Module import Module, ModuleError


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
        if len(shape) < 2:
            raise ModuleError(f"Data must be at least 2d tensor (got {len(shape)}d tensor of shape {tuple(shape)})")

    def checkGradShape(self, shape):
        if len(shape) < 2:
            raise ModuleError(f"Grad must be at least 2d tensor (got {len(shape)}d tensor of shape {tuple(shape)})")
        super().checkGradShape(shape)
