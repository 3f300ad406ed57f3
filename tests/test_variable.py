"""PuzzleLib.Variable.Variable: data, gradient, multipliers and updates."""

import numpy as np
import pytest

from PuzzleLib import Config
from PuzzleLib.Backend import gpuarray
from PuzzleLib.Backend.gpuarray import GPUArray
from PuzzleLib.Variable import Variable


def test_defaults():
    data = gpuarray.to_gpu(np.arange(6, dtype=np.float32).reshape(2, 3))
    var = Variable(data)
    assert var.data is data
    assert isinstance(var.grad, GPUArray) and var.grad.shape == (2, 3) and var.grad.dtype == np.float32
    np.testing.assert_array_equal(var.grad.get(), 0)
    assert var.grad is not data
    assert var.name is None and var.learnRate == 1.0 and var.momRate == 1.0
    assert var.hasUpdater is False and var.updater is None and var.postUpdater is None
    assert var.wc == 0.0


def test_without_grad():
    var = Variable(gpuarray.zeros((3,)), name="w", withgrad=False)
    assert var.grad is None and var.name == "w"


def test_given_grad_is_kept():
    grad = gpuarray.to_gpu(np.ones(3, np.float32))
    var = Variable(gpuarray.zeros((3,)), grad=grad)
    assert var.grad is grad


def test_given_grad_must_match():
    with pytest.raises(ValueError) as info:
        Variable(gpuarray.zeros((3,)), grad=gpuarray.zeros((4,)))
    assert "(3,)" in str(info.value) and "(4,)" in str(info.value)


def test_numpy_data_is_accepted_and_other_types_are_not():
    var = Variable(np.ones((2,), np.float32))
    assert isinstance(var.data, GPUArray)
    with pytest.raises(ValueError):
        Variable([1.0, 2.0])


def test_global_eval_mode_gives_no_grad():
    Config.globalEvalMode = True
    assert Variable(gpuarray.zeros((2,))).grad is None


def test_update_adds_learn_rate_times_grad():
    var = Variable(gpuarray.to_gpu(np.array([1.0, 2.0], np.float32)))
    var.grad.set(np.array([0.5, -1.0], np.float32))
    var.update(0.1)
    np.testing.assert_allclose(var.data.get(), [1.05, 1.9], rtol=1e-6)


def test_updater_and_post_updater():
    calls = []

    def updater(var, learnRate):
        calls.append(("updater", learnRate))
        var.data.fill(7.0)

    def postUpdater(var):
        calls.append(("post", None))

    var = Variable(gpuarray.zeros((2,)), updater=updater, postUpdater=postUpdater)
    assert var.hasUpdater and var.hasPostUpdater
    var.update(0.5)
    assert calls == [("updater", 0.5), ("post", None)]
    np.testing.assert_array_equal(var.data.get(), 7.0)


def test_multipliers_are_per_variable():
    a, b = Variable(gpuarray.zeros((1,))), Variable(gpuarray.zeros((1,)))
    a.learnRate, a.momRate = 0.1, 0.0
    assert (b.learnRate, b.momRate) == (1.0, 1.0)


def test_set_copies_values():
    var = Variable(gpuarray.zeros((2,)))
    storage = var.data
    var.set(Variable(gpuarray.to_gpu(np.array([3.0, 4.0], np.float32))))
    assert var.data is storage
    np.testing.assert_array_equal(var.data.get(), [3.0, 4.0])
    var.set(np.array([5.0, 6.0], np.float32))
    np.testing.assert_array_equal(var.data.get(), [5.0, 6.0])
