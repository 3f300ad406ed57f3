"""BatchNorm2D: train and eval forward against numpy, running statistics, gradients, bad input."""

import numpy as np
import pytest
from conftest import assertSameState, snapshot

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Modules import BatchNorm2D, ModuleError
from PuzzleLib.Utils.GradCheck import checkGradients


def _data(shape=(4, 3, 5, 2), seed=0, shift=2.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 1.5 + shift).astype(np.float32)


def _randomize(bn, seed=1):
    rng = np.random.default_rng(seed)
    bn.scale.set(rng.uniform(0.5, 1.5, bn.scale.shape).astype(np.float32))
    bn.bias.set(rng.standard_normal(bn.bias.shape).astype(np.float32))


def test_init():
    np.random.seed(0)
    bn = BatchNorm2D(3)
    np.random.seed(0)
    expected = np.random.normal(1.0, 0.01, (1, 3, 1, 1)).astype(np.float32)
    np.testing.assert_array_equal(bn.scale.get(), expected)
    np.testing.assert_array_equal(bn.bias.get(), np.zeros((1, 3, 1, 1)))
    np.testing.assert_array_equal(bn.mean.get(), np.zeros((1, 3, 1, 1)))
    np.testing.assert_array_equal(bn.var.get(), np.ones((1, 3, 1, 1)))
    assert set(bn.vars) == {"scale", "bias"} and set(bn.attrs) == {"mean", "var"}
    np.testing.assert_array_equal(BatchNorm2D(4, affine=False).scale.get(), np.ones((1, 4, 1, 1)))
    assert BatchNorm2D(2, empty=True).vars == {}


def test_train_forward_and_running_statistics():
    bn = BatchNorm2D(3, epsilon=1e-3)
    _randomize(bn)
    scale, bias = bn.scale.get().astype(np.float64), bn.bias.get().astype(np.float64)
    batches = [_data(seed=s, shift=s) for s in range(5)]
    runMean, runVar = np.zeros((1, 3, 1, 1)), np.ones((1, 3, 1, 1))
    for n, x in enumerate(batches, start=1):
        y = bn(x).get()
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=(0, 2, 3), keepdims=True)
        var = x64.var(axis=(0, 2, 3), keepdims=True)
        np.testing.assert_allclose(y, (x64 - mean) / np.sqrt(var + 1e-3) * scale + bias, rtol=1e-4, atol=1e-5)
        # PuzzleLib's schedule: factor = max(initFactor / n, minFactor); running variance unbiased.
        factor = max(1.0 / n, 0.1)
        count = x.size // 3
        runMean = (1 - factor) * runMean + factor * mean
        runVar = (1 - factor) * runVar + factor * var * count / (count - 1)
        np.testing.assert_allclose(bn.mean.get(), runMean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.var.get(), runVar, rtol=1e-5, atol=1e-6)
    assert bn.numOfProps == 5


def test_eval_uses_running_statistics():
    bn = BatchNorm2D(3)
    _randomize(bn)
    rng = np.random.default_rng(4)
    bn.setAttr("mean", gpuarray.to_gpu(rng.standard_normal((1, 3, 1, 1)).astype(np.float32)))
    bn.setAttr("var", gpuarray.to_gpu(rng.uniform(0.5, 2, (1, 3, 1, 1)).astype(np.float32)))
    bn.evalMode()
    x = _data()
    y = bn(x).get()
    mean, var = bn.mean.get().astype(np.float64), bn.var.get().astype(np.float64)
    factor = bn.scale.get() / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(y, (x - mean) * factor + bn.bias.get(), rtol=1e-5, atol=1e-5)
    before = (bn.mean.get(), bn.var.get())
    bn(x)
    np.testing.assert_array_equal(bn.mean.get(), before[0])
    np.testing.assert_array_equal(bn.var.get(), before[1])
    dy = _data(seed=5)
    bn.backward(dy)
    np.testing.assert_allclose(bn.grad.get(), dy * factor, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bn.vars["scale"].grad.get(), 0)


def test_train_backward_matches_formula():
    bn = BatchNorm2D(3)
    _randomize(bn)
    x, dy = _data(), _data(seed=7, shift=0)
    bn(x)
    bn.backward(dy)
    x64, g = x.astype(np.float64), dy.astype(np.float64)
    axes, count = (0, 2, 3), x.size // 3
    mean = x64.mean(axis=axes, keepdims=True)
    invstd = 1 / np.sqrt(x64.var(axis=axes, keepdims=True) + 1e-5)
    xhat = (x64 - mean) * invstd
    dscale = (g * xhat).sum(axis=axes, keepdims=True)
    dbias = g.sum(axis=axes, keepdims=True)
    dx = bn.scale.get() * invstd / count * (count * g - dbias - xhat * dscale)
    np.testing.assert_allclose(bn.grad.get(), dx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.vars["scale"].grad.get(), dscale, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.vars["bias"].grad.get(), dbias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train", [True, False])
def test_gradient_check(train):
    bn = BatchNorm2D(3)
    _randomize(bn)
    if not train:
        bn.evalMode()
    report = checkGradients(bn, np.random.default_rng(8).standard_normal((3, 3, 2, 4)))
    assert set(report) == ({"input", "scale", "bias"} if train else {"input"})


def test_not_affine_learns_nothing():
    bn = BatchNorm2D(2, affine=False)
    bn(_data((2, 2, 3, 3)))
    bn.backward(_data((2, 2, 3, 3), seed=3))
    np.testing.assert_array_equal(bn.vars["scale"].grad.get(), 0)
    np.testing.assert_array_equal(bn.vars["bias"].grad.get(), 0)


def test_bad_inputs_leave_state():
    bn = BatchNorm2D(3)
    bn(_data())
    bn.backward(_data(seed=2))
    before = snapshot(bn)
    stats = (bn.mean.get(), bn.var.get(), bn.numOfProps)
    with pytest.raises(ModuleError, match=r"Data has 2 maps \(expected: 3\)"):
        bn(np.ones((4, 2, 5, 2), np.float32))
    with pytest.raises(ModuleError, match=r"Data must be 4d tensor \(got 2d"):
        bn(np.ones((4, 3), np.float32))
    with pytest.raises(ModuleError, match="Expected dtype .*float32.*got float64"):
        bn(np.ones((4, 3, 5, 2)))
    with pytest.raises(ModuleError, match="at least 2 values per map"):
        bn(np.ones((1, 3, 1, 1), np.float32))
    with pytest.raises(ModuleError, match=r"Grad has 4 maps \(expected: 3\)"):
        bn.backward(np.ones((4, 4, 5, 2), np.float32))
    with pytest.raises(ModuleError, match=r"Expected grad shape \(4, 3, 5, 2\), got \(4, 3, 5, 1\)"):
        bn.backward(np.ones((4, 3, 5, 1), np.float32))
    assertSameState(bn, before)
    np.testing.assert_array_equal(bn.mean.get(), stats[0])
    np.testing.assert_array_equal(bn.var.get(), stats[1])
    assert bn.numOfProps == stats[2]
    with pytest.raises(ModuleError, match=r"'mean' must have shape \(1, 3, 1, 1\)"):
        bn.setAttr("mean", gpuarray.zeros((1, 2, 1, 1)))
    with pytest.raises(ValueError):
        BatchNorm2D(3, epsilon="small")
    with pytest.raises(ModuleError, match="maps must be at least 1"):
        BatchNorm2D(0)
