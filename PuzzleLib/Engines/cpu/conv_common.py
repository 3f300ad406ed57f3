"""Shared pieces of the convolution algorithms: output shapes, tap ranges, tiles and per-call scratch buffers.

Shapes everywhere: x (N, C, *spatial), w (O, C // groups, *kernel); ``stride``, ``pad`` and
``dilation`` are tuples with one entry per spatial axis. A kernel tap ``t`` on an axis reads input
index ``o * s + t * d - p`` for output index ``o``; padding is never materialised, each tap only
touches the output range whose input index is in bounds (``tapRange``).
"""

import ctypes
import functools
import glob
import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Upper bound of one column tile (im2col buffer): large enough for the GEMM to run near peak, small
# enough that the buffer does not grow with the batch or the image. A call may use less (``tileBytes``).
TILE_BYTES = 4 << 20
# Lower bound of the per-call tile: below it the GEMMs get too thin to run near peak.
MIN_TILE_BYTES = 1 << 20
# Scratch kept between calls (the workspace's arena), at most. Released at the end of each call, it came
# back from glibc as fresh pages whenever glibc had trimmed its heap in between, and that depends on the
# process's allocation history: through the module, case 5's forward (N8 128->256 28x28 s2) in a loop took
# ~760 page faults a call and 5.1 ms, kept 0 and 4.2 ms; its backward-data alternated 0 and ~2900 faults,
# 6 and 13-15 ms. A call has the same memory in use either way; between calls the arena holds the largest
# call's scratch (case 5, all three directions: 5.1 MiB, its backward-data's).
HELD_BYTES = 64 << 20


