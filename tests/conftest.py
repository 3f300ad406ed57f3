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


@contextlib.contextmanager
def blasThreadsAt(count):
    """OpenBLAS set to ``count`` threads for the block, the original count restored after: a test that the
    engine puts the count back can then fail even where BLAS already runs one thread."""
    from PuzzleLib.Engines.cpu import conv_common

    setN, getN = conv_common.blasThreads
    original = getN()
    setN(count)
    try:
        yield
    finally:
        setN(original)


def assertRestoresBlasThreads(run):
    """run() leaves OpenBLAS's thread count as it found it (2 going in, so that a count left at 1 shows)."""
    from PuzzleLib.Engines.cpu import conv_common

    getN = conv_common.blasThreads[1]
    with blasThreadsAt(2):
        before = getN()
        run()
        assert getN() == before


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


def setTiles(monkeypatch, tile, threads):
    """The engine on ``threads`` threads with column tiles bounded by ``tile`` bytes (for the test)."""
    from PuzzleLib.Engines.cpu import conv_common

    monkeypatch.setattr(conv_common, "THREADS", threads)
    monkeypatch.setattr(conv_common, "TILE_BYTES", tile)
    monkeypatch.setattr(conv_common, "MIN_TILE_BYTES", min(conv_common.MIN_TILE_BYTES, tile))
