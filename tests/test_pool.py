"""MaxPool2D and AvgPool2D against sliding-window numpy references; gradients by finite differences."""

import numpy as np
import pytest
from conftest import assertSameState, snapshot
from numpy.lib.stride_tricks import sliding_window_view

from PuzzleLib.Modules import AvgPool2D, MaxPool2D, ModuleError
from PuzzleLib.Utils.GradCheck import checkGradients

CASES = [
    # size, stride, pad, input shape
    (2, 2, 0, (2, 3, 6, 6)),
    (3, 2, 1, (2, 2, 7, 5)),          # stride that does not divide, padding
    ((2, 3), (1, 2), (1, 0), (1, 2, 5, 7)),  # rectangular everything
    (3, 1, 2, (1, 1, 4, 4)),          # overlapping windows, pad = size - 1
    (4, 3, 0, (3, 1, 4, 9)),          # kernel as tall as the map
]


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def _windows(x, size, stride, pad, fill):
    size, stride, pad = _pair(size), _pair(stride), _pair(pad)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])), constant_values=fill)
    w = sliding_window_view(xp, size, axis=(2, 3))
    return w[:, :, ::stride[0], ::stride[1]]


def maxReference(x, size, stride, pad):
    return _windows(x, size, stride, pad, -np.inf).max(axis=(-2, -1))


def avgReference(x, size, stride, pad, includePad):
    if includePad:
        return _windows(x, size, stride, pad, 0.0).mean(axis=(-2, -1))
    w = _windows(x, size, stride, pad, np.nan)
    return np.nansum(w, axis=(-2, -1)) / np.sum(~np.isnan(w), axis=(-2, -1))


def _data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("size, stride, pad, shape", CASES)
def test_maxpool_forward(size, stride, pad, shape):
    x = _data(shape)
    pool = MaxPool2D(size, stride, pad)
    y = pool(x)
    expected = maxReference(x, size, stride, pad)
    assert y.shape == expected.shape == pool.dataShapeFrom(shape) and y.dtype == np.float32
    np.testing.assert_array_equal(y.get(), expected)
    assert np.all(np.isfinite(y.get()))


@pytest.mark.parametrize("includePad", [True, False])
@pytest.mark.parametrize("size, stride, pad, shape", CASES)
def test_avgpool_forward(size, stride, pad, shape, includePad):
    x = _data(shape)
    pool = AvgPool2D(size, stride, pad, includePad=includePad)
    y = pool(x)
    expected = avgReference(x, size, stride, pad, includePad)
    assert y.shape == expected.shape == pool.dataShapeFrom(shape)
    np.testing.assert_allclose(y.get(), expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(y.get()))


def test_avgpool_padding_counts():
    x = np.ones((1, 1, 2, 2), np.float32)
    # 3x3 windows, pad 1, stride 1: every window sees all 4 ones among 9 slots.
    np.testing.assert_allclose(AvgPool2D(3, 1, 1)(x).get(), np.full((1, 1, 2, 2), 4 / 9), rtol=1e-6)
    np.testing.assert_allclose(AvgPool2D(3, 1, 1, includePad=False)(x).get(), np.ones((1, 1, 2, 2)), rtol=1e-6)


@pytest.mark.parametrize("size, stride, pad, shape", CASES)
def test_maxpool_gradient_check(size, stride, pad, shape):
    checkGradients(MaxPool2D(size, stride, pad), np.random.default_rng(1).standard_normal(shape))


@pytest.mark.parametrize("includePad", [True, False])
@pytest.mark.parametrize("size, stride, pad, shape", CASES)
def test_avgpool_gradient_check(size, stride, pad, shape, includePad):
    checkGradients(AvgPool2D(size, stride, pad, includePad), np.random.default_rng(2).standard_normal(shape))


def test_maxpool_backward_routes_to_argmax():
    x = _data((2, 3, 4, 6), seed=3)
    pool = MaxPool2D(2, 2)
    pool(x)
    dy = _data(pool.data.shape, seed=4)
    pool.backward(dy)
    # Non-overlapping windows: the gradient lands on each window's maximum, zeros elsewhere.
    isMax = x == np.repeat(np.repeat(pool.data.get(), 2, axis=2), 2, axis=3)
    expected = np.where(isMax, np.repeat(np.repeat(dy, 2, axis=2), 2, axis=3), 0)
    np.testing.assert_array_equal(pool.grad.get(), expected)


def test_maxpool_ties_give_gradient_once():
    pool = MaxPool2D(3, 1, 1)
    x = np.zeros((1, 1, 4, 4), np.float32)
    pool(x)
    pool.backward(np.ones((1, 1, 4, 4), np.float32))
    assert pool.grad.get().sum() == 16


def test_maxpool_mask():
    x = _data((2, 3, 5, 7), seed=5)
    pool = MaxPool2D(3, 2, 1, useMask=True)
    y = pool(x).get()
    mask = pool.mask.get()
    assert mask.shape == y.shape and mask.dtype == np.int32
    picked = np.take_along_axis(x.reshape(2, 3, -1), mask.reshape(2, 3, -1), axis=2).reshape(y.shape)
    np.testing.assert_array_equal(picked, y)
    plain = MaxPool2D()
    plain(x)
    assert plain.mask is None


def test_vectorized_on_a_larger_batch():
    # A per-pixel Python loop would take seconds here.
    x = _data((64, 16, 32, 32))
    pool = MaxPool2D(3, 2, 1)
    pool(x)
    pool.backward(np.ones(pool.data.shape, np.float32))
    np.testing.assert_array_equal(pool.data.get(), maxReference(x, 3, 2, 1))


def test_shapes():
    pool = MaxPool2D((3, 2), (2, 1), (1, 0))
    assert pool.size == (3, 2) and pool.stride == (2, 1) and pool.pad == (1, 0)
    assert pool.dataShapeFrom((4, 3, 9, 8)) == (4, 3, 5, 7)
    assert pool.gradShapeFrom((4, 3, 5, 7)) == (4, 3, 9, 8)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_bad_inputs_leave_state(cls):
    pool = cls(3, 2, 0)
    x = _data((1, 2, 5, 5))
    pool(x)
    pool.backward(np.ones((1, 2, 2, 2), np.float32))
    before = snapshot(pool)
    with pytest.raises(ModuleError, match=r"Data must be 4d tensor \(got 3d"):
        pool(np.ones((2, 5, 5), np.float32))
    with pytest.raises(ModuleError, match=r"Data maps width is too small \(got 2, expected at least 3\)"):
        pool(np.ones((1, 2, 5, 2), np.float32))
    with pytest.raises(ModuleError, match="Expected dtype .*float32.*got float64"):
        pool(np.ones((1, 2, 5, 5)))
    with pytest.raises(ModuleError, match=r"Expected grad shape \(1, 2, 2, 2\), got \(1, 2, 3, 2\)"):
        pool.backward(np.ones((1, 2, 3, 2), np.float32))
    with pytest.raises(ModuleError, match="Grad must be 4d tensor"):
        pool.backward(np.ones((2, 2, 2), np.float32))
    assertSameState(pool, before)


def test_bad_constructor():
    with pytest.raises(ModuleError, match=r"pad must be smaller than size"):
        MaxPool2D(2, 2, 2)
    with pytest.raises(ModuleError, match=r"stride must be at least 1 \(got 0\)"):
        AvgPool2D(2, 0)
    with pytest.raises(ModuleError, match="size must be an int or a tuple of 2 ints"):
        AvgPool2D((2, 2, 2))
    with pytest.raises(ValueError):
        MaxPool2D(2.0)
