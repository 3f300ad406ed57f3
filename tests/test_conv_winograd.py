"""Winograd engine internals: the weight gradient split in fixed parts (whole groups, or rows of tile
positions), per-group chunks, and the transforms of a share of the tile positions; float64 references
from test_conv_algorithms (independent direct sums)."""

import numpy as np
import pytest
from test_conv_algorithms import refBackwardParams, refForward

from PuzzleLib.Engines.cpu import conv, conv_common, conv_winograd

pytestmark = pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")


def _data(n, c, o, groups, h, w, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((o, c // groups, 3, 3))
    dy = rng.standard_normal((n, o, h, w))  # pad 1: the output is the size of the input
    return x, wt, dy


@pytest.mark.parametrize("groups", [1, 2, 3])  # tile positions split / whole groups / positions (odd groups)
@pytest.mark.parametrize("tiny", [False, True])
def test_weightGradientPartsMatchReferenceOnAnyThreadCount(groups, tiny, monkeypatch):
    x, w, dy = _data(2, 6, 6, groups, 13, 18)
    if tiny:  # one tile row per chunk: many chunks summed in order into each part's entries
        monkeypatch.setattr(conv_winograd, "chunkBytes", lambda resultBytes: 1)
    ref = refBackwardParams(x, dy, w.shape, (1, 1), (1, 1), (1, 1), groups)[0]
    results = []
    for threads in (1, 2, 2):
        monkeypatch.setattr(conv_common, "THREADS", threads)
        dw = conv.backwardParams(x, dy, w.shape, False, (1, 1), (1, 1), (1, 1), groups, algo="winograd")[0]
        assert np.abs(dw - ref).max() <= 1e-12 * np.abs(ref).max()
        results.append(dw)
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[1], results[2])


@pytest.mark.parametrize("groups", [2, 4])
def test_forwardOneGroupPerPassMatchesReference(groups, monkeypatch):
    # Chunks are transformed and multiplied one group at a time; tiny chunks cross batch items.
    monkeypatch.setattr(conv_winograd, "chunkBytes", lambda resultBytes: 1)
    x, w, _ = _data(2, 8, 12, groups, 11, 9)
    b = np.linspace(-1, 1, 12)
    y = conv_winograd.forward(x, w, b, (1, 1), groups)
    ref = refForward(x, w, b, (1, 1), (1, 1), (1, 1), groups)
    assert np.abs(y - ref).max() <= 1e-12 * np.abs(ref).max()


@pytest.mark.parametrize("a0,a1", [(0, 3), (3, 6), (2, 5)])
def test_transformsOfSomeTilePositionsEqualTheFullOnesRows(a0, a1):
    # The weight gradient's parts transform only rows [a0, a1) of the 6x6 tile positions: the same bits as
    # those rows of the full transforms.
    x, _, dy = _data(2, 5, 3, 1, 10, 15)
    th, tw = conv_winograd._tiles(10, 15, (1, 1))
    p, cst, k = 3 * tw, np.array([2, 4, 5, 8], dtype=x.dtype), 6 * (a1 - a0)
    full, part = np.zeros((36, 5 * p)), np.zeros((k, 5 * p))
    conv_winograd._inputTransform(x, full, 0, 0, 5, 1, 1, th, tw, 1, 4, cst, 0, 5, 0, 6)
    conv_winograd._inputTransform(x, part, 0, 0, 5, 1, 1, th, tw, 1, 4, cst, 0, 5, a0, a1)
    assert np.array_equal(full[6 * a0:6 * a1], part)
    full, part = np.zeros((36, 3 * p)), np.zeros((k, 3 * p))
    conv_winograd._gradTransform(dy, full, 0, 0, 3, th, tw, 1, 4, cst, 0, 3, 0, 6)
    conv_winograd._gradTransform(dy, part, 0, 0, 3, th, tw, 1, 4, cst, 0, 3, a0, a1)
    assert np.array_equal(full[6 * a0:6 * a1], part)
