"""Pad1D and Pad2D: forward against numpy's pad, backward against an index-map adjoint (tests/reference.py)."""

import numpy as np
import pytest
from reference import padBackward, padForward

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Modules import Pad1D, Pad2D, PadMode

MODES = ["constant", "reflect", "edge"]


def pairs(pad, nd):
    """The module's pad argument as one (before, after) pair per spatial axis."""
    flat = (pad,) * (2 * nd) if isinstance(pad, int) else pad
    return tuple((flat[2 * i], flat[2 * i + 1]) for i in range(nd))


def check(cls, nd, pad, mode, spatial, fillValue=None, seed=0):
    rng = np.random.default_rng(seed)
    module = cls(pad, mode=mode, fillValue=fillValue)
    x = rng.standard_normal((2, 3) + spatial).astype(np.float32)
    y = module(gpuarray.to_gpu(x))
    width = pairs(pad, nd)
    expected = padForward(x, width, mode, 0.0 if fillValue is None else fillValue)
    assert y.shape == expected.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y.get(), expected.astype(np.float32))
    assert module.dataShapeFrom(x.shape) == expected.shape
    assert module.gradShapeFrom(expected.shape) == x.shape

    dy = rng.standard_normal(y.shape).astype(np.float32)
    module.backward(gpuarray.to_gpu(dy))
    dx = padBackward(dy, x.shape, width, mode)
    assert module.grad.shape == x.shape and module.grad.dtype == np.float32
    np.testing.assert_allclose(module.grad.get(), dx, rtol=1e-5, atol=1e-5)


PADS_2D = [0, 1, 2, (1, 0, 0, 2), (0, 3, 2, 0), (2, 1, 3, 1), (0, 0, 0, 0), (4, 4, 1, 1)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pad", PADS_2D, ids=str)
def test_pad2d(mode, pad):
    check(Pad2D, 2, pad, mode, (5, 7))


PADS_1D = [0, 1, 3, (2, 0), (0, 4), (1, 3), (5, 5)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pad", PADS_1D, ids=str)
def test_pad1d(mode, pad):
    check(Pad1D, 1, pad, mode, (6,))


@pytest.mark.parametrize("mode", ["constant", "edge"])
def test_pad_larger_than_map(mode):
    """constant and edge have no limit on the pad; a 1-element map is padded by replication."""
    check(Pad2D, 2, (3, 4, 5, 2), mode, (1, 2))
    check(Pad1D, 1, (7, 6), mode, (1,))


def test_reflect_largest_pad():
    """reflect needs pad < map size on each side: map 4 takes pad 3 at most."""
    check(Pad2D, 2, (3, 3, 2, 3), "reflect", (4, 4))
    check(Pad1D, 1, (3, 3), "reflect", (4,))


@pytest.mark.parametrize("fillValue", [1.5, -3.0, 0])
def test_fill_value(fillValue):
    check(Pad2D, 2, (1, 2, 0, 1), "constant", (3, 4), fillValue=fillValue)
    pad = Pad2D(1, fillValue=fillValue)
    y = pad(np.zeros((1, 1, 1, 1), np.float32)).get()
    assert y[0, 0, 0, 0] == np.float32(fillValue) and y.dtype == np.float32


def test_reflect_is_numpys_not_symmetric():
    y = Pad1D((2, 2), mode="reflect")(np.array([[[1, 2, 3]]], np.float32)).get()
    np.testing.assert_array_equal(y, [[[3, 2, 1, 2, 3, 2, 1]]])
    y = Pad1D((2, 1), mode="edge")(np.array([[[1, 2, 3]]], np.float32)).get()
    np.testing.assert_array_equal(y, [[[1, 1, 1, 2, 3, 3]]])


def test_modes_accept_enum():
    assert Pad2D(1, mode=PadMode.reflect).mode == PadMode.reflect
    assert Pad2D(1).mode == PadMode.constant


def test_random_pads_both_dims():
    rng = np.random.default_rng(11)
    for seed in range(40):
        nd = int(rng.integers(1, 3))
        mode = MODES[seed % 3]
        spatial = tuple(int(s) for s in rng.integers(1, 8, size=nd))
        limit = min(spatial) if mode == "reflect" else 6
        pad = tuple(int(p) for p in rng.integers(0, limit, size=2 * nd))
        check(Pad1D if nd == 1 else Pad2D, nd, pad, mode, spatial, seed=seed)


def test_backward_modes_and_blueprint():
    pad = Pad2D((1, 2, 3, 4), mode="edge", name="p")
    x = np.ones((1, 1, 3, 3), np.float32)
    y = pad(x)
    pad.backward(np.ones(y.shape, np.float32), updGrad=False)
    assert pad.grad is None
    pad.backward(np.ones(y.shape, np.float32))
    # Every padded element adds to one input element: the input gradient sums to the output's size.
    assert float(pad.grad.get().sum()) == y.size
    assert pad.numOfParams() == 0
    assert pad.getBlueprint()["scheme"]["pad"] == (1, 2, 3, 4)
    assert pad.getBlueprint()["classname"] == "Pad2D"
