"""Padding dispatch. ``pads``: one (before, after) pair per spatial axis."""

from PuzzleLib.Backend import getEngine
from PuzzleLib.Backend.gpuarray import GPUArray


def padNd(data, pads, mode="constant", fillValue=0.0):
    return GPUArray(getEngine().pad.forward(data.ary, pads, mode, fillValue))


def padNdBackward(grad, pads, mode="constant"):
    return GPUArray(getEngine().pad.backward(grad.ary, pads, mode))
