"""Shared pieces of the convolution algorithms: output shapes, tap ranges, tiles and a workspace cache.

Shapes everywhere: x (N, C, *spatial), w (O, C // groups, *kernel); ``stride``, ``pad`` and
``dilation`` are tuples with one entry per spatial axis. A kernel tap ``t`` on an axis reads input
index ``o * s + t * d - p`` for output index ``o``; padding is never materialised, each tap only
touches the output range whose input index is in bounds (``tapRange``).
"""

import math
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Upper bound of one column tile (im2col buffer, Winograd transform buffers): large enough for the
# GEMM to run near peak, small enough that the buffer does not grow with the batch or the image.
TILE_BYTES = 8 << 20

# The workspace cache keeps at most this many buffers / bytes (least recently used go first).
_CACHE_ENTRIES = 8
_CACHE_BYTES = 128 << 20


def outputShape(spatial, kernel, stride, pad, dilation):
    return tuple(
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(spatial, kernel, stride, pad, dilation)
    )


def tapRange(size, out, t, s, p, d):
    """Output indices [lo, hi) for which kernel tap t reads an in-bounds input index, and that index at lo."""
    offset = t * d - p
    lo = max(0, -(offset // s)) if offset < 0 else 0
    hi = min(out, (size - 1 - offset) // s + 1) if size - 1 - offset >= 0 else 0
    hi = max(hi, lo)
    return lo, hi, lo * s + offset


def isPointwise(kernel, stride, pad):
    return all(k == 1 for k in kernel) and all(s == 1 for s in stride) and not any(pad)


def rowTiles(n, rows, bytesPerRow, limit=None):
    """Split (batch, first output axis) into tiles of at most ``limit`` bytes: [(n0, n1, r0, r1)].

    Whole batch items are grouped while one item fits; otherwise each item is cut along its rows.
    """
    limit = TILE_BYTES if limit is None else limit
    perItem = bytesPerRow * rows
    if perItem <= limit:
        step = max(1, min(n, limit // max(perItem, 1)))
        return [(n0, min(n, n0 + step), 0, rows) for n0 in range(0, n, step)]
    step = max(1, limit // max(bytesPerRow, 1))
    return [(i, i + 1, r0, min(rows, r0 + step)) for i in range(n) for r0 in range(0, rows, step)]


class _Workspace:
    """Per-shape scratch buffers, reused across calls so large buffers are not page-faulted every time.

    Buffers are keyed by (tag, shape, dtype); callers must not return them to the user.
    Not thread-safe (the engine is single-threaded; BLAS threads inside a GEMM do not touch it).
    """

    def __init__(self):
        self._buffers = OrderedDict()
        self._bytes = 0

    def get(self, tag, shape, dtype, zero=False):
        key = (tag, tuple(shape), np.dtype(dtype))
        buf = self._buffers.get(key)
        if buf is None:
            buf = np.zeros(shape, dtype=dtype)
            self._buffers[key] = buf
            self._bytes += buf.nbytes
            self._evict()
        else:
            self._buffers.move_to_end(key)
            if zero:
                buf.fill(0)
        return buf

    def _evict(self):
        while len(self._buffers) > 1 and (len(self._buffers) > _CACHE_ENTRIES or self._bytes > _CACHE_BYTES):
            _, old = self._buffers.popitem(last=False)
            self._bytes -= old.nbytes

    def clear(self):
        self._buffers.clear()
        self._bytes = 0

    @property
    def nbytes(self):
        return self._bytes


workspace = _Workspace()


# Threads for the compiled memory-bound kernels (Winograd transforms, direct loops); they release the
# GIL, and each thread owns a disjoint range of output maps, so results do not depend on the count.
THREADS = max(1, int(os.environ.get("PUZZLELIB_CONV_THREADS", min(2, os.cpu_count() or 1))))
# Below this many multiply-adds a kernel runs in the calling thread: a hand-off costs tens of us.
PARALLEL_WORK = 1 << 20

_pool = None


def threadCount(items, work):
    return max(1, min(THREADS, items)) if work >= PARALLEL_WORK else 1


def parallel(fn, items, work):
    """fn(lo, hi) over [0, items) split into contiguous ranges, one per thread (the caller runs the first)."""
    global _pool
    count = threadCount(items, work)
    if count == 1:
        fn(0, items)
        return
    if _pool is None or _pool._max_workers < count - 1:
        _pool = ThreadPoolExecutor(max_workers=count - 1, thread_name_prefix="puzzlelib-conv")
    bounds = [items * i // count for i in range(count + 1)]
    futures = [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, count)]
    fn(bounds[0], bounds[1])
    for future in futures:
        future.result()


def prod(values):
    return math.prod(values)
