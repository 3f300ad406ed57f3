"""Padding of 1-D and 2-D maps with a constant, a reflection or the edge value."""

import enum
import numbers

from PuzzleLib.Backend import Pad
from PuzzleLib.Modules.Module import SPATIAL_AXES, Module, ModuleError, checkInt


class PadMode(str, enum.Enum):
    constant = "constant"
    reflect = "reflect"
    edge = "edge"


class PadND(Module):
    def __init__(self, nd, pad, mode="constant", fillValue=None, name=None):
        super().__init__(name)
        self.nd = nd
        self.pad = self._parsePad(pad, nd)
        try:
            self.mode = PadMode(mode.value if isinstance(mode, PadMode) else mode)
        except ValueError:
            raise ModuleError(f"Pad mode must be one of {[m.value for m in PadMode]} (got {mode!r})") from None
        if fillValue is not None and not isinstance(fillValue, numbers.Real):
            raise ValueError(f"fillValue must be a number, got {type(fillValue).__name__}")
        self.fillValue = 0.0 if fillValue is None else fillValue

    @staticmethod
    def _parsePad(pad, nd):
        """An int, or 2*nd ints: (left, right) in 1-D, (top, bottom, left, right) in 2-D."""
        if isinstance(pad, (tuple, list)):
            if len(pad) != 2 * nd:
                raise ModuleError(f"pad must be an int or a tuple of {2 * nd} ints (got {len(pad)}: {tuple(pad)})")
            values = [checkInt(p, "pad", 0) for p in pad]
        else:
            values = [checkInt(pad, "pad", 0)] * (2 * nd)
        return tuple((values[2 * i], values[2 * i + 1]) for i in range(nd))

    def updateData(self, data):
        self.data = Pad.padNd(data, self.pad, self.mode.value, self.fillValue)

    def updateGrad(self, grad):
        self.grad = Pad.padNdBackward(grad, self.pad, self.mode.value)

    def dataShapeFrom(self, shape):
        return tuple(shape[:2]) + tuple(n + a + b for n, (a, b) in zip(shape[2:], self.pad))

    def gradShapeFrom(self, shape):
        return tuple(shape[:2]) + tuple(n - a - b for n, (a, b) in zip(shape[2:], self.pad))

    def checkDataShape(self, shape):
        self.checkRank(shape, self.nd + 2, "Data")
        if self.mode is PadMode.reflect:
            # A reflection without the edge needs a pad shorter than the map.
            for axis, n, (a, b) in zip(SPATIAL_AXES[self.nd], shape[2:], self.pad):
                if n <= max(a, b):
                    raise ModuleError(
                        f"Data maps {axis} is too small for reflect padding "
                        f"(got {n}, expected at least {max(a, b) + 1})"
                    )
        elif self.mode is PadMode.edge:
            for axis, n in zip(SPATIAL_AXES[self.nd], shape[2:]):
                if n < 1:
                    raise ModuleError(f"Data maps {axis} is too small for edge padding (got {n}, expected at least 1)")

    def checkGradShape(self, shape):
        self.checkRank(shape, self.nd + 2, "Grad")
        for axis, n, (a, b) in zip(SPATIAL_AXES[self.nd], shape[2:], self.pad):
            if n < a + b + 1:
                raise ModuleError(f"Grad maps {axis} is too small (got {n}, expected at least {a + b + 1})")
        super().checkGradShape(shape)
