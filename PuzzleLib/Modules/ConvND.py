"""N-dimensional convolution (cross-correlation) with groups, stride, padding and dilation."""

import math
import numbers

from PuzzleLib import Config
from PuzzleLib.Backend import Dnn, gpuarray
from PuzzleLib.Modules.Module import (
    SPATIAL_AXES,
    Module,
    ModuleError,
    checkInt,
    ntuple,
    windowInShape,
    windowOutShape,
)
from PuzzleLib.Variable import Variable


class ConvND(Module):
    def __init__(self, nd, inmaps, outmaps, size, stride=1, pad=0, dilation=1, wscale=1.0, useBias=True,
                 name=None, initscheme=None, empty=False, groups=1):
        super().__init__(name)
        nd = checkInt(nd, "nd")
        if nd not in SPATIAL_AXES:
            raise ModuleError(f"Convolution must be 1d, 2d or 3d (got {nd}d)")
        inmaps, outmaps, groups = (checkInt(inmaps, "inmaps", 1), checkInt(outmaps, "outmaps", 1),
                                   checkInt(groups, "groups", 1))
        if inmaps % groups != 0 or outmaps % groups != 0:
            raise ModuleError(
                "Number of input and output maps must be divisible by number of groups "
                f"({inmaps} inmaps, {outmaps} outmaps, {groups} groups)"
            )
        if not isinstance(wscale, numbers.Real):
            raise ValueError(f"wscale must be a number, got {type(wscale).__name__}")

        self.nd = nd
        self.inmaps, self.outmaps, self.groups = inmaps, outmaps, groups
        self.size = ntuple(size, nd, "size", 1)
        self.stride = ntuple(stride, nd, "stride", 1)
        self.pad = ntuple(pad, nd, "pad", 0)
        self.dilation = ntuple(dilation, nd, "dilation", 1)
        self.useBias = bool(useBias)
        self.wscale = wscale
        self.fwdAlgo = self.bwdDataAlgo = self.bwdFilterAlgo = None
        self._checkedShape = self._checkedGradShapes = None
        self._plan = self._planKey = None

        self.W = None
        self.b = None
        if empty:
            return

        W = self.createTensorWithScheme(initscheme, self.wshape, wscale)
        self.setVar("W", Variable(gpuarray.empty(self.wshape) if W is None else gpuarray.to_gpu(W)))
        if self.useBias:
            self.setVar("b", Variable(gpuarray.zeros(self.bshape)))

    @property
    def wshape(self):
        return (self.outmaps, self.inmaps // self.groups) + self.size

    @property
    def bshape(self):
        return (1, self.outmaps) + (1,) * self.nd

    def paramShapes(self):
        return {"W": self.wshape, "b": self.bshape}

    # -- compute --------------------------------------------------------------------------------
    def _params(self):
        return dict(stride=self.stride, pad=self.pad, dilation=self.dilation, groups=self.groups)

    def updateData(self, data):
        # The forward's dispatch is planned once per input shape, dtype, kernel shape, algorithm and backend:
        # most of a small call's cost (the page example through the module: 4.7 -> 3.7 us a call; the best of 3
        # loops of 100000 calls, one process).
        key = (data.shape, data.dtype, self.W.shape, self.fwdAlgo, Config.backend)
        if key != self._planKey:
            self._plan = Dnn.convNdPlan(data.shape, data.dtype, self.W.shape, self.stride, self.pad, self.dilation,
                                        self.groups, self.fwdAlgo)
            self._planKey = key
        self.data = self._plan(data, self.W, self.b)

    def updateGrad(self, grad):
        # Positional arguments: this is per-call overhead on small inputs (the page example).
        self.grad = Dnn.convNdBackwardData(grad, self.W, self.inData, self.stride, self.pad, self.dilation,
                                           self.groups, self.bwdDataAlgo)

    def accGradParams(self, grad, scale=1.0, momentum=0.0):
        wvar, bvar = self.vars["W"], self.vars.get("b")
        Dnn.convNdBackwardParams(
            self.inData, grad, self.W, self.b, self.stride, self.pad, self.dilation, self.groups,
            wgrad=wvar.grad, bgrad=None if bvar is None else bvar.grad, scale=scale, momentum=momentum,
            algo=self.bwdFilterAlgo,
        )

    def optimizeForShape(self, shape, memlimit=None):
        """Time the engine's algorithms for inputs of this shape; keep per direction the fastest whose
        workspace fits ``memlimit`` bytes (None: any), never one measured slower than the default choice
        (with nothing fitting, the one with the smallest workspace). The choice is used by every later call;
        the timing leaves no memory held."""
        shape = tuple(shape)
        self.checkDataShape(shape)
        self.fwdAlgo, self.bwdDataAlgo, self.bwdFilterAlgo = (
            Dnn.optimizeConvAlgorithm(direction, shape, self.wshape, **self._params(), dtype=self.calctype,
                                      memlimit=memlimit, withBias=self.useBias)
            for direction in (Dnn.FORWARD, Dnn.BACKWARD_DATA, Dnn.BACKWARD_PARAMS)
        )

    # -- shapes ---------------------------------------------------------------------------------
    def dataShapeFrom(self, shape):
        return (shape[0], self.outmaps) + windowOutShape(shape[2:], self.size, self.stride, self.pad, self.dilation)

    def gradShapeFrom(self, shape):
        return (shape[0], self.inmaps) + windowInShape(shape[2:], self.size, self.stride, self.pad, self.dilation)

    def checkDataShape(self, shape):
        if self.W is None:
            raise ModuleError(f"{self} has no weights (created with empty=True): set 'W' with setVar first")
        # What the checks read (maps, kernel size, pad, dilation) is fixed at construction, so a shape that
        # passed once passes again: skip the work on repeated calls (it is most of a small call's cost).
        if shape == self._checkedShape:
            return
        self.checkRank(shape, self.nd + 2, "Data")
        if shape[1] != self.inmaps:
            raise ModuleError(f"Data has {shape[1]} maps (expected: {self.inmaps})")
        self.checkWindowFits(shape, self.size, self.pad, self.dilation)
        self._checkedShape = shape

    def checkGradShape(self, shape):
        # As in checkDataShape: a (grad, input) shape pair accepted once is accepted again.
        pair = (shape, self.inData.shape if self.inData is not None else None)
        if pair == self._checkedGradShapes:
            return
        self.checkRank(shape, self.nd + 2, "Grad")
        if shape[1] != self.outmaps:
            raise ModuleError(f"Grad has {shape[1]} maps (expected: {self.outmaps})")
        super().checkGradShape(shape)
        self._checkedGradShapes = pair


    def numOfFlops(self, shape):
        """Multiply-adds of one forward pass on input of this shape, times two."""
        out = self.dataShapeFrom(shape)
        return 2 * math.prod(out) * (self.inmaps // self.groups) * math.prod(self.size)
