"""2-D average pooling. Padding counts as zeros; with ``includePad=False`` each window is
divided by the number of real (non-padding) elements it covers instead of its full size."""

from PuzzleLib.Backend import Pool
from PuzzleLib.Modules.PoolND import PoolND


class AvgPool2D(PoolND):
    def __init__(self, size=2, stride=2, pad=0, includePad=True, name=None):
        super().__init__(2, size, stride, pad, name)
        self.includePad = bool(includePad)

    def updateData(self, data):
        self.data = Pool.avgPoolNd(data, *self._params(), includePad=self.includePad)

    def updateGrad(self, grad):
        self.grad = Pool.avgPoolNdBackward(grad, self.inData.shape, *self._params(), includePad=self.includePad)
