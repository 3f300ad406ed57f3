"""Flatten: (N, ...) -> (N, prod(...)) and back, bad shapes."""

import numpy as np
import pytest
from conftest import assertSameState, snapshot

from PuzzleLib.Modules import Flatten, ModuleError
from PuzzleLib.Utils.GradCheck import checkGradients


def test_forward_backward():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    flat = Flatten()
    y = flat(x)
    assert y.shape == (2, 60) and y.dtype == np.float32
    np.testing.assert_array_equal(y.get(), x.reshape(2, 60))
    dy = np.random.default_rng(0).standard_normal((2, 60)).astype(np.float32)
    flat.backward(dy)
    np.testing.assert_array_equal(flat.grad.get(), dy.reshape(2, 3, 4, 5))
    assert flat.dataShapeFrom((7, 2, 3)) == (7, 6)
    assert flat.gradShapeFrom((9, 60)) == (9, 3, 4, 5)


def test_gradient_check():
    checkGradients(Flatten(), np.random.default_rng(1).standard_normal((3, 2, 2, 2)))


def test_bad_shapes():
    flat = Flatten()
    with pytest.raises(ModuleError, match=r"at least 2d tensor \(got 1d"):
        flat(np.ones(4, np.float32))
    flat(np.ones((2, 3, 4), np.float32))
    before = snapshot(flat)
    with pytest.raises(ModuleError, match=r"Expected grad shape \(2, 12\), got \(2, 11\)"):
        flat.backward(np.ones((2, 11), np.float32))
    with pytest.raises(ModuleError, match="Grad must be 2d tensor"):
        flat.backward(np.ones((2, 3, 4), np.float32))
    assertSameState(flat, before)
