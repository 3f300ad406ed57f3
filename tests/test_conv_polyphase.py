"""Dilated 3x3 convolutions on polyphase sub-planes (conv_polyphase): the scratch estimate the optimiser's
memlimit relies on bounds what a call really allocates, on both of its plans (phases stacked along the batch,
or one phase at a time). Results against the float64 reference are tested in test_conv_algorithms."""

import numpy as np
import pytest
from conftest import directionCalls, tracedPeak

from PuzzleLib.Engines.cpu import conv, conv_polyphase, conv_winograd

CASES = [  # (x shape, w shape, pad, dilation)
    ((4, 32, 30, 30), (32, 32, 3, 3), (2, 2), (2, 2)),    # equal phases: the backward directions stack them
    ((2, 16, 31, 29), (24, 16, 3, 3), (3, 3), (3, 3)),    # unequal phases: one call per phase
    ((2, 32, 20, 20), (32, 32, 3, 3), (1, 1), (2, 2)),
    ((4, 64, 40, 40), (64, 64, 3, 3), (2, 2), (2, 2)),    # a smaller case 8 (benchmarks/conv.py)
]


def _scratchPeak(call):
    """Bytes a call allocates beyond its result, at its peak (numpy's buffers, as tracemalloc sees them)."""
    result, peak = tracedPeak(call)
    return peak - result.nbytes


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
@pytest.mark.parametrize("xShape,wShape,pad,dilation", CASES)
def test_workspaceEstimateBoundsPeak(xShape, wShape, pad, dilation):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(xShape).astype(np.float32)
    w = rng.standard_normal(wShape).astype(np.float32)
    args = ((1, 1), pad, dilation, 1)
    dy = rng.standard_normal((xShape[0], wShape[0]) + conv.outputShape(xShape[2:], (3, 3), *args[:3])) \
        .astype(np.float32)
    for direction, call in directionCalls(x, w, dy, args, "winograd").items():
        estimate = conv.workspaceBytes(direction, "winograd", xShape, wShape, *args)
        assert estimate == conv_polyphase.workspaceBytes(direction, xShape, wShape, pad, dilation, 1)
        peak = _scratchPeak(call)
        # Small numpy temporaries (views' headers, index arrays) come on top of the buffers the estimate counts.
        assert peak <= estimate + (64 << 10), direction
        assert estimate <= 4 * peak + (256 << 10), direction  # a bound, but not a vacuous one


def test_casesCoverBothPlans():
    equal = [conv_polyphase._equal(conv_polyphase._phases(x[2:], pad, dil)) for x, _, pad, dil in CASES]
    assert True in equal and False in equal


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
@pytest.mark.parametrize("spatial,pad,dilation", [
    ((12, 14), (2, 2), (2, 2)),   # two column phases of dilation 2: the interleaving loops
    ((11, 13), (1, 2), (2, 3)),   # three column phases, unequal sizes
    ((9, 10), (4, 1), (3, 2)),    # padding past the first phase's reach
    ((12, 9), (3, 0), (3, 3)),    # nine equal phases: the stacked kernels without the interleaving loops
])
def test_phaseKernelsAgainstStridedCopies(spatial, pad, dilation):
    """_phaseRows gathers each phase as numpy's strided _gather does (padding zero), channels split in two calls,
    and puts the interiors back where they came from."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3) + spatial).astype(np.float32)
    phases = conv_polyphase._phases(spatial, pad, dilation)
    rows, cols = conv_polyphase._tables(phases)
    (r0, c0) = phases[0]
    sizes = {(r[2], c[2]) for r, c in phases}
    for r, c in phases:
        expected = conv_polyphase._gather(x, np.full((2, 3, r[2], c[2]), np.nan, np.float32), r, c, dilation)
        one = [(r, c)]
        got = np.full((1, 2, 3, r[2], c[2]), np.nan, np.float32)
        conv_polyphase._movePhases(x, got, one, dilation)
        np.testing.assert_array_equal(got[0], expected)
    if len(sizes) == 1:  # stacked: all phases at once, in two channel ranges
        got = np.full((len(phases), 2, 3, r0[2], c0[2]), np.nan, np.float32)
        conv_polyphase._phaseRows(x, got, rows, cols, dilation[0], dilation[1], 0, 1, True)
        conv_polyphase._phaseRows(x, got, rows, cols, dilation[0], dilation[1], 1, 3, True)
        for i, (r, c) in enumerate(phases):
            np.testing.assert_array_equal(got[i], conv_polyphase._gather(x, np.empty_like(got[i]), r, c, dilation))
        back = np.full_like(x, np.nan)
        conv_polyphase._movePhases(back, got, phases, dilation, gather=False)
        np.testing.assert_array_equal(back, x)


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
@pytest.mark.parametrize("spatial,pad,dilation,kinds", [
    ((12, 14), (2, 2), (2, 2), {True}),          # every phase x's pixels only (as case 8's)
    ((10, 10), (1, 1), (3, 3), {True, False}),   # one phase of pixels only, eight padded
    ((10, 9), (1, 0), (2, 3), {False}),          # every phase padded
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forwardReadsPixelPhasesWhereTheyLie(spatial, pad, dilation, kinds, dtype, monkeypatch):
    """A phase whose buffer would hold x's pixels only is read as a strided view of x (_pixels), with the same
    bits as the gathered copy it stands for; the others are still gathered."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6) + spatial).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)  # two groups of 3 channels to 2 maps
    bias = rng.standard_normal(4).astype(dtype)
    seen = set()
    for phase in conv_polyphase._phases(spatial, pad, dilation):
        ([(r, c)], _) = conv_polyphase._interior([phase])
        view = conv_polyphase._pixels(x, r, c, dilation)
        seen.add(view is not None)
        if view is not None:
            assert np.shares_memory(view, x)
            np.testing.assert_array_equal(view, conv_polyphase._gather(x, np.empty(view.shape, dtype), r, c,
                                                                       dilation))
    assert seen == kinds
    inPlace = conv_polyphase.forward(x, w, bias, pad, dilation, 2)
    monkeypatch.setattr(conv_polyphase, "_pixels", lambda *args: None)  # every phase gathered first
    np.testing.assert_array_equal(inPlace, conv_polyphase.forward(x, w, bias, pad, dilation, 2))
