"""Finite-difference gradient checks in float64 (PuzzleLib.Utils.GradCheck) of the convolutions, pads and chains."""

import numpy as np
import pytest

from PuzzleLib.Containers import Sequential
from PuzzleLib.Modules import Conv1D, Conv2D, Conv3D, Pad1D, Pad2D
from PuzzleLib.Utils.GradCheck import GradientCheckError, checkGradients

CASES = [
    (Conv1D, dict(inmaps=3, outmaps=4, size=3), (2, 3, 9)),
    (Conv1D, dict(inmaps=4, outmaps=2, size=2, stride=3, pad=2, dilation=2, groups=2), (3, 4, 10)),
    (Conv1D, dict(inmaps=3, outmaps=3, size=5, groups=3, useBias=False), (2, 3, 5)),
    (Conv2D, dict(inmaps=2, outmaps=3, size=3, pad=1), (2, 2, 5, 6)),
    (Conv2D, dict(inmaps=4, outmaps=6, size=(2, 3), stride=(2, 3), pad=(1, 0), dilation=(2, 1), groups=2),
     (2, 4, 7, 8)),
    (Conv2D, dict(inmaps=3, outmaps=6, size=3, stride=2, groups=3, useBias=False), (2, 3, 6, 5)),
    (Conv2D, dict(inmaps=2, outmaps=2, size=(5, 4), pad=(1, 0)), (2, 2, 3, 4)),       # kernel = padded map
    (Conv2D, dict(inmaps=3, outmaps=2, size=1, stride=2), (2, 3, 5, 4)),
    (Conv3D, dict(inmaps=2, outmaps=2, size=2, stride=(1, 2, 1), pad=(0, 1, 1)), (2, 2, 3, 4, 3)),
    (Conv3D, dict(inmaps=4, outmaps=4, size=(2, 1, 3), dilation=(1, 1, 2), groups=4), (1, 4, 3, 2, 6)),
]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_conv_gradients_finite_differences(index):
    cls, kwargs, shape = CASES[index]
    np.random.seed(index)
    conv = cls(**kwargs)
    if conv.b is not None:
        # Non-zero bias so its gradient is checked at a generic point.
        conv.b.set(np.random.standard_normal(conv.b.shape).astype(np.float32))
    data = np.random.default_rng(index).standard_normal(shape)
    report = checkGradients(conv, data, rtol=1e-6, maxChecks=32, seed=index)
    assert set(report) == {"input", "W"} | ({"b"} if kwargs.get("useBias", True) else set())
    # The check leaves the module in float32, as it was.
    assert conv.W.dtype == np.float32 and conv.calctype == np.float32
    assert conv.vars["W"].grad.dtype == np.float32


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_gradients_finite_differences(mode):
    data2 = np.random.default_rng(0).standard_normal((2, 2, 4, 5))
    checkGradients(Pad2D((1, 2, 3, 0), mode=mode, fillValue=0.5 if mode == "constant" else None), data2, rtol=1e-6)
    data1 = np.random.default_rng(1).standard_normal((2, 3, 5))
    checkGradients(Pad1D((3, 1), mode=mode), data1, rtol=1e-6)


def test_sequential_gradients_finite_differences():
    np.random.seed(3)
    seq = Sequential()
    seq.append(Pad2D((1, 0, 2, 1), mode="reflect"))
    seq.append(Conv2D(2, 4, 3, stride=(1, 2), groups=2))
    seq.append(Conv2D(4, 3, (2, 1), dilation=(2, 1)))
    report = checkGradients(seq, np.random.default_rng(3).standard_normal((2, 2, 6, 7)), rtol=1e-6, maxChecks=24)
    assert {"input", "1.W", "1.b", "2.W", "2.b"} <= set(report)


def test_gradient_check_catches_a_wrong_gradient():
    """Guard: the checker used above does fail on a slightly wrong input gradient."""

    class Skewed(Conv2D):
        def updateGrad(self, grad):
            super().updateGrad(grad)
            self.grad *= 1.001

    np.random.seed(0)
    with pytest.raises(GradientCheckError):
        checkGradients(Skewed(2, 2, 3), np.random.default_rng(0).standard_normal((1, 2, 5, 5)), rtol=1e-6)
