"""Shared test helpers: where the spec lives, the float64 reference on the path, global-state hygiene."""

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# CI runs a fresh clone with a copy of shared/ beside it; PUZZLELIB_SHARED overrides.
SHARED = Path(os.environ.get("PUZZLELIB_SHARED", REPO.parent / "shared"))
SPEC = SHARED / "spec"

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def spec():
    """The spec folder, or a skip that says why it is missing."""
    if not SPEC.is_dir():
        pytest.skip(f"spec folder not found at {SPEC} (expected ../shared/spec beside the repository)")
    return SPEC


@pytest.fixture(autouse=True)
def _restoreConfig():
    """Tests may flip global switches; put them back so the order of tests never matters."""
    from PuzzleLib import Config

    saved = {name: getattr(Config, name) for name in
             ("backend", "globalEvalMode", "disableDtypeShapeChecks", "disableModuleCompatChecks")}
    yield
    for name, value in saved.items():
        setattr(Config, name, value)


def snapshot(module):
    """Copies of everything a failed call must leave alone: data, inData, grad and every Variable."""
    def copyOf(a):
        return None if a is None else np.array(a, copy=True)

    state = {
        "ids": (id(module.data), id(module.inData), id(module.grad)),
        "data": copyOf(module.data), "inData": copyOf(module.inData), "grad": copyOf(module.grad),
        "vars": {name: (id(var), id(var.data), copyOf(var.data), copyOf(var.grad))
                 for name, var in module.vars.items()},
        "attrs": {name: getattr(module, name, None) for name in ("W", "b")},
    }
    return state


def assertSameState(module, before):
    after = snapshot(module)
    assert after["ids"] == before["ids"], "data/inData/grad objects were replaced"
    for key in ("data", "inData", "grad"):
        _assertArrayEqual(after[key], before[key], key)
    assert after["vars"].keys() == before["vars"].keys()
    for name, (varId, dataId, data, grad) in before["vars"].items():
        nowId, nowDataId, nowData, nowGrad = after["vars"][name]
        assert (nowId, nowDataId) == (varId, dataId), f"Variable {name} was replaced"
        _assertArrayEqual(nowData, data, f"{name}.data")
        _assertArrayEqual(nowGrad, grad, f"{name}.grad")
    for name, value in before["attrs"].items():
        assert getattr(module, name, None) is value, f"attribute {name} was rebound"


def _assertArrayEqual(a, b, what):
    if a is None or b is None:
        assert a is None and b is None, f"{what}: {a!r} vs {b!r}"
    else:
        np.testing.assert_array_equal(a, b, err_msg=what)


def assertRestoresBlasThreads(run):
    """run() leaves OpenBLAS's thread count as it found it: 2 going in, so that a count left at 1 shows even
    where BLAS already runs one thread; the original count is put back afterwards."""
    from PuzzleLib.Engines.cpu import conv_common

    setN, getN = conv_common.blasThreads
    original = getN()
    setN(2)
    try:
        before = getN()
        run()
        assert getN() == before
    finally:
        setN(original)


@contextlib.contextmanager
def engineCall(resultBytes):
    """The block as one engine call (conv_common.beginCall / endCall): tiles bounded by the result's size,
    scratch released at the end, as the engine's entry points do."""
    from PuzzleLib.Engines.cpu import conv_common

    conv_common.beginCall(resultBytes)
    try:
        yield
    finally:
        conv_common.endCall()


def convData(case, dtype=np.float64, seed=0):
    """Random x, w, b and dy for a case laid out (N, C, spatial, O, kernel, stride, pad, dilation, groups),
    with the parameters (stride, pad, dilation, groups) to pass on."""
    from reference import outShape

    n, c, spatial, o, kernel, stride, pad, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c) + spatial).astype(dtype)
    w = rng.standard_normal((o, c // groups) + kernel).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    dy = rng.standard_normal((n, o) + outShape(spatial, kernel, stride, pad, dilation)).astype(dtype)
    return x, w, b, dy, (stride, pad, dilation, groups)


def convInputs32(n, c, o, groups, spatial, kernel, seed=0):
    """convData's float32 x, w and bias for an undilated stride-1 convolution without padding (its dy, drawn
    last, is left out: any geometry will do)."""
    unit = (1,) * len(spatial)
    x, w, bias, _, _ = convData((n, c, spatial, o, kernel, unit, (0,) * len(spatial), unit, groups), np.float32,
                                seed)
    return x, w, bias


def directionCalls(x, w, dy, args, algo):
    """The engine's three directions for x, w and dy with ``args`` (stride, pad, dilation, groups), no bias, one
    algorithm: {direction: call}, each call returning its array."""
    from PuzzleLib.Engines.cpu import conv

    return {
        "forward": lambda: conv.forward(x, w, None, *args, algo=algo),
        "backwardData": lambda: conv.backwardData(dy, w, x.shape, *args, algo=algo),
        "backwardParams": lambda: conv.backwardParams(x, dy, w.shape, False, *args, algo=algo)[0],
    }


def tracedPeak(run):
    """run() once (compiled kernels, memoised plans), then again with tracemalloc on, the scratch the engine
    keeps between calls dropped first: the second call's result and the most bytes it held at once (numpy's
    buffers included, its scratch too) beyond what was allocated before it."""
    import tracemalloc

    from PuzzleLib.Engines.cpu import conv_common

    run()
    conv_common.workspace.release()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = run()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return result, peak


def setTiles(monkeypatch, tile, threads):
    """The engine on ``threads`` threads with column tiles bounded by ``tile`` bytes (for the test)."""
    from PuzzleLib.Engines.cpu import conv_common

    monkeypatch.setattr(conv_common, "THREADS", threads)
    monkeypatch.setattr(conv_common, "TILE_BYTES", tile)
    monkeypatch.setattr(conv_common, "MIN_TILE_BYTES", min(conv_common.MIN_TILE_BYTES, tile))


def _flatArrays(result):
    """A result as a flat list: an array, None, or (nested) tuples and lists of them."""
    if isinstance(result, (tuple, list)):
        return [a for part in result for a in _flatArrays(part)]
    return [result]


def resultsOnThreads(monkeypatch, run, tile=None, threads=(1, 2, 2)):
    """run() once per entry of ``threads`` (the engine on that many threads; with ``tile``, column tiles
    bounded by it as setTiles sets them): every result must have the bits and dtype of the first, which is
    returned. Two runs on two threads catch a result that depends on how the threads happened to race."""
    from PuzzleLib.Engines.cpu import conv_common

    results = []
    for count in threads:
        if tile is None:
            monkeypatch.setattr(conv_common, "THREADS", count)
        else:
            setTiles(monkeypatch, tile, count)
        results.append(run())
    first = _flatArrays(results[0])
    for i, result in enumerate(results[1:], 1):
        got = _flatArrays(result)
        assert len(got) == len(first)
        for j, (a, b) in enumerate(zip(got, first)):
            what = f"result {j} of run {i} ({threads[i]} threads) vs run 0 ({threads[0]} threads)"
            if a is None or b is None:
                assert a is None and b is None, what
            else:
                assert a.dtype == b.dtype and np.array_equal(a, b), what
    return results[0]
