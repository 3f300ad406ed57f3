"""Fully connected layer: y = x W + b on (batch, insize) matrices.

W is (insize, outsize) and b is (outsize,), as in PuzzleLib. With ``transpose=True``
W is stored as (outsize, insize) and y = x W^T + b.
"""

import numbers

from PuzzleLib.Backend import Blas, gpuarray
from PuzzleLib.Modules.Module import Module, ModuleError, checkInt
from PuzzleLib.Variable import Variable


class Linear(Module):
    def __init__(self, insize, outsize, wscale=1.0, useBias=True, initscheme=None, name=None, empty=False,
                 transpose=False):
        super().__init__(name)
        insize, outsize = checkInt(insize, "insize", 1), checkInt(outsize, "outsize", 1)
        if not isinstance(wscale, numbers.Real):
            raise ValueError(f"wscale must be a number, got {type(wscale).__name__}")

        self.insize, self.outsize = insize, outsize
        self.wscale = wscale
        self.useBias = bool(useBias)
        self.transpose = bool(transpose)

        self.W = None
        self.b = None
        if empty:
            return

        # The fans come from W's stored shape, as in PuzzleLib (so transpose swaps them).
        W = self.createTensorWithScheme(initscheme, self.wshape, wscale, factorShape=self.wshape)
        self.setVar("W", Variable(gpuarray.empty(self.wshape) if W is None else gpuarray.to_gpu(W)))
        if self.useBias:
            self.setVar("b", Variable(gpuarray.zeros(self.bshape)))

    @property
    def wshape(self):
        return (self.outsize, self.insize) if self.transpose else (self.insize, self.outsize)

    @property
    def bshape(self):
        return (self.outsize,)

    def paramShapes(self):
        return {"W": self.wshape, "b": self.bshape}

    # -- compute --------------------------------------------------------------------------------
    def updateData(self, data):
        out = Blas.mulMatrixOnMatrix(data, self.W, transpB=self.transpose)
        if self.useBias:
            Blas.addVectorToMatrix(self.b, out)
        self.data = out

    def updateGrad(self, grad):
        self.grad = Blas.mulMatrixOnMatrix(grad, self.W, transpB=not self.transpose)

    def accGradParams(self, grad, scale=1.0, momentum=0.0):
        wgrad = self.vars["W"].grad
        if self.transpose:
            Blas.mulMatrixOnMatrix(grad, self.inData, out=wgrad, transpA=True, alpha=scale, beta=momentum)
        else:
            Blas.mulMatrixOnMatrix(self.inData, grad, out=wgrad, transpA=True, alpha=scale, beta=momentum)
        if self.useBias:
            Blas.sumOnMatrix(grad, out=self.vars["b"].grad, alpha=scale, beta=momentum)

    # -- shapes ---------------------------------------------------------------------------------
    def dataShapeFrom(self, shape):
        return (shape[0], self.outsize)

    def gradShapeFrom(self, shape):
        return (shape[0], self.insize)

    def checkDataShape(self, shape):
        if self.W is None:
            raise ModuleError(f"{self} has no weights (created with empty=True): set 'W' with setVar first")
        if self.useBias and self.b is None:
            raise ModuleError(f"{self} has no bias (created with empty=True): set 'b' with setVar first")
        self._checkMatrix(shape, "Data", self.insize)

    def checkGradShape(self, shape):
        self._checkMatrix(shape, "Grad", self.outsize)
        super().checkGradShape(shape)

    @staticmethod
    def _checkMatrix(shape, what, size):
        if len(shape) != 2:
            raise ModuleError(f"{what} must be 2d matrix (got {len(shape)}d tensor of shape {tuple(shape)})")
        if shape[1] != size:
            raise ModuleError(f"Expected {size} {what.lower()} dimensions, {shape[1]} were given")

    def numOfFlops(self, shape):
        return 2 * shape[0] * self.insize * self.outsize
