"""Dropout: in train mode each element is zeroed with probability p and the survivors are
scaled by 1 / (1 - p), with a fresh mask on every forward pass; the backward pass reuses
that mask. Identity in eval mode.

The mask comes from numpy's global generator (so ``np.random.seed`` reproduces it), or
from ``rng`` (a ``numpy.random.Generator`` or ``RandomState``) when given. ``slicing``
(a slice over the flattened data) drops elements in that part only. ``inplace``
overwrites the input (and, backwards, the gradient).
"""

import numbers

from PuzzleLib import Config
from PuzzleLib.Backend import ElementWise
from PuzzleLib.Modules.Module import Module, ModuleError


class Dropout(Module):
    def __init__(self, p=0.5, rng=None, slicing=None, inplace=False, name=None):
        super().__init__(name)
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise ValueError(f"p must be a number, got {type(p).__name__}")
        if not 0.0 <= p < 1.0:
            raise ModuleError(f"p must be in [0, 1) (got {p})")
        if rng is not None and not callable(getattr(rng, "random", None)):
            raise ValueError(f"rng must be a numpy Generator or RandomState, got {type(rng).__name__}")
        if slicing is not None and not isinstance(slicing, slice):
            raise ValueError(f"slicing must be a slice or None, got {type(slicing).__name__}")
        self.p = float(p)
        self.rng = rng
        self.slice = slicing
        self.inplace = bool(inplace)
        if self.inplace and Config.showWarnings:
            print(f"Warning: {self} is using inplace flag")
        self.mask = None

    def updateData(self, data):
        if self.train:
            self.mask = ElementWise.dropoutMask(data.shape, self.p, data.dtype, self.rng, self.slice)
            self.data = ElementWise.multiply(data, self.mask, self.inplace)
        else:
            self.mask = None
            self.data = data

    def updateGrad(self, grad):
        self.grad = grad if self.mask is None else ElementWise.multiply(grad, self.mask, self.inplace)

    def dataShapeFrom(self, shape):
        return tuple(shape)

    def gradShapeFrom(self, shape):
        return tuple(shape)

    def reset(self):
        super().reset()
        self.mask = None
