"""Reshape (0 copies an axis, one -1 inferred) and Identity."""

import numpy as np
import pytest
from conftest import assertSameState, snapshot

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Modules import Identity, ModuleError, Reshape
from PuzzleLib.Utils.GradCheck import checkGradients


@pytest.mark.parametrize("inshape, shape, expected", [
    ((10, 10, 10, 10), (10, -1, 100), (10, 10, 100)),
    ((1, 4, 7, 7), (0, 2, -1, 0), (1, 2, 14, 7)),
    ((6, 3, 4), (0, -1), (6, 12)),
    ((6, 3, 4), (3, 2, 12), (3, 2, 12)),
])
def test_forward_backward(inshape, shape, expected):
    x = np.random.default_rng(0).standard_normal(inshape).astype(np.float32)
    reshape = Reshape(shape)
    assert reshape.dataShapeFrom(inshape) == expected
    y = reshape(x)
    assert y.shape == expected
    np.testing.assert_array_equal(y.get(), x.reshape(expected))
    dy = np.random.default_rng(1).standard_normal(expected).astype(np.float32)
    reshape.backward(dy)
    np.testing.assert_array_equal(reshape.grad.get(), dy.reshape(inshape))
    assert reshape.gradShapeFrom(expected) == inshape


def test_gradient_check():
    checkGradients(Reshape((0, -1)), np.random.default_rng(2).standard_normal((3, 2, 2)))


def test_bad_inputs():
    with pytest.raises(ModuleError, match="single -1"):
        Reshape((-1, -1))
    with pytest.raises(ModuleError, match="single -1"):
        Reshape((2, -3))
    with pytest.raises(ValueError):
        Reshape("2x3")
    reshape = Reshape((0, 5, -1))
    reshape(np.ones((2, 5, 3), np.float32))
    reshape.backward(np.ones((2, 5, 3), np.float32))
    before = snapshot(reshape)
    with pytest.raises(ModuleError, match=r"Data shape \(2, 7\) is inconsistent with reshape \(2, 5, -1\)"):
        reshape(np.ones((2, 7), np.float32))
    with pytest.raises(ModuleError, match=r"Data shape \(2, 3\) is inconsistent with reshape \(4, 5\)"):
        Reshape((4, 5))(np.ones((2, 3), np.float32))
    with pytest.raises(ModuleError, match=r"Expected grad shape \(2, 5, 3\), got \(2, 15\)"):
        reshape.backward(np.ones((2, 15), np.float32))
    with pytest.raises(ModuleError, match="at least 3 axes"):
        Reshape((1, 1, 0))(np.ones((1,), np.float32))
    assertSameState(reshape, before)


def test_identity():
    ident = Identity()
    x = gpuarray.to_gpu(np.ones((2, 3), np.float32))
    assert ident(x) is x
    g = gpuarray.to_gpu(np.full((2, 3), 2, np.float32))
    ident.backward(g)
    assert ident.grad is g
    checkGradients(Identity(), np.random.default_rng(3).standard_normal((2, 2)))
    with pytest.raises(ModuleError, match=r"Expected grad shape \(2, 3\), got \(3, 2\)"):
        ident.backward(np.ones((3, 2), np.float32))
    with pytest.raises(ModuleError, match="Expected dtype"):
        ident(np.ones((2, 3), np.int32))
