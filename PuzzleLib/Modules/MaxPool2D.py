"""2-D max pooling. With ``useMask`` the module also keeps ``mask``: for every output, the
flat (row * width + column) index into its input map of the element the maximum came from."""

from PuzzleLib.Backend import Pool
from PuzzleLib.Modules.PoolND import PoolND


class MaxPool2D(PoolND):
    def __init__(self, size=2, stride=2, pad=0, useMask=False, name=None):
        super().__init__(2, size, stride, pad, name)
        self.useMask = bool(useMask)
        self.mask = None

    def updateData(self, data):
        self.data, self.workspace = Pool.maxPoolNd(data, *self._params())
        self.mask = Pool.maxPoolNdMask(self.workspace, data.shape, *self._params()) if self.useMask else None

    def updateGrad(self, grad):
        self.grad = Pool.maxPoolNdBackward(grad, self.workspace, self.inData.shape, *self._params())

    def reset(self):
        super().reset()
        self.mask = None
