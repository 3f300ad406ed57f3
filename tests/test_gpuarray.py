"""PuzzleLib.Backend.gpuarray: construction, transfers, views, printing exactly like numpy."""

import numpy as np
import pytest

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Backend.gpuarray import GPUArray

PRINTED = [
    np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5),
    np.arange(-8, 8, dtype=np.float32).reshape(2, 1, 2, 2, 2),
    np.array([[1.5, -2.25], [1e-8, 3e7]], dtype=np.float32),
    np.array([np.nan, np.inf, -np.inf, 0.0], dtype=np.float32),
    np.random.default_rng(0).standard_normal((3, 4, 2)).astype(np.float32),
    np.arange(2000, dtype=np.float32),   # summarised with '...'
    np.array(3.5, dtype=np.float32),
    np.zeros((0, 3), dtype=np.float32),
    np.arange(6, dtype=np.int32).reshape(2, 3),
    np.array([0.1, 0.2], dtype=np.float64),
]


@pytest.mark.parametrize("index", range(len(PRINTED)))
def test_str_is_numpys(index):
    host = PRINTED[index]
    a = gpuarray.to_gpu(host)
    assert str(a) == str(host)
    assert repr(a) == repr(host) or repr(a).startswith("array(")


def test_str_on_the_page():
    a = gpuarray.to_gpu(np.arange(25).reshape((1, 1, 5, 5)).astype(np.float32))
    assert str(a) == ("[[[[ 0.  1.  2.  3.  4.]\n   [ 5.  6.  7.  8.  9.]\n   [10. 11. 12. 13. 14.]\n"
                      "   [15. 16. 17. 18. 19.]\n   [20. 21. 22. 23. 24.]]]]")


def test_to_gpu_copies_and_get_copies():
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    a = gpuarray.to_gpu(host)
    host[0, 0] = 100
    assert a.get()[0, 0] == 0
    got = a.get()
    got[0, 1] = 50
    assert a.get()[0, 1] == 1
    assert isinstance(a, GPUArray) and a.shape == (2, 3) and a.dtype == np.float32


def test_to_gpu_makes_contiguous():
    host = np.arange(12, dtype=np.float32).reshape(3, 4).T
    a = gpuarray.to_gpu(host)
    np.testing.assert_array_equal(a.get(), host)
    assert a.get().flags.c_contiguous and a.strides == (12, 4)


def test_properties():
    a = gpuarray.to_gpu(np.zeros((2, 3, 4), np.float32))
    assert a.shape == (2, 3, 4) and a.ndim == 3 and a.size == 24 and a.nbytes == 96 and a.dtype == np.float32
    assert len(a) == 2


@pytest.mark.parametrize("factory", [gpuarray.empty, gpuarray.zeros])
def test_empty_and_zeros(factory):
    a = factory((3, 2))
    assert a.shape == (3, 2) and a.dtype == np.float32
    b = factory((4,), dtype=np.int32)
    assert b.shape == (4,) and b.dtype == np.int32
    if factory is gpuarray.zeros:
        np.testing.assert_array_equal(a.get(), 0)


def test_set():
    a = gpuarray.zeros((2, 2))
    storage = np.asarray(a)
    assert a.set(np.ones((2, 2), np.float32)) is a
    np.testing.assert_array_equal(a.get(), 1)
    a.set(gpuarray.to_gpu(np.full((2, 2), 2, np.float32)))
    np.testing.assert_array_equal(a.get(), 2)
    assert np.asarray(a) is storage, "set writes into the existing storage"


@pytest.mark.parametrize("source,words", [
    (np.ones((2, 3), np.float32), ("(2, 2)", "(2, 3)")),
    (np.ones(4, np.float32), ("(2, 2)", "(4,)")),
    (np.ones((2, 2), np.float64), ("float32", "float64")),
    (np.ones((2, 2), np.int32), ("float32", "int32")),
])
def test_set_refuses_mismatch(source, words):
    a = gpuarray.zeros((2, 2))
    with pytest.raises(ValueError) as info:
        a.set(source)
    for word in words:
        assert word in str(info.value)
    np.testing.assert_array_equal(a.get(), 0)


