"""Dropout: the mask from numpy's global generator, scaling, backward with the same mask, eval identity."""

import numpy as np
import pytest
from conftest import assertSameState, snapshot

from PuzzleLib import Config
from PuzzleLib.Backend import gpuarray
from PuzzleLib.Modules import Dropout, ModuleError
from PuzzleLib.Utils.GradCheck import checkGradients


def _data(shape=(8, 3, 6, 5), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) + 3.0


def test_train_mask_from_global_generator():
    x = _data()
    drop = Dropout(p=0.3)
    np.random.seed(42)
    y = drop(x).get()
    np.random.seed(42)
    keep = np.random.random_sample(x.size).reshape(x.shape) >= 0.3
    np.testing.assert_allclose(y, np.where(keep, x / 0.7, 0), rtol=1e-6)
    # Roughly p of the elements are dropped.
    assert abs((y == 0).mean() - 0.3) < 0.05
    dy = _data(seed=1)
    drop.backward(dy)
    np.testing.assert_allclose(drop.grad.get(), np.where(keep, dy / 0.7, 0), rtol=1e-6)


def test_fresh_mask_each_pass_and_seed_reproduces():
    x = _data()
    drop = Dropout()
    np.random.seed(1)
    first = drop(x).get()
    second = drop(x).get()
    assert not np.array_equal(first, second)
    np.random.seed(1)
    np.testing.assert_array_equal(drop(x).get(), first)


def test_eval_is_identity():
    x = gpuarray.to_gpu(_data())
    drop = Dropout(0.9)
    drop.evalMode()
    assert drop(x) is x
    dy = gpuarray.to_gpu(_data(seed=2))
    drop.backward(dy)
    assert drop.grad is dy


def test_gradient_check_in_eval_mode_and_with_p_zero():
    checkGradients(Dropout(0.0), np.random.default_rng(3).standard_normal((2, 5)))
    drop = Dropout(0.5)
    drop.evalMode()
    checkGradients(drop, np.random.default_rng(3).standard_normal((2, 5)))


def test_rng_slicing_and_inplace(monkeypatch):
    x = _data((4, 10))
    drop = Dropout(0.5, rng=np.random.default_rng(5), slicing=slice(10, 30))
    y = drop(x).get().reshape(-1)
    keep = np.random.default_rng(5).random(20) >= 0.5
    flat = x.reshape(-1)
    np.testing.assert_array_equal(y[:10], flat[:10])
    np.testing.assert_array_equal(y[30:], flat[30:])
    np.testing.assert_allclose(y[10:30], np.where(keep, flat[10:30] * 2, 0), rtol=1e-6)

    monkeypatch.setattr(Config, "showWarnings", False)
    drop = Dropout(0.5, inplace=True)
    data = gpuarray.to_gpu(x)
    assert drop(data) is data


def test_bad_inputs():
    with pytest.raises(ModuleError, match=r"p must be in \[0, 1\) \(got 1.0\)"):
        Dropout(1.0)
    with pytest.raises(ValueError):
        Dropout("half")
    drop = Dropout()
    drop(_data())
    drop.backward(_data(seed=4))
    before = snapshot(drop)
    mask = drop.mask.get()
    with pytest.raises(ModuleError, match="Expected dtype .*float32.*got float64"):
        drop(np.ones((8, 3, 6, 5)))
    with pytest.raises(ModuleError, match=r"Expected grad shape \(8, 3, 6, 5\), got \(8, 3, 6, 4\)"):
        drop.backward(np.ones((8, 3, 6, 4), np.float32))
    assertSameState(drop, before)
    np.testing.assert_array_equal(drop.mask.get(), mask)
