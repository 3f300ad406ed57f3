"""Shared base of the pooling modules: parameters, output shapes and checks.

``size``, ``stride`` and ``pad`` are an int or a tuple of one int per spatial axis;
``pad`` must be smaller than ``size`` so that no window lies entirely in the padding.
"""

from PuzzleLib.Modules.Module import Module, ModuleError, ntuple, windowInShape, windowOutShape


class PoolND(Module):
    def __init__(self, nd, size=2, stride=2, pad=0, name=None):
        super().__init__(name)
        self.nd = nd
        self.size = ntuple(size, nd, "size", 1)
        self.stride = ntuple(stride, nd, "stride", 1)
        self.pad = ntuple(pad, nd, "pad", 0)
        for k, p in zip(self.size, self.pad):
            if p >= k:
                raise ModuleError(f"pad must be smaller than size (got pad {self.pad}, size {self.size})")
        self.workspace = None

    def _params(self):
        return self.size, self.stride, self.pad

    def dataShapeFrom(self, shape):
        return tuple(shape[:2]) + windowOutShape(shape[2:], self.size, self.stride, self.pad)

    def gradShapeFrom(self, shape):
        return tuple(shape[:2]) + windowInShape(shape[2:], self.size, self.stride, self.pad)

    def checkDataShape(self, shape):
        self.checkRank(shape, self.nd + 2, "Data")
        self.checkWindowFits(shape, self.size, self.pad)

    def checkGradShape(self, shape):
        self.checkRank(shape, self.nd + 2, "Grad")
        super().checkGradShape(shape)

    def reset(self):
        super().reset()
        self.workspace = None
