"""A trainable tensor: its data, its gradient and how it is updated."""

import numpy as np

from PuzzleLib import Config
from PuzzleLib.Backend import Blas, gpuarray
from PuzzleLib.Backend.gpuarray import GPUArray


class Variable:
    def __init__(self, data, name=None, withgrad=True, grad=None, updater=None, postUpdater=None):
        if not isinstance(data, GPUArray):
            if not isinstance(data, np.ndarray):
                raise ValueError(f"Variable data must be a GPUArray or a numpy array, got {type(data).__name__}")
            data = gpuarray.to_gpu(data)
        if grad is not None and not isinstance(grad, GPUArray):
            grad = gpuarray.to_gpu(np.asarray(grad))
        if grad is not None and (grad.shape != data.shape or grad.dtype != data.dtype):
            raise ValueError(
                f"Variable grad must match data: data is {data.shape} {data.dtype}, "
                f"grad is {grad.shape} {grad.dtype}"
            )

        self.data = data
        self.name = name
        self.updater = updater
        self.postUpdater = postUpdater

        # Whether the variable is trained: under globalEvalMode it gets its grad later (Module.trainMode).
        self.withgrad = bool(withgrad) or grad is not None
        if grad is None and withgrad and not Config.globalEvalMode:
            grad = gpuarray.zeros_like(data)
        self.grad = grad

        # Per-variable multipliers of the optimizer's learning and momentum rates,
        # and the weight-decay coefficient used by the WeightDecay hook.
        self.learnRate = 1.0
        self.momRate = 1.0
        self.wc = 0.0

    @property
    def hasUpdater(self):
        return self.updater is not None

    @property
    def hasPostUpdater(self):
        return self.postUpdater is not None

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def ensureGrad(self):
        """Give a trained variable that has no gradient array (made under globalEvalMode) a zeroed one."""
        if self.grad is None and self.withgrad:
            self.grad = gpuarray.zeros_like(self.data)

    def update(self, learnRate):
        """Apply one step: the custom updater if any, else data += learnRate * grad."""
        if self.updater is not None:
            self.updater(self, learnRate)
        else:
            Blas.toVectorAddVector(self.data, self.grad, alpha=learnRate)
        if self.postUpdater is not None:
            self.postUpdater(self)

    def set(self, other):
        self.data.set(other.data if isinstance(other, Variable) else other)

    def __repr__(self):
        return f"Variable(name={self.name!r}, shape={self.data.shape}, dtype={self.data.dtype})"
