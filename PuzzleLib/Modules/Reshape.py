"""Reshapes data without a copy, as in PuzzleLib: in ``shape`` a 0 copies that axis from the
input (``(0, -1)`` keeps the batch axis and flattens the rest) and one -1 is inferred.
The gradient is reshaped back to the input's shape.
"""

import math

from PuzzleLib.Modules.Module import Module, ModuleError, checkInt


class Reshape(Module):
    def __init__(self, shape, name=None):
        super().__init__(name)
        if not isinstance(shape, (tuple, list)):
            raise ValueError(f"shape must be a tuple of ints, got {type(shape).__name__}")
        shape = tuple(checkInt(v, "shape entry") for v in shape)
        if any(v < -1 for v in shape) or shape.count(-1) > 1:
            raise ModuleError(f"shape entries must be positive, 0 (copy) or a single -1 (got {shape})")
        self.shape = shape
        self.inshape = None

    def _withCopies(self, inshape):
        if any(v == 0 and i >= len(inshape) for i, v in enumerate(self.shape)):
            raise ModuleError(f"Data must have at least {self.shape.index(0) + 1} axes to copy for reshape "
                              f"{self.shape} (got shape {tuple(inshape)})")
        return tuple(inshape[i] if v == 0 else v for i, v in enumerate(self.shape))

    def dataShapeFrom(self, shape):
        target = self._withCopies(shape)
        if -1 not in target:
            return target
        known = math.prod(v for v in target if v != -1)
        return tuple(math.prod(shape) // known if v == -1 else v for v in target)

    def gradShapeFrom(self, shape):
        return tuple(self.inshape)

    def checkDataShape(self, shape):
        target = self._withCopies(shape)
        size = math.prod(shape)
        if -1 in target:
            known = math.prod(v for v in target if v != -1)
            consistent = known != 0 and size % known == 0
        else:
            consistent = math.prod(target) == size
        if not consistent:
            raise ModuleError(f"Data shape {tuple(shape)} is inconsistent with reshape {target}")

    def updateData(self, data):
        self.inshape = data.shape
        self.data = data.reshape(self.dataShapeFrom(data.shape))

    def updateGrad(self, grad):
        self.grad = grad.reshape(self.inshape)

    def reset(self):
        super().reset()
        self.inshape = None
