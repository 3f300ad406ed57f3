"""Batch normalization of (N, maps, H, W) data, per map.

Train mode normalizes with the batch's mean and variance and moves the running
statistics (attributes ``mean`` and ``var``, shaped (1, maps, 1, 1)) towards them by
``factor = max(initFactor / n, minFactor)`` on the n-th training pass, as in PuzzleLib:
``running = (1 - factor) * running + factor * batch`` (the variance unbiased). Eval mode
normalizes with the running statistics. ``scale`` starts as N(1, sscale) (exactly 1
when not ``affine``) and ``bias`` as zeros; only an affine module learns them.
"""

import numbers

import numpy as np

from PuzzleLib.Backend import Norm, gpuarray
from PuzzleLib.Modules.Module import Module, ModuleError, checkInt
from PuzzleLib.Variable import Variable


class BatchNorm2D(Module):
    def __init__(self, maps, epsilon=1e-5, initFactor=1.0, minFactor=0.1, sscale=0.01, affine=True, name=None,
                 empty=False):
        super().__init__(name)
        maps = checkInt(maps, "maps", 1)
        for value, what in ((epsilon, "epsilon"), (initFactor, "initFactor"), (minFactor, "minFactor"),
                            (sscale, "sscale")):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{what} must be a number, got {type(value).__name__}")
        if epsilon <= 0:
            raise ModuleError(f"epsilon must be positive (got {epsilon})")

        self.maps = maps
        self.epsilon = float(epsilon)
        self.initFactor, self.minFactor = float(initFactor), float(minFactor)
        self.affine = bool(affine)
        self.numOfProps = 0
        self.savemean = self.saveinvstd = None

        self.scale = self.bias = self.mean = self.var = None
        if empty:
            return

        shape = self.statShape
        scale = np.random.normal(1.0, sscale if self.affine else 0.0, shape).astype(np.float32)
        self.setVar("scale", Variable(gpuarray.to_gpu(scale)))
        self.setVar("bias", Variable(gpuarray.zeros(shape)))
        self.setAttr("mean", gpuarray.zeros(shape))
        self.setAttr("var", gpuarray.to_gpu(np.ones(shape, dtype=np.float32)))

    @property
    def statShape(self):
        return (1, self.maps, 1, 1)

    def paramShapes(self):
        return {"scale": self.statShape, "bias": self.statShape}

    def setAttr(self, name, attr):
        shape = getattr(attr, "shape", None)
        if name in ("mean", "var") and shape != self.statShape:
            raise ModuleError(f"Attribute {name!r} must have shape {self.statShape}, got {shape}")
        super().setAttr(name, attr)

    # -- compute --------------------------------------------------------------------------------
    def updateData(self, data):
        if self.train:
            self.numOfProps += 1
            factor = max(self.initFactor / self.numOfProps, self.minFactor)
            self.data, self.savemean, self.saveinvstd = Norm.batchNormNd(
                data, self.scale, self.bias, self.mean, self.var, self.epsilon, factor, test=False
            )
        else:
            self.savemean = self.saveinvstd = None
            self.data = Norm.batchNormNd(data, self.scale, self.bias, self.mean, self.var, self.epsilon, test=True)

    def updateGrad(self, grad):
        if self.savemean is not None:
            self.grad = Norm.batchNormNdBackward(self.inData, grad, self.scale, self.savemean, self.saveinvstd)
        else:
            # Normalized by the running statistics, which are constants here.
            self.grad = Norm.batchNormNdBackwardTest(grad, self.scale, self.var, self.epsilon)

    def accGradParams(self, grad, scale=1.0, momentum=0.0):
        if not self.affine or self.savemean is None:
            return
        Norm.batchNormNdParamGrads(
            self.inData, grad, self.savemean, self.saveinvstd, self.vars["scale"].grad, self.vars["bias"].grad,
            scale=scale, momentum=momentum,
        )

    # -- shapes ---------------------------------------------------------------------------------
    def dataShapeFrom(self, shape):
        return tuple(shape)

    def gradShapeFrom(self, shape):
        return tuple(shape)

    def checkDataShape(self, shape):
        if self.scale is None or self.mean is None:
            raise ModuleError(f"{self} has no parameters (created with empty=True): set them first")
        self.checkRank(shape, 4, "Data")
        if shape[1] != self.maps:
            raise ModuleError(f"Data has {shape[1]} maps (expected: {self.maps})")
        if self.train and shape[0] * shape[2] * shape[3] < 2:
            raise ModuleError(f"Train mode needs at least 2 values per map (got data of shape {tuple(shape)})")

    def checkGradShape(self, shape):
        self.checkRank(shape, 4, "Grad")
        if shape[1] != self.maps:
            raise ModuleError(f"Grad has {shape[1]} maps (expected: {self.maps})")
        super().checkGradShape(shape)

    def reset(self):
        super().reset()
        self.savemean = self.saveinvstd = None
