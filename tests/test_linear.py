"""Linear: forward against x W + b, gradients by finite differences, shapes, bad input."""

import numpy as np
import pytest
from conftest import assertSameState, snapshot

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Modules import Linear, ModuleError
from PuzzleLib.Utils.GradCheck import checkGradients
from PuzzleLib.Variable import Variable


def _randomBias(linear, rng):
    linear.b.set(rng.standard_normal(linear.b.shape).astype(np.float32))


@pytest.mark.parametrize("transpose", [False, True])
def test_forward_and_backward_match_numpy(transpose):
    rng = np.random.default_rng(1)
    linear = Linear(7, 4, transpose=transpose)
    _randomBias(linear, rng)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    dy = rng.standard_normal((5, 4)).astype(np.float32)

    W = linear.W.get().astype(np.float64)
    Wmat = W.T if transpose else W
    assert W.shape == ((4, 7) if transpose else (7, 4))

    y = linear(gpuarray.to_gpu(x))
    assert y.shape == (5, 4) and y.dtype == np.float32
    np.testing.assert_allclose(y.get(), x @ Wmat + linear.b.get(), rtol=1e-5, atol=1e-5)

    linear.backward(gpuarray.to_gpu(dy))
    np.testing.assert_allclose(linear.grad.get(), dy @ Wmat.T, rtol=1e-5, atol=1e-5)
    dW = x.T.astype(np.float64) @ dy
    np.testing.assert_allclose(linear.vars["W"].grad.get(), dW.T if transpose else dW, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(linear.vars["b"].grad.get(), dy.sum(axis=0), rtol=1e-5, atol=1e-5)


def test_param_grads_accumulate_with_scale_and_momentum():
    rng = np.random.default_rng(2)
    linear = Linear(3, 2)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    dy = rng.standard_normal((4, 2)).astype(np.float32)
    linear(x)
    old = rng.standard_normal((3, 2)).astype(np.float32)
    oldB = rng.standard_normal(2).astype(np.float32)
    linear.vars["W"].grad.set(old)
    linear.vars["b"].grad.set(oldB)
    linear.backward(dy, scale=0.5, momentum=0.25)
    np.testing.assert_allclose(linear.vars["W"].grad.get(), 0.5 * x.T @ dy + 0.25 * old, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(linear.vars["b"].grad.get(), 0.5 * dy.sum(0) + 0.25 * oldB, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("useBias", [True, False])
def test_gradient_check(transpose, useBias):
    rng = np.random.default_rng(3)
    linear = Linear(6, 3, useBias=useBias, transpose=transpose)
    if useBias:
        _randomBias(linear, rng)
    else:
        assert "b" not in linear.vars and linear.b is None
    report = checkGradients(linear, rng.standard_normal((4, 6)))
    assert set(report) == ({"input", "W", "b"} if useBias else {"input", "W"})


def test_shapes_and_init():
    np.random.seed(0)
    linear = Linear(10, 3)
    assert linear.W.shape == (10, 3) and linear.b.shape == (3,)
    assert linear.W.dtype == np.float32
    np.testing.assert_array_equal(linear.b.get(), 0)
    # xavier_uniform by default, fan-in 10: U(+-sqrt(3/10)), drawn from numpy's global generator.
    np.random.seed(0)
    expected = np.random.uniform(-np.sqrt(0.3), np.sqrt(0.3), size=(10, 3)).astype(np.float32)
    np.testing.assert_array_equal(linear.W.get(), expected)
    assert linear.dataShapeFrom((8, 10)) == (8, 3)
    assert linear.gradShapeFrom((8, 3)) == (8, 10)
    assert linear.numOfParams() == 33
    assert Linear(2, 5, transpose=True).b.shape == (5,)


def test_empty_then_setvar():
    linear = Linear(3, 2, empty=True)
    assert linear.vars == {} and linear.W is None
    with pytest.raises(ModuleError, match="no weights"):
        linear(np.zeros((1, 3), np.float32))
    with pytest.raises(ModuleError, match=r"\(3, 2\).*\(2, 3\)"):
        linear.setVar("W", Variable(np.zeros((2, 3), np.float32)))
    linear.setVar("W", Variable(np.ones((3, 2), np.float32)))
    linear.setVar("b", Variable(np.array([1, 2], np.float32)))
    np.testing.assert_array_equal(linear(np.ones((1, 3), np.float32)).get(), [[4, 5]])


@pytest.mark.parametrize("shape, message", [
    ((4, 5), "Expected 6 data dimensions, 5 were given"),
    ((4, 6, 1), r"Data must be 2d matrix \(got 3d"),
    ((6,), r"Data must be 2d matrix \(got 1d"),
])
def test_bad_data_leaves_state(shape, message):
    linear = Linear(6, 3)
    linear(np.ones((2, 6), np.float32))
    linear.backward(np.ones((2, 3), np.float32))
    before = snapshot(linear)
    with pytest.raises(ModuleError, match=message):
        linear(np.ones(shape, np.float32))
    assertSameState(linear, before)


@pytest.mark.parametrize("shape, message", [
    ((2, 4), "Expected 3 grad dimensions, 4 were given"),
    ((3, 3), r"Expected grad shape \(2, 3\), got \(3, 3\)"),
    ((2, 3, 1), "Grad must be 2d matrix"),
])
def test_bad_grad_leaves_state(shape, message):
    linear = Linear(6, 3)
    linear(np.ones((2, 6), np.float32))
    before = snapshot(linear)
    with pytest.raises(ModuleError, match=message):
        linear.backward(np.ones(shape, np.float32))
    assertSameState(linear, before)


def test_bad_dtype_and_constructor():
    linear = Linear(2, 2)
    with pytest.raises(ModuleError, match="Expected dtype .*float32.*got float64"):
        linear(np.ones((1, 2)))
    with pytest.raises(ValueError):
        Linear(2.5, 2)
    with pytest.raises(ValueError):
        Linear(2, 2, wscale="big")
    with pytest.raises(ModuleError, match="outsize must be at least 1 .got 0"):
        Linear(2, 0)


def test_setvar_refuses_wrong_dtype_and_keeps_state():
    linear = Linear(3, 2, empty=True)
    with pytest.raises(ModuleError, match="float32.*float64"):
        linear.setVar("W", Variable(np.zeros((3, 2), np.float64)))
    assert linear.vars == {} and linear.W is None
