"""Runs a module (in eval mode) over data of any size and gathers its outputs."""

import numpy as np

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Handlers.Handler import Handler


class Calculator(Handler):
    def __init__(self, mod, onBatchFinish=None, batchsize=128, progress=None):
        super().__init__(mod, onBatchFinish, batchsize, progress)

    def calc(self, data):
        """The module's outputs for device data, as device arrays (a list for several outputs)."""
        state = {"devSize": self.getDataSize(data), "devData": None}
        self.module.evalMode()
        self.handle(data, state, random=False)
        return state["devData"]

    def calcFromHost(self, data, macroBatchSize=10000, onMacroBatchFinish=None):
        """The module's outputs for host data, as numpy arrays (a list for several outputs)."""
        state = {"hostSize": self.getDataSize(data), "hostData": None, "devData": None}
        self.module.evalMode()
        self.handleFromHost(data, state, macroBatchSize, onMacroBatchFinish, random=False)
        return state["hostData"]

    def onMacroBatchStart(self, idx, macroBatchSize, state):
        # The last macro-batch may be smaller than the others.
        state["devSize"] = min(macroBatchSize, state["hostSize"] - idx * macroBatchSize)
        state["devData"] = None

    def onMacroBatchFinish(self, idx, macroBatchSize, state):
        if state["hostData"] is None:
            state["hostData"] = _mapTree(
                state["devData"], lambda out: np.empty((state["hostSize"],) + out.shape[1:], dtype=out.dtype)
            )
        start = idx * macroBatchSize

        def store(out, host):
            host[start:start + out.shape[0]] = out.get()

        _zipTree(state["devData"], state["hostData"], store)
        state["devData"] = None

    def handleBatch(self, batch, idx, state):
        outBatch = self.module(batch)
        if state["devData"] is None:
            state["devData"] = _mapTree(
                outBatch, lambda out: gpuarray.empty((state["devSize"],) + out.shape[1:], dtype=out.dtype)
            )
        start = idx * self.batchsize

        def store(out, dev):
            dev[start:start + out.shape[0]] = out

        _zipTree(outBatch, state["devData"], store)


def _mapTree(tree, fn):
    if isinstance(tree, (list, tuple)):
        return [_mapTree(part, fn) for part in tree]
    return fn(tree)


def _zipTree(tree, other, fn):
    if isinstance(tree, (list, tuple)):
        for part, otherPart in zip(tree, other, strict=True):
            _zipTree(part, otherPart, fn)
    else:
        fn(tree, other)
