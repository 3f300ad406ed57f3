"""The batch loop shared by Trainer, Validator and Calculator, as in PuzzleLib.

``handle(data)`` cuts device data (GPUArrays, or a list of them for several inputs) into
batches of ``batchsize`` along axis 0 and calls ``handleBatch`` on each, in a random
batch order when asked. ``handleFromHost(data)`` does the same for host (numpy) data,
copying it to the device one macro-batch at a time. The last batch (and macro-batch)
may be smaller; every data size works.

Progress: a tqdm bar over all the batches of a run, with the running error, shown when
``progress`` is True, or when it is None (the default) for runs of at least
``progressMinBatches`` batches written to a terminal. ``progress=False`` (or
``Handler.defaultProgress = False`` for every handler) turns it off. Without tqdm
installed there is never a bar.
"""

import numbers
import sys

import numpy as np

from PuzzleLib.Backend import gpuarray


class Handler:
    # The progress setting used when a handler is built with progress=None.
    defaultProgress = None
    progressMinBatches = 10

    def __init__(self, mod, onBatchFinish=None, batchsize=128, progress=None):
        if isinstance(batchsize, bool) or not isinstance(batchsize, numbers.Integral) or batchsize < 1:
            raise ValueError(f"batchsize must be a positive int, got {batchsize!r}")
        if onBatchFinish is not None and not callable(onBatchFinish):
            raise ValueError(f"onBatchFinish must be callable or None, got {type(onBatchFinish).__name__}")
        self.module = mod
        self.batchsize = int(batchsize)
        self.onBatchFinish = onBatchFinish
        self.progress = progress

        self.currBatch = 0
        self.totalBatches = 0
        self.currMacroBatch = 0
        self.totalMacroBatches = 0
        self._bar = None

    # -- loops ------------------------------------------------------------------------------------
    def handle(self, data, state=None, random=True):
        datasize = self.getDataSize(data)
        self.totalBatches = _batchCount(datasize, self.batchsize)
        ownBar = self._bar is None
        if ownBar:
            self._bar = self._openBar(self.totalBatches)
        try:
            for i, n in enumerate(_order(self.totalBatches, random)):
                batch = self.sliceData(data, n, self.batchsize, postSlice=lambda ary: ary)
                self.currBatch = i + 1
                self.handleBatch(batch, n, state)
                self.module.reset()
                self._advanceBar(state)
                if self.onBatchFinish is not None:
                    self.onBatchFinish(self)
        finally:
            if ownBar:
                self._closeBar()

    def handleFromHost(self, data, state=None, macroBatchSize=10000, onMacroBatchFinish=None, random=True):
        if isinstance(macroBatchSize, bool) or not isinstance(macroBatchSize, numbers.Integral) or macroBatchSize < 1:
            raise ValueError(f"macroBatchSize must be a positive int, got {macroBatchSize!r}")
        datasize = self.getDataSize(data)
        self.totalMacroBatches = _batchCount(datasize, macroBatchSize)
        sizes = [min(macroBatchSize, datasize - n * macroBatchSize) for n in range(self.totalMacroBatches)]

        self._bar = self._openBar(sum(_batchCount(size, self.batchsize) for size in sizes))
        try:
            for i, n in enumerate(_order(self.totalMacroBatches, random)):
                macroBatch = self.sliceData(data, n, macroBatchSize, postSlice=gpuarray.to_gpu)
                self.currMacroBatch = i + 1
                self.onMacroBatchStart(n, macroBatchSize, state)
                self.handle(macroBatch, state, random=random)
                self.onMacroBatchFinish(n, macroBatchSize, state)
                if onMacroBatchFinish is not None:
                    onMacroBatchFinish(self)
        finally:
            self._closeBar()

    def handleBatch(self, batch, idx, state):
        raise NotImplementedError(f"{type(self).__name__} does not implement handleBatch")

    def onMacroBatchStart(self, idx, macroBatchSize, state):
        pass

    def onMacroBatchFinish(self, idx, macroBatchSize, state):
        pass

    # -- data trees (an array, or a list of data trees) --------------------------------------------------
    @classmethod
    def getDataSize(cls, data):
        """The common number of samples (axis 0) of every array in the tree."""
        sizes = {leaf.shape[0] for leaf in _leaves(data)}
        if not sizes:
            raise ValueError("Expected at least one data array, got an empty list")
        if len(sizes) > 1:
            raise ValueError(f"Expected every data array to hold the same number of samples, got {sorted(sizes)}")
        size = sizes.pop()
        if size == 0:
            raise ValueError("Expected at least one sample, got 0")
        return size

    @classmethod
    def sliceData(cls, data, idx, batchsize, postSlice):
        if isinstance(data, (list, tuple)):
            return [cls.sliceData(part, idx, batchsize, postSlice) for part in data]
        return postSlice(data[idx * batchsize:(idx + 1) * batchsize])

    # -- progress ------------------------------------------------------------------------------------
    def progressInfo(self, state):
        """Text shown after the bar (e.g. the running error); empty by default."""
        return ""

    def _wantsBar(self, total):
        progress = self.progress if self.progress is not None else Handler.defaultProgress
        if progress is None:
            return total >= self.progressMinBatches and _isTerminal(sys.stderr)
        return bool(progress)

    def _openBar(self, total):
        if not self._wantsBar(total):
            return None
        tqdm = _tqdm()
        if tqdm is None:
            return None
        return tqdm(total=total, desc=type(self).__name__, leave=False, dynamic_ncols=True)

    def _advanceBar(self, state):
        if self._bar is not None:
            info = self.progressInfo(state)
            if info:
                self._bar.set_postfix_str(info, refresh=False)
            self._bar.update(1)

    def _closeBar(self):
        if self._bar is not None:
            self._bar.close()
        self._bar = None


def _batchCount(size, batchsize):
    return (size + batchsize - 1) // batchsize


def _order(count, random):
    return np.random.permutation(count) if random else range(count)


def _leaves(data):
    if isinstance(data, (list, tuple)):
        for part in data:
            yield from _leaves(part)
    else:
        yield data


def _isTerminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _tqdm():
    """tqdm's bar class, or None when tqdm is not installed (it is optional)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm

