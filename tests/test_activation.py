"""Activation: every function against a float64 numpy formula, gradients by finite differences."""

import numpy as np
import pytest
from conftest import assertSameState, snapshot

import PuzzleLib.Modules as Modules
from PuzzleLib import Config
from PuzzleLib.Modules import Activation, ActivationType, ModuleError
from PuzzleLib.Utils.GradCheck import checkGradients

# Reference formulas in terms of the input x, and their derivatives.
REFERENCE = {
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0),
    "leakyRelu": (lambda x: np.where(x > 0, x, 0.01 * x), lambda x: np.where(x > 0, 1.0, 0.01)),
    "elu": (lambda x: np.where(x > 0, x, np.exp(x) - 1), lambda x: np.where(x > 0, 1.0, np.exp(x))),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    "tanh": (np.tanh, lambda x: 1 / np.cosh(x) ** 2),
    "softPlus": (lambda x: np.log(1 + np.exp(x)), lambda x: 1 / (1 + np.exp(-x))),
    "clip": (lambda x: np.clip(x, 0, 6), lambda x: ((x > 0) & (x < 6)) * 1.0),
}


def _data(shape=(3, 4, 5), seed=0):
    # Spread over [-8, 8] so that clip's upper bound and the saturating tails are exercised.
    return (np.random.default_rng(seed).standard_normal(shape) * 4).astype(np.float32)


@pytest.mark.parametrize("kind", sorted(REFERENCE))
def test_forward_and_backward_match_formula(kind):
    x = _data()
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    act = Activation(kind)
    y = act(x)
    assert y.shape == x.shape and y.dtype == np.float32
    f, df = REFERENCE[kind]
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y.get(), f(x64), rtol=1e-5, atol=1e-6)
    act.backward(dy)
    np.testing.assert_allclose(act.grad.get(), dy * df(x64), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(act.inData.get(), x)


@pytest.mark.parametrize("kind", sorted(REFERENCE))
def test_gradient_check(kind):
    x = np.random.default_rng(2).standard_normal((2, 3, 4)) * 3
    # Keep finite differences away from the kinks at 0 (and 6 for clip).
    x = np.where(np.abs(x) < 1e-3, 0.5, x)
    x = np.where(np.abs(x - 6) < 1e-3, 5.5, x)
    report = checkGradients(Activation(kind), x)
    assert report["input"]["checked"] > 0


def test_constants_and_strings_are_accepted():
    for name in REFERENCE:
        constant = getattr(Modules, name)
        assert constant == ActivationType(name) == name
        assert Activation(constant).activation is Activation(name).activation


def test_no_overflow_at_extremes():
    x = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]], np.float32)
    for kind in ("sigmoid", "softPlus", "elu", "tanh"):
        act = Activation(kind)
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y = act(x).get()
            act.backward(np.ones_like(x))
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(act.grad.get()))
    np.testing.assert_allclose(Activation("softPlus")(x).get(), [[0, 0, np.log(2), 50, 1000]], rtol=1e-6, atol=1e-20)
    np.testing.assert_allclose(Activation("sigmoid")(x).get(), [[0, 0, 0.5, 1, 1]], atol=1e-20)


def test_custom_args():
    x = np.array([[-2.0, 0.5, 3.0]], np.float32)
    np.testing.assert_allclose(Activation("leakyRelu", args=(0.2,))(x).get(), [[-0.4, 0.5, 3.0]], rtol=1e-6)
    np.testing.assert_allclose(Activation("clip", args=(-1.0, 1.0))(x).get(), [[-1.0, 0.5, 1.0]])
    np.testing.assert_allclose(Activation("elu", args=(2.0,))(x).get(), [[2 * np.expm1(-2.0), 0.5, 3.0]], rtol=1e-6)


def test_slice_applies_to_part_only():
    x = _data((2, 6))
    act = Activation("relu", slc=slice(2, 9))
    y = act(x).get().reshape(-1)
    flat = x.reshape(-1)
    np.testing.assert_array_equal(y[2:9], np.maximum(flat[2:9], 0))
    np.testing.assert_array_equal(y[:2], flat[:2])
    np.testing.assert_array_equal(y[9:], flat[9:])
    dy = np.ones_like(x)
    act.backward(dy)
    g = act.grad.get().reshape(-1)
    np.testing.assert_array_equal(g[2:9], (flat[2:9] > 0) * 1.0)
    np.testing.assert_array_equal(g[:2], 1)


def test_inplace_overwrites_input():
    Config.showWarnings = False
    try:
        act = Activation("relu", inplace=True)
    finally:
        Config.showWarnings = True
    from PuzzleLib.Backend import gpuarray
    x = gpuarray.to_gpu(_data())
    expected = np.maximum(x.get(), 0)
    y = act(x)
    assert y is x
    np.testing.assert_array_equal(x.get(), expected)
    g = gpuarray.to_gpu(np.ones(x.shape, np.float32))
    act.backward(g)
    assert act.grad is g
    np.testing.assert_array_equal(g.get(), expected > 0)


def test_bad_inputs():
    with pytest.raises(ModuleError, match="Unknown activation 'swish'.*relu"):
        Activation("swish")
    with pytest.raises(ValueError):
        Activation(3)
    with pytest.raises(ModuleError, match="clip takes 2"):
        Activation("clip", args=(1.0,))
    act = Activation("tanh")
    act(_data())
    act.backward(np.ones((3, 4, 5), np.float32))
    before = snapshot(act)
    with pytest.raises(ModuleError, match="Expected dtype .*float32.*got float64"):
        act(np.ones((3, 4, 5)))
    with pytest.raises(ModuleError, match=r"Expected grad shape \(3, 4, 5\), got \(3, 4\)"):
        act.backward(np.ones((3, 4), np.float32))
    assertSameState(act, before)
    assert act.dataShapeFrom((2, 7)) == (2, 7) and act.gradShapeFrom((2, 7)) == (2, 7)
