"""SoftMax over axis 1: forward against numpy, gradient check, bad input."""

import numpy as np
import pytest
from conftest import assertSameState, snapshot

from PuzzleLib.Modules import ModuleError, SoftMax
from PuzzleLib.Utils.GradCheck import checkGradients


def reference(x):
    e = np.exp(x.astype(np.float64))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("shape", [(4, 7), (2, 5, 3, 3), (3, 4, 2)])
def test_forward_backward(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    sm = SoftMax()
    y = sm(x)
    assert y.shape == shape and y.dtype == np.float32
    expected = reference(x)
    np.testing.assert_allclose(y.get(), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y.get().sum(axis=1), 1, rtol=1e-5)
    dy = rng.standard_normal(shape).astype(np.float32)
    sm.backward(dy)
    # Jacobian of softmax: diag(s) - s s^T along axis 1.
    expectedGrad = expected * (dy - (dy * expected).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(sm.grad.get(), expectedGrad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 6), (2, 4, 2, 3)])
def test_gradient_check(shape):
    checkGradients(SoftMax(), np.random.default_rng(1).standard_normal(shape))


def test_large_logits_are_stable():
    x = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]], np.float32)
    y = SoftMax()(x).get()
    np.testing.assert_allclose(y, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6, atol=1e-30)


def test_bad_inputs():
    sm = SoftMax()
    sm(np.ones((2, 3), np.float32))
    sm.backward(np.ones((2, 3), np.float32))
    before = snapshot(sm)
    with pytest.raises(ModuleError, match=r"Data must be at least 2d tensor \(got 1d"):
        sm(np.ones(3, np.float32))
    with pytest.raises(ModuleError, match="Expected dtype .*float32.*got float64"):
        sm(np.ones((2, 3)))
    with pytest.raises(ModuleError, match=r"Expected grad shape \(2, 3\), got \(2, 4\)"):
        sm.backward(np.ones((2, 4), np.float32))
    assertSameState(sm, before)
