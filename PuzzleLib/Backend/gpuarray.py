"""Device arrays with the interface of PuzzleLib's ``gpuarray``.

On the CPU engine a ``GPUArray`` owns a contiguous numpy array in host memory; the
name is kept so that PuzzleLib code runs unchanged. ``str(a)`` prints exactly what
numpy prints for the same values, and ``np.asarray(a)`` works without a copy.
"""

import numbers

import numpy as np


class GPUArray:
    __slots__ = ("_ary", "__weakref__")
    # Make numpy defer to our reflected operators (ndarray + GPUArray -> GPUArray).
    __array_priority__ = 100

    def __init__(self, ary):
        if not isinstance(ary, np.ndarray):
            raise TypeError(f"GPUArray wraps a numpy array, got {type(ary).__name__}")
        self._ary = ary

    # -- properties -------------------------------------------------------------------
    @property
    def shape(self):
        return self._ary.shape

    @property
    def dtype(self):
        return self._ary.dtype

    @property
    def ndim(self):
        return self._ary.ndim

    @property
    def size(self):
        return self._ary.size

    @property
    def nbytes(self):
        return self._ary.nbytes

    @property
    def strides(self):
        return self._ary.strides

    @property
    def ary(self):
        """The storage an engine computes on (a numpy array on the CPU engine)."""
        return self._ary

    # -- host transfer ----------------------------------------------------------------
    def get(self):
        return self._ary.copy()

    def set(self, ary):
        source = _storage(ary)
        if source.shape != self.shape:
            raise ValueError(f"Shape mismatch in set: array has {self.shape}, source has {source.shape}")
        if source.dtype != self.dtype:
            raise ValueError(f"Dtype mismatch in set: array has {self.dtype}, source has {source.dtype}")
        np.copyto(self._ary, source)
        return self

    def fill(self, value):
        self._ary.fill(value)
        return self

    # -- views and copies ---------------------------------------------------------------
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return GPUArray(self._ary.reshape(shape))

    def ravel(self):
        return GPUArray(self._ary.reshape(-1))

    def view(self, dtype=None):
        return GPUArray(self._ary.view() if dtype is None else self._ary.view(dtype))

    def copy(self):
        return GPUArray(self._ary.copy())

    def astype(self, dtype):
        return GPUArray(self._ary.astype(dtype))

    def min(self):
        return GPUArray(np.asarray(self._ary.min()))

    def max(self):
        return GPUArray(np.asarray(self._ary.max()))

    def __getitem__(self, index):
        return GPUArray(np.asarray(self._ary[_storageIndex(index)]))

    def __setitem__(self, index, value):
        self._ary[_storageIndex(index)] = _operand(value)

    def __len__(self):
        return len(self._ary)

    # -- numpy interop and printing -------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        if copy:
            return self._ary.astype(dtype) if dtype is not None else self._ary.copy()
        if copy is False and dtype is not None and np.dtype(dtype) != self.dtype:
            # numpy 2's contract: copy=False must never copy silently.
            raise ValueError(f"Unable to avoid a copy converting a {self.dtype} GPUArray to {np.dtype(dtype)}")
        return self._ary if dtype is None else self._ary.astype(dtype, copy=False)

    def __str__(self):
        return str(self._ary)

    def __repr__(self):
        return repr(self._ary)

    def __float__(self):
        return float(self._ary)

    def __int__(self):
        return int(self._ary)

    def __bool__(self):
        return bool(self._ary)

    # -- arithmetic -------------------------------------------------------------------------
    def __neg__(self):
        return GPUArray(-self._ary)

    def __add__(self, other):
        return GPUArray(self._ary + _operand(other))

    def __radd__(self, other):
        return GPUArray(_operand(other) + self._ary)

    def __sub__(self, other):
        return GPUArray(self._ary - _operand(other))

    def __rsub__(self, other):
        return GPUArray(_operand(other) - self._ary)

    def __mul__(self, other):
        return GPUArray(self._ary * _operand(other))

    def __rmul__(self, other):
        return GPUArray(_operand(other) * self._ary)

    def __truediv__(self, other):
        return GPUArray(self._ary / _operand(other))

    def __rtruediv__(self, other):
        return GPUArray(_operand(other) / self._ary)

    def __iadd__(self, other):
        self._ary += _operand(other)
        return self

    def __isub__(self, other):
        self._ary -= _operand(other)
        return self

    def __imul__(self, other):
        self._ary *= _operand(other)
        return self

    def __itruediv__(self, other):
        self._ary /= _operand(other)
        return self


def _storage(ary):
    return ary._ary if isinstance(ary, GPUArray) else np.asarray(ary)


def _operand(value):
    if isinstance(value, GPUArray):
        return value._ary
    if isinstance(value, numbers.Number):
        return value
    return np.asarray(value)


def _storageIndex(index):
    if isinstance(index, GPUArray):
        return index._ary
    if isinstance(index, tuple):
        return tuple(i._ary if isinstance(i, GPUArray) else i for i in index)
    return index


# -- construction ---------------------------------------------------------------------------
def to_gpu(ary, dtype=None):
    """Copy a host array (or anything numpy accepts) into a new contiguous GPUArray."""
    host = _storage(ary)
    return GPUArray(np.array(host, dtype=dtype if dtype is not None else host.dtype, order="C", copy=True))


def wrap(ary):
    """Wrap a numpy array without copying (a no-op for a GPUArray)."""
    return ary if isinstance(ary, GPUArray) else GPUArray(np.ascontiguousarray(ary))


def empty(shape, dtype=np.float32):
    return GPUArray(np.empty(shape, dtype=dtype))


def zeros(shape, dtype=np.float32):
    return GPUArray(np.zeros(shape, dtype=dtype))


def zeros_like(ary):
    return GPUArray(np.zeros(ary.shape, dtype=ary.dtype))


def empty_like(ary):
    return GPUArray(np.empty(ary.shape, dtype=ary.dtype))


def copy(dest, src):
    dest.set(src)
    return dest


def minimum(ary):
    return ary.min()


def maximum(ary):
    return ary.max()


def concatenate(tup, axis=0):
    return GPUArray(np.concatenate([_storage(a) for a in tup], axis=axis))


def split(ary, sections, axis=0):
    """Split into pieces of the given sizes along axis (PuzzleLib passes sizes, not indices)."""
    bounds = np.cumsum(sections)[:-1]
    return [GPUArray(np.ascontiguousarray(part)) for part in np.split(_storage(ary), bounds, axis=axis)]


def tile(ary, repeats, axis=0):
    """Concatenate ``repeats`` copies of ary along axis."""
    return GPUArray(np.concatenate([_storage(ary)] * repeats, axis=axis))


def dtypesSupported():
    return [(np.float32, 1e-5)]


class MemoryPool:
    """Memory the engine keeps between calls for reuse (the convolutions' scratch buffers), under PuzzleLib's
    name: ``gpuarray.memoryPool.freeHeld()`` hands it back, as after a model is deleted."""

    def freeHeld(self):
        from PuzzleLib.Backend import getEngine  # here: importing gpuarray picks no engine

        getEngine().conv.clearWorkspace()

    @property
    def heldBytes(self):
        from PuzzleLib.Backend import getEngine

        return getEngine().conv.heldBytes()


memoryPool = MemoryPool()
