"""The new layers chained in a Sequential with a convolution: gradients of the whole stack."""

import numpy as np

from PuzzleLib.Containers import Sequential
from PuzzleLib.Modules import (
    Activation,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dropout,
    Flatten,
    Identity,
    Linear,
    MaxPool2D,
    Reshape,
    SoftMax,
)
from PuzzleLib.Utils.GradCheck import checkGradients


def test_stack_gradient_check():
    np.random.seed(0)
    net = Sequential()
    net.append(Conv2D(2, 4, 3, pad=1))
    net.append(BatchNorm2D(4))
    net.append(Activation("elu"))
    net.append(MaxPool2D(2, 2))
    net.append(AvgPool2D(3, 1, 1, includePad=False))
    net.append(Dropout(0.0))
    net.append(Flatten())
    net.append(Linear(4 * 3 * 3, 6))
    net.append(Activation("tanh"))
    net.append(Reshape((0, 2, 3)))
    net.append(SoftMax())
    net.append(Identity())
    report = checkGradients(net, np.random.default_rng(0).standard_normal((3, 2, 6, 7)))
    assert {"input", "0.W", "0.b", "1.scale", "1.bias", "7.W", "7.b"} <= set(report)
    assert net(np.ones((3, 2, 6, 7), np.float32)).shape == (3, 2, 3)