def tileBytesFor(resultBytes):
    """The column-tile bound of one call: about half the call's result, within [MIN_TILE_BYTES, TILE_BYTES].

    Scratch memory then stays proportional to what the call returns anyway (as torch/oneDNN's does).
    """
    return min(TILE_BYTES, max(min(MIN_TILE_BYTES, TILE_BYTES), resultBytes // 2))


class _Call:
    """The tile bound of the engine call in progress (None outside one: TILE_BYTES applies)."""
    tileBytes = None


_call = _Call()


def beginCall(resultBytes):
    """Start an engine call: its tiles are bounded by ``tileBytesFor(resultBytes)``. Pair with ``endCall``."""
    _call.tileBytes = tileBytesFor(resultBytes)


def endCall():
    """End an engine call: its scratch stays for the next call (the workspace's arena), up to HELD_BYTES."""
    _call.tileBytes = None
    workspace.settle(HELD_BYTES)


def tileBytes():
    """The column-tile bound in force: the call's (``beginCall``), else TILE_BYTES."""
    return _call.tileBytes or TILE_BYTES


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
    limit = tileBytes() if limit is None else limit
    perItem = bytesPerRow * rows
    if perItem <= limit:
        step = max(1, min(n, limit // max(perItem, 1)))
        return [(n0, min(n, n0 + step), 0, rows) for n0 in range(0, n, step)]
    step = max(1, limit // max(bytesPerRow, 1))
    return [(i, i + 1, r0, min(rows, r0 + step)) for i in range(n) for r0 in range(0, rows, step)]


class _Workspace:
    """Scratch buffers of the engine's calls, carved from one arena kept between calls.

    Each tag gets a region of the arena the first time a call asks for it; later requests under the tag
    in the same call are views of that region while they fit (a shorter last tile reuses it), else it gets
    a new one. What does not fit the arena gets a buffer of its own for this call; at the call's end
    (``endCall``) the arena grows to what the call asked for in all, up to HELD_BYTES, and the regions are
    forgotten: the next call carves the same memory again. So a loop of calls writes to pages it has already
    touched, and the memory kept is the largest call's scratch (calls of different algorithms share it).
    ``release`` drops everything. Callers must not return these views to the user: the next call
    overwrites them. One engine call at a time: the next call's regions reuse the last one's memory (the
    engine is driven by one thread; BLAS and the compiled kernels' threads only touch views they are handed).
    """

    _ALIGN = 64

    def __init__(self):
        self._lock = threading.Lock()  # a call's worker threads may ask for their own buffers
        self._arena = None
        self._regions = {}  # tag -> (start, its bytes: a uint8 view) in this call
        self._own = []  # (start, buffer) of this call's buffers outside the arena
        self._used = 0  # bytes carved (or given their own buffer) in this call
        self._peak = 0  # the most carved at once in this call (``rewind`` lowers _used)

    def get(self, tag, shape, dtype, zero=False):
        dtype = np.dtype(dtype)
        nbytes = max(math.prod(shape), 1) * dtype.itemsize
        with self._lock:
            entry = self._regions.get(tag)
            if entry is None or entry[1].size < nbytes:
                entry = self._regions[tag] = self._carve(nbytes)
        view = entry[1][:nbytes].view(dtype)[:math.prod(shape)].reshape(shape)
        if zero:
            view.fill(0)
        return view

    def _carve(self, nbytes):
        start = -(-self._used // self._ALIGN) * self._ALIGN
        self._used = start + nbytes
        if self._arena is not None and self._used <= self._arena.size:
            return start, self._arena[start:self._used]
        # np.empty, not zeros: every user overwrites its view (calloc would memset recycled memory).
        self._own.append((start, np.empty(nbytes, dtype=np.uint8)))
        return self._own[-1]

    def mark(self):
        """Where the next region would start: ``rewind`` to it frees what is carved after it."""
        with self._lock:
            return self._used

    def rewind(self, mark):
        """The regions carved since ``mark`` are dead: later requests reuse their memory (the ones before
        the mark, e.g. an enclosing algorithm's, stay)."""
        with self._lock:
            self._peak = max(self._peak, self._used)
            self._regions = {tag: entry for tag, entry in self._regions.items() if entry[0] < mark}
            self._own = [entry for entry in self._own if entry[0] < mark]
            self._used = mark

    def settle(self, limit):
        """A call's end: forget its regions; the arena grows to what it asked for at most at once, or, above
        ``limit`` bytes, everything is dropped."""
        with self._lock:
            used = max(self._peak, self._used)
            self._used = self._peak = 0
            self._regions.clear()
            self._own.clear()
            if used > limit:
                self._arena = None
            elif self._arena is None or self._arena.size < used:
                self._arena = None  # the old one goes first
                self._arena = _alignedBytes(used, self._ALIGN)

    def release(self):
        """Drop the arena and every buffer (the views handed out so far must be dead)."""
        with self._lock:
            self._arena = None
            self._regions.clear()
            self._own.clear()
            self._used = self._peak = 0

    @property
    def nbytes(self):
        with self._lock:
            return (0 if self._arena is None else self._arena.size) + sum(b.size for _, b in self._own)


def _alignedBytes(nbytes, align):
    """An uninitialised uint8 array of ``nbytes`` whose first byte is ``align``-aligned."""
    raw = np.empty(nbytes + align, dtype=np.uint8)
    skip = -raw.ctypes.data % align
    return raw[skip:skip + nbytes]


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
    first, *rest = ranges(items, count)
    futures = [_pool.submit(fn, lo, hi) for lo, hi in rest]
    fn(*first)
    for future in futures:
        future.result()


def memo(cache, key, make, limit=256):
    """``cache[key]``, made by ``make()`` on a miss; the cache is emptied when it grows past ``limit``."""
    value = cache.get(key)
    if value is None:
        if len(cache) > limit:
            cache.clear()
        value = cache[key] = make()
    return value


def prod(values):
    return math.prod(values)


def leadingView(flat, shape):
    """The leading part of a flat (reused) buffer as a C-contiguous array of ``shape``: no fresh allocation per
    chunk (fresh buffers cost case 8's weight gradient ~1.5 ms of page faults), and contiguous, as the compiled
    kernels need (numba compiles strided views into loops LLVM does not vectorise)."""
    return flat[:prod(shape)].reshape(shape)


def biasVector(bias, o, dtype):
    """The bias as a contiguous (o,) array of ``dtype`` (zeros without one), as the compiled kernels read it."""
    return np.zeros(o, dtype=dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype).reshape(o)


def lead3(values, fill=1):
    """Per-axis values of a 1-D to 3-D convolution as three: the compiled kernels are written for 3-D, and a
    missing leading axis is a unit one (``fill``: 1 for sizes, strides and dilations, 0 for padding)."""
    return (fill,) * (3 - len(values)) + tuple(values)


def shape5(shape):
    """(N, C, *spatial) as (N, C, D, H, W), unit leading spatial axes (see lead3)."""
    return tuple(shape[:2]) + lead3(shape[2:])


def as5(a):
    """A view of (N, C, *spatial) as (N, C, D, H, W), unit leading spatial axes: shape5 written out, as some
    callers take it per engine call."""
    return a.reshape(a.shape[:2] + (1,) * (5 - a.ndim) + a.shape[2:])


def params3(stride, pad, dilation):
    """Stride, padding and dilation of a 1-D to 3-D convolution for three axes (see lead3)."""
    return lead3(stride), lead3(pad, 0), lead3(dilation)


def transposedPad(kernel, pad, dilation):
    """Padding of the stride-1 transposed convolution (may be negative: the gradient is then cropped)."""
    return tuple(d * (k - 1) - p for k, p, d in zip(kernel, pad, dilation))


# -- threads: each runs whole chunks (transform, GEMMs, transform) with a single-threaded BLAS ---------
# Splitting each transform between threads around a two-thread GEMM gained nothing: OpenBLAS's idle
# workers spin after every GEMM and hold the second core. Whole chunks per thread, with BLAS set to one
# thread for the call, run the transforms and the small GEMMs side by side (case 1 forward 11.4 -> 6.5 ms).
def _findBlasThreads():
    pattern = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs", "*openblas*.so*")
    for path in sorted(glob.glob(pattern)):
        try:
            lib = ctypes.CDLL(path)
        except OSError:  # pragma: no cover - an unloadable library: no thread control
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                               ("openblas", "")):
            try:
                setN = getattr(lib, f"{prefix}_set_num_threads{suffix}")
                getN = getattr(lib, f"{prefix}_get_num_threads{suffix}")
            except AttributeError:
                continue
            setN.argtypes, setN.restype, getN.restype = [ctypes.c_int], None, ctypes.c_int
            return setN, getN
    return None


blasThreads = _findBlasThreads()


def chunkWorkers(chunks):
    """Threads to run ``chunks`` chunks on: one without control of the BLAS threads."""
    return max(1, min(THREADS, chunks)) if blasThreads is not None else 1


def oneBlasThread(fn):
    """fn with BLAS on one thread while it runs, its thread count restored after (unchanged without control)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if blasThreads is None:
            return fn(*args, **kwargs)
        setN, getN = blasThreads
        before = getN()
        setN(1)
        try:
            return fn(*args, **kwargs)
        finally:
            setN(before)

    return run


@oneBlasThread
def runChunks(fn, workers):
    """fn(k) for k in range(workers), one per thread, with BLAS single-threaded meanwhile (one worker too).

    The engine never runs OpenBLAS's own threads: once woken by a multi-threaded call they spin for about
    0.1 s (OPENBLAS_THREAD_TIMEOUT) holding a core, and the next step's threads (a gather, a transform,
    per-thread GEMMs) and the next call ran up to 2x slower (case 3 forward right after a backward-data:
    25.5 vs 13.2 ms; with OPENBLAS_THREAD_TIMEOUT=4, 16.4). A GEMM big enough for two threads is split
    between the engine's threads instead (matmul).
    """
    if blasThreads is None:
        for k in range(workers):
            fn(k)
        return
    _chunks.depth += 1  # a matmul on these threads runs whole, on its thread
    try:
        if workers == 1:
            fn(0)
        else:
            parallel(lambda k0, k1: [fn(k) for k in range(k0, k1)], workers, 1 << 62)
    finally:
        _chunks.depth -= 1


def dealParts(fn, parts, workers=None):
    """fn(k, j) for every part j in range(parts), on ``workers`` threads (runChunks; chunkWorkers(parts) by
    default), worker k taking parts k, k + workers, ...: the parts, fixed by the shape, decide the results,
    the thread count only who computes them."""
    workers = chunkWorkers(parts) if workers is None else workers

    def work(k):
        for j in range(k, parts, workers):
            fn(k, j)

    runChunks(work, workers)


def evenStep(total, step):
    """The step that cuts ``total`` into as many parts as ``step`` does, but of equal size (to within one): no
    thin last part."""
    return -(-total // -(-total // step))


def ranges(total, parts):
    """[0, total) cut into ``parts`` contiguous ranges [(lo, hi)] of about equal length (fixed by the counts alone;
    ``parallel`` hands its threads these)."""
    return [(total * k // parts, total * (k + 1) // parts) for k in range(parts)]


def pieces(count, workers):
    """[0, count) in 4 ranges per worker (fewer when count is small): elementwise work shared by shareItems, the
    threads taking the next piece as they finish."""
    return ranges(count, max(1, min(count, 4 * workers)))


def runs(items, parts):
    """``items`` cut into ``parts`` contiguous runs of about equal length (fixed by the counts alone)."""
    return [items[lo:hi] for lo, hi in ranges(len(items), parts)]


def shareItems(fn, items, workers):
    """fn(k, item) for every item, on ``workers`` threads (runChunks), each worker k taking the next item
    when it is done with one, so that a thread the host slows down takes fewer (a fixed half each waited
    for the slower thread). An item's result must not depend on the worker that runs it."""
    taken = itertools.count()  # next() on it is atomic under the GIL

    def work(k):
        for i in iter(taken.__next__, None):
            if i >= len(items):
                return
            fn(k, items[i])

    runChunks(work, workers)


class _Chunks:
    depth = 0  # > 0 while runChunks runs: BLAS is single-threaded and the pool is busy


_chunks = _Chunks()


def matmul(a, b, out):
    """``np.matmul(a, b, out=out)``, out's last axis (columns) cut into parts shared between the engine's
    threads, each part a single-threaded GEMM (see runChunks). The parts depend on the shape alone: OpenBLAS
    can round the last bits of a column differently with the width of the slice it is given, so cutting by
    thread count would make results depend on it."""
    if _chunks.depth or blasThreads is None:  # already on a worker (BLAS single-threaded), or no control
        np.matmul(a, b, out=out)
        return
    cols = out.shape[-1]
    parts = max(1, min(_SPLIT_PARTS, cols // _MIN_SPLIT_COLS)) if out.size * a.shape[-1] >= PARALLEL_WORK else 1
    bounds = [cols * k // parts for k in range(parts + 1)]

    def part(_, j):
        np.matmul(a, b[..., bounds[j]:bounds[j + 1]], out=out[..., bounds[j]:bounds[j + 1]])

    dealParts(part, parts)


# Column parts of a shared GEMM (fixed, whatever the thread count), and the fewest columns worth a part.
_SPLIT_PARTS = 2
_MIN_SPLIT_COLS = 64