def test_fill_returns_self():
    a = gpuarray.empty((3,))
    assert a.fill(2.5) is a
    np.testing.assert_array_equal(a.get(), np.full(3, 2.5, np.float32))


def test_asarray_shares_storage():
    a = gpuarray.to_gpu(np.arange(4, dtype=np.float32))
    view = np.asarray(a)
    view[0] = 9
    assert a.get()[0] == 9
    assert np.asarray(a, dtype=np.float64).dtype == np.float64
    assert np.array(a).tolist() == [9, 1, 2, 3]
    copied = np.array(a, copy=True)
    copied[1] = -1
    assert a.get()[1] == 1
    assert float(np.sum(a)) == 15.0
    assert np.asarray(a, copy=False) is view
    with pytest.raises(ValueError):
        np.asarray(a, dtype=np.float64, copy=False)


def test_reshape_and_ravel():
    a = gpuarray.to_gpu(np.arange(12, dtype=np.float32))
    for b in (a.reshape(3, 4), a.reshape((3, 4)), a.reshape(3, -1), a.reshape([-1, 4])):
        assert b.shape == (3, 4)
        np.testing.assert_array_equal(b.get(), np.arange(12).reshape(3, 4))
    b = a.reshape(2, 6)
    b.fill(0)
    assert not a.get().any(), "reshape is a view on the same storage"
    r = gpuarray.to_gpu(np.ones((2, 3), np.float32)).ravel()
    assert r.shape == (6,)
    with pytest.raises(ValueError):
        a.reshape(5, 3)


def test_astype_and_copy_are_new_arrays():
    a = gpuarray.to_gpu(np.array([1.5, -2.5], np.float32))
    b = a.astype(np.float64)
    assert b.dtype == np.float64 and b is not a
    np.testing.assert_array_equal(b.get(), [1.5, -2.5])
    b.fill(0)
    assert a.get()[0] == 1.5
    c = a.copy()
    c.fill(7)
    assert a.get()[0] == 1.5 and c.dtype == a.dtype


def test_view_min_max_indexing():
    a = gpuarray.to_gpu(np.array([[1.0, -3.0], [4.0, 2.0]], np.float32))
    assert float(a.min().get()) == -3.0 and float(a.max().get()) == 4.0
    assert float(gpuarray.minimum(a).get()) == -3.0 and float(gpuarray.maximum(a).get()) == 4.0
    np.testing.assert_array_equal(a[1].get(), [4.0, 2.0])
    np.testing.assert_array_equal(a[0:1].get(), [[1.0, -3.0]])
    assert a.view(np.int32).dtype == np.int32
    a[0] = 0
    np.testing.assert_array_equal(a.get()[0], [0, 0])


def test_arithmetic():
    x = np.array([1.0, 2.0, 4.0], np.float32)
    a = gpuarray.to_gpu(x)
    for got, want in [(a + a, x + x), (a - 1, x - 1), (2 * a, 2 * x), (a / 2, x / 2), (1 - a, 1 - x), (-a, -x),
                      (a * x, x * x), (x + a, x + x)]:
        assert isinstance(got, GPUArray)
        np.testing.assert_array_equal(got.get(), want)
    a += 1
    a *= 2
    np.testing.assert_array_equal(a.get(), (x + 1) * 2)


def test_module_level_helpers():
    a = gpuarray.to_gpu(np.arange(6, dtype=np.float32).reshape(2, 3))
    b = gpuarray.to_gpu(np.arange(6, 12, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(gpuarray.concatenate((a, b), axis=0).get(), np.arange(12).reshape(4, 3))
    parts = gpuarray.split(gpuarray.to_gpu(np.arange(10, dtype=np.float32)), [3, 7])
    assert [p.shape for p in parts] == [(3,), (7,)]
    np.testing.assert_array_equal(gpuarray.tile(a, 2, axis=1).get(), np.concatenate([a.get()] * 2, axis=1))
    dest = gpuarray.zeros((2, 3))
    assert gpuarray.copy(dest, a) is dest
    np.testing.assert_array_equal(dest.get(), a.get())
    assert gpuarray.dtypesSupported()[0][0] == np.float32
