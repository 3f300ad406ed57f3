"""Shared base of the pooling modules: parameters, output shapes and checks.

``size``, ``stride`` and ``pad`` are an int or a tuple of one int per spatial axis;
``pad`` must be smaller than ``size`` so that no window lies entirely in the padding.
"""

from PuzzleLib.Modules.ConvND import ntuple
from PuzzleLib.Modules.Module import Module, ModuleError

_AXES = {1: ("size",), 2: ("height", "width"), 3: ("depth", "height", "width")}


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
        spatial = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(shape[2:], self.size, self.stride, self.pad))
        return tuple(shape[:2]) + spatial

    def gradShapeFrom(self, shape):
        spatial = tuple((n - 1) * s - 2 * p + k for n, k, s, p in zip(shape[2:], self.size, self.stride, self.pad))
        return tuple(shape[:2]) + spatial

    def checkDataShape(self, shape):
        self.checkRank(shape, self.nd + 2, "Data")
        for axis, n, k, p in zip(_AXES[self.nd], shape[2:], self.size, self.pad):
            if n + 2 * p < k:
                raise ModuleError(f"Data maps {axis} is too small (got {n + 2 * p}, expected at least {k})")

    def checkGradShape(self, shape):
        self.checkRank(shape, self.nd + 2, "Grad")
        super().checkGradShape(shape)

    def reset(self):
        super().reset()
        self.workspace = None
