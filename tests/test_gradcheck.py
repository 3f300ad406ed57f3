"""The public gradient checker: it passes correct gradients, catches wrong ones, and leaves modules as they were."""

import numpy as np
import pytest

from PuzzleLib.Containers import Sequential
from PuzzleLib.Modules import Conv1D, Conv2D
from PuzzleLib.Utils.GradCheck import GradientCheckError, checkGradients, gradientCheck
from PuzzleLib.Variable import Variable


def test_correct_conv_gradients_pass_with_float64_precision():
    np.random.seed(1)
    report = checkGradients(Conv2D(3, 4, 3, stride=2, pad=1, groups=1), np.random.randn(2, 3, 6, 7))
    assert set(report) == {"input", "W", "b"}
    assert all(r["relError"] < 1e-7 for r in report.values())


@pytest.mark.parametrize("target", ["grad", "W"])
def test_a_wrong_gradient_is_caught(target):
    np.random.seed(2)
    conv = Conv1D(2, 3, 3)
    if target == "grad":
        original = conv.updateGrad

        def skewed(grad):
            original(grad)
            conv.grad = conv.grad * 1.001

        conv.updateGrad = skewed
    else:
        original = conv.accGradParams

        def skewed(grad, scale=1.0, momentum=0.0):
            original(grad, scale, momentum)
            conv.vars["W"].grad *= 1.001

        conv.accGradParams = skewed
    with pytest.raises(GradientCheckError, match="input" if target == "grad" else "W"):
        checkGradients(conv, np.random.randn(2, 2, 9))


def test_module_is_restored_after_the_check():
    np.random.seed(3)
    conv = Conv2D(2, 2, 2)
    W, wvar = conv.W, conv.vars["W"]
    before = W.get()
    gradientCheck(conv, np.random.randn(1, 2, 4, 4))
    assert conv.W is W and conv.vars["W"] is wvar and wvar.data is W
    assert conv.W.dtype == np.float32 and wvar.grad.dtype == np.float32
    assert np.array_equal(conv.W.get(), before)
    assert conv.calctype == np.float32
    assert conv.data is None and conv.inData is None


def test_container_with_a_shared_variable():
    np.random.seed(4)
    first, second = Conv2D(2, 2, 3, pad=1), Conv2D(2, 2, 3, pad=1)
    shared = Variable(np.random.randn(2, 2, 3, 3).astype(np.float32))
    first.setVar("W", shared)
    second.setVar("W", shared)
    seq = Sequential().append(first).append(second)
    report = checkGradients(seq, np.random.randn(1, 2, 5, 5))
    assert "0.W" in report and report["0.W"]["relError"] < 1e-7
    assert first.W is shared.data and second.W is shared.data and shared.data.dtype == np.float32


def test_eval_mode_checks_only_the_input():
    conv = Conv2D(1, 1, 2)
    conv.evalMode()
    assert set(gradientCheck(conv, np.random.randn(1, 1, 3, 3))) == {"input"}
