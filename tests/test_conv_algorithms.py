"""Each convolution algorithm of the CPU engine against the independent float64 references of
tests/reference.py (one einsum per kernel tap over a zero-padded input, and its adjoints). Winograd is held
to its own (larger) error bound; every other algorithm to float rounding.
"""

import numpy as np
import pytest
from conftest import assertRestoresBlasThreads, convData, resultsOnThreads
from reference import convBackwardData, convBackwardParams, convForward

from PuzzleLib.Engines.cpu import conv, conv_common, conv_direct, conv_im2col, conv_winograd, sgemm

# -- cases ---------------------------------------------------------------------------------------------------
# (N, C, spatial, O, kernel, stride, pad, dilation, groups)
GENERAL = [
    (2, 3, (9,), 4, (3,), (1,), (1,), (1,), 1),
    (2, 4, (11,), 6, (4,), (3,), (2,), (2,), 2),
    (2, 3, (7, 6), 5, (3, 2), (1, 1), (1, 0), (1, 1), 1),
    (3, 4, (9, 8), 4, (3, 3), (2, 3), (1, 2), (2, 1), 2),
    (1, 2, (5, 5), 2, (5, 5), (1, 1), (0, 0), (1, 1), 1),       # kernel as large as the map
    (2, 6, (8, 7), 6, (3, 3), (1, 1), (1, 1), (1, 1), 6),       # depthwise
    (2, 4, (8, 8), 8, (3, 3), (2, 2), (1, 1), (1, 1), 4),       # depthwise, channel multiplier 2
    (1, 2, (4, 5, 6), 3, (2, 3, 2), (1, 2, 1), (1, 0, 1), (2, 1, 1), 1),
    (2, 4, (5, 4, 4), 4, (3, 1, 3), (2, 1, 1), (1, 0, 2), (1, 1, 2), 2),
    (2, 3, (6, 5), 3, (1, 3), (1, 1), (1, 3), (1, 1), 3),       # pad beyond the kernel: cropped transposes
]
POINTWISE = [
    (2, 6, (5, 7), 4, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    (3, 6, (9,), 9, (1,), (1,), (0,), (1,), 3),
    (2, 4, (3, 4, 2), 2, (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), 2),
]
WINOGRAD = [
    (2, 5, (9, 11), 7, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 3, (4, 3), 2, (3, 3), (1, 1), (0, 0), (1, 1), 1),
    (2, 4, (13, 6), 6, (3, 3), (1, 1), (2, 0), (1, 1), 2),
    (1, 16, (14, 14), 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),
]

TOL32 = dict(rtol=2e-5, atol=2e-5)
TOL64 = dict(rtol=1e-12, atol=1e-12)


def _check(algo, case, dtype, tol, scaled=False):
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, dtype)
    checks = [
        (conv.forward(x, w, b, stride, pad, dilation, groups, algo=algo),
         convForward(x, w, b, stride, pad, dilation, groups)),
        (conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo=algo),
         convBackwardData(dy, w, x.shape, stride, pad, dilation, groups)),
    ]
    dw, db = conv.backwardParams(x, dy, w.shape, True, stride, pad, dilation, groups, algo=algo)
    rdw, rdb = convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)
    checks += [(dw, rdw), (db, rdb.ravel())]  # the reference's db is shaped (1, O, 1, ...), the engine's (O,)
    for got, ref in checks:
        assert got.dtype == dtype and got.shape == ref.shape
        if scaled:
            # Winograd: error relative to the largest output magnitude.
            err = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30)
            assert err < tol, f"{algo}: relative error {err:.3g} exceeds {tol:.3g}"
        else:
            np.testing.assert_allclose(got, ref, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", GENERAL + POINTWISE + WINOGRAD)
def test_im2col(case, dtype):
    _check("im2col", case, dtype, TOL32 if dtype == np.float32 else TOL64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", GENERAL + POINTWISE + WINOGRAD[:2])
def test_direct(case, dtype):
    _check("direct", case, dtype, TOL32 if dtype == np.float32 else TOL64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POINTWISE)
def test_gemm(case, dtype):
    _check("gemm", case, dtype, TOL32 if dtype == np.float32 else TOL64)


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WINOGRAD)
def test_winograd(case, dtype):
    # The stated bound (conv_winograd): max error / max |result| below 5e-5 in float32, 1e-12 in float64,
    # for the output, the input gradient and the weight gradient alike.
    _check("winograd", case, dtype, 5e-5 if dtype == np.float32 else 1e-12, scaled=True)


def test_winogradBoundOnLargerSum():
    # 64 input channels: more rounding accumulates; the bound still holds.
    case = (1, 64, (16, 16), 8, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    _check("winograd", case, np.float32, 5e-5, scaled=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [GENERAL[1], GENERAL[3], GENERAL[5], GENERAL[8]])
def test_directNumpyFallback(case, dtype, monkeypatch):
    monkeypatch.setattr(conv_direct, "useNumba", False)
    _check("direct", case, dtype, TOL32 if dtype == np.float32 else TOL64)


@pytest.mark.parametrize("direction", conv.DIRECTIONS)
def test_tilesBoundedAndExact(direction, monkeypatch):
    # A tiny tile bound forces tiling over rows of a single item; results must not change.
    from PuzzleLib.Engines.cpu import conv_common
    case = (3, 5, (13, 10), 6, (3, 2), (2, 1), (2, 1), (1, 2), 1)
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float64)
    run = {
        "forward": lambda: conv.forward(x, w, b, stride, pad, dilation, groups, algo="im2col"),
        "backwardData": lambda: conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="im2col"),
        "backwardParams": lambda: conv.backwardParams(x, dy, w.shape, True, stride, pad, dilation, groups,
                                                      algo="im2col")[0],
    }[direction]
    whole = run()
    monkeypatch.setattr(conv_common, "TILE_BYTES", 600)
    tiled = run()
    np.testing.assert_allclose(tiled, whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algo,case", [("im2col", GENERAL[3]), ("direct", GENERAL[6]), ("winograd", WINOGRAD[0]),
                                       ("gemm", POINTWISE[1])])
def test_deterministic(algo, case):
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float32)
    first = conv.forward(x, w, b, stride, pad, dilation, groups, algo=algo)
    firstData = conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo=algo)
    for _ in range(2):
        assert np.array_equal(conv.forward(x, w, b, stride, pad, dilation, groups, algo=algo), first)
        assert np.array_equal(conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo=algo), firstData)


def test_heuristicPicks():
    assert conv.chooseAlgorithm("forward", (8, 256, 56, 56), (64, 256, 1, 1), (1, 1), (0, 0), (1, 1), 1) == "gemm"
    assert conv.chooseAlgorithm("forward", (8, 256, 28, 28), (256, 1, 3, 3), (1, 1), (1, 1), (1, 1), 256) == "direct"
    assert conv.chooseAlgorithm("backwardParams", (8, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1),
                                1) == "winograd"
    assert conv.chooseAlgorithm("forward", (8, 512, 7, 7), (512, 512, 3, 3), (1, 1), (1, 1), (1, 1), 1) == "winograd"
    assert conv.chooseAlgorithm("forward", (8, 128, 28, 28), (256, 128, 3, 3), (2, 2), (1, 1), (1, 1), 1) == "winograd"
    assert conv.chooseAlgorithm("forward", (8, 256, 14, 14), (512, 256, 3, 3), (2, 2), (1, 1), (1, 1), 1) == "im2col"


@pytest.mark.parametrize("direction", ["forward", "backwardData", "backwardParams"])
def test_heuristicRunsLittleWorkDirect(direction):
    """Calls of little work go to the direct loops (im2col's set-up costs more than they do), but only with few
    channels, where those loops keep up (conv._heuristic's figures)."""
    one, d2 = (1,), (2,)
    assert conv.chooseAlgorithm(direction, (2, 3, 11), (4, 3, 3), one, (0,), d2, 1) == "direct"  # the tiny1d case
    assert conv.chooseAlgorithm(direction, (1, 2, 5, 4, 6), (3, 2, 2, 2, 2), (1,) * 3, (0,) * 3, (1,) * 3,
                                1) == "direct"                                                     # tiny3d
    assert conv.chooseAlgorithm(direction, (4, 4, 8, 8), (4, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1) == "direct"
    assert conv.chooseAlgorithm(direction, (8, 8, 32), (8, 8, 3), one, one, one, 1) == "im2col"  # 49K, 8 channels
    assert conv.chooseAlgorithm(direction, (4, 16, 8), (16, 16, 3), one, one, one, 1) == "im2col"  # 16 channels
    assert conv.chooseAlgorithm(direction, (16, 4, 8, 8), (4, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1) == \
        ("direct" if direction == "backwardData" else "im2col")  # see the next test


def test_heuristicRunsFirstLayersBackwardDataDirect():
    """2-D stride-1 backward-data with one group of up to 12 input channels goes to the direct loops; 16
    channels, stride 2 (case 3), 1-D and forward stay where they were (conv._heuristic's figures)."""
    one = ((1, 1), (1, 1), (1, 1), 1)
    assert conv.chooseAlgorithm("backwardData", (8, 3, 112, 112), (64, 3, 3, 3), *one) == "direct"
    assert conv.chooseAlgorithm("backwardData", (8, 12, 56, 56), (64, 12, 3, 3), *one) == "direct"
    assert conv.chooseAlgorithm("backwardData", (8, 16, 32, 32), (16, 16, 3, 3), *one) == "im2col"
    assert conv.chooseAlgorithm("forward", (8, 3, 112, 112), (64, 3, 3, 3), *one) == "im2col"
    assert conv.chooseAlgorithm("backwardData", (8, 3, 224, 224), (64, 3, 7, 7), (2, 2), (3, 3), (1, 1),
                                1) == "im2col"
    assert conv.chooseAlgorithm("backwardData", (8, 3, 2048), (64, 3, 7), (1,), (3,), (1,), 1) == "im2col"


def test_badAlgorithm():
    x, w, b, dy, (stride, pad, dilation, groups) = convData(GENERAL[3], np.float32)
    with pytest.raises(ValueError, match="applicable"):
        conv.forward(x, w, b, stride, pad, dilation, groups, algo="winograd")
    with pytest.raises(ValueError, match="Unknown direction"):
        conv.algorithms("sideways", x.shape, w.shape, stride, pad, dilation, groups)


def test_timeAlgorithmsRespectsMemlimit():
    shape, wShape = (2, 16, 12, 12), (16, 16, 3, 3)
    results = conv.timeAlgorithms("forward", shape, wShape, (1, 1), (1, 1), (1, 1), 1, repeats=1)
    assert {r[0] for r in results} >= {"im2col", "direct"}
    assert [r[1] for r in results] == sorted(r[1] for r in results)
    limited = conv.timeAlgorithms("forward", shape, wShape, (1, 1), (1, 1), (1, 1), 1, memlimit=0, repeats=1)
    assert all(r[2] == 0 for r in limited) and "im2col" not in {r[0] for r in limited}


def test_optimizeForShapeKeepsChoiceAndResult():
    from PuzzleLib.Backend import gpuarray
    from PuzzleLib.Modules.Conv2D import Conv2D

    np.random.seed(1)
    module = Conv2D(8, 16, 3, pad=1)
    x = gpuarray.to_gpu(np.random.standard_normal((2, 8, 10, 10)).astype(np.float32))
    before = module(x).get()
    module.optimizeForShape(x.shape)
    assert module.fwdAlgo in ("im2col", "winograd", "direct")
    assert module.bwdDataAlgo in ("im2col", "winograd", "direct")
    assert module.bwdFilterAlgo in ("im2col", "winograd", "direct")
    after = module(x).get()
    tol = 5e-5 * np.abs(before).max() if module.fwdAlgo == "winograd" else 1e-5
    np.testing.assert_allclose(after, before, atol=tol)
    module.optimizeForShape(x.shape, memlimit=0)
    assert (module.fwdAlgo, module.bwdDataAlgo, module.bwdFilterAlgo) == ("direct",) * 3
    module.backward(gpuarray.to_gpu(np.ones(module.data.shape, dtype=np.float32)))
    np.testing.assert_allclose(module.vars["b"].grad.get().ravel(), np.full(16, 200.0))


# -- compiled im2col gather and 3-D Winograd (depth slices stacked as channels) ------------------------------
STRIDED_LAST = [
    (2, 3, (17,), 4, (5,), (3,), (2,), (2,), 1),                   # 1-D, stride 3 de-interleaved, dilation
    (2, 3, (23, 22), 5, (7, 7), (2, 2), (3, 3), (1, 1), 1),        # the 7x7 stride-2 stem on an odd map
    (1, 6, (9, 10), 4, (3, 2), (1, 4), (0, 5), (2, 1), 2),         # stride beyond the kernel, pad beyond it
    (2, 4, (5, 6, 7), 6, (2, 3, 3), (2, 1, 2), (1, 1, 2), (1, 2, 1), 2),
]
WINOGRAD3D = [
    (2, 4, (5, 6, 7), 6, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 2),
    (1, 3, (4, 5, 5), 2, (2, 3, 3), (1, 1, 1), (0, 2, 0), (1, 1, 1), 1),
    (2, 3, (3, 4, 4), 3, (3, 3, 3), (1, 1, 1), (2, 1, 1), (1, 1, 1), 1),   # depth pad beyond the kernel
    (1, 8, (6, 9, 5), 8, (1, 3, 3), (1, 1, 1), (0, 1, 0), (1, 1, 1), 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", STRIDED_LAST)
def test_im2colCompiledGather(case, dtype):
    from PuzzleLib.Engines.cpu import conv_im2col
    assert conv_im2col.useNumba
    _check("im2col", case, dtype, TOL32 if dtype == np.float32 else TOL64)


@pytest.mark.parametrize("case", [STRIDED_LAST[1], STRIDED_LAST[3], GENERAL[3]])
def test_im2colNumpyFallback(case, monkeypatch):
    from PuzzleLib.Engines.cpu import conv_im2col
    monkeypatch.setattr(conv_im2col, "useNumba", False)
    _check("im2col", case, np.float64, TOL64)


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WINOGRAD3D)
def test_winograd3d(case, dtype):
    # Same stated bound as the 2-D Winograd (its sums are over kD * C/groups stacked channels).
    assert "winograd" in conv.algorithms("forward", (1, case[1]) + case[2], (case[3], case[1] // case[8]) + case[4],
                                         *case[5:])
    _check("winograd", case, dtype, 5e-5 if dtype == np.float32 else 1e-12, scaled=True)


@pytest.mark.parametrize("algo,case", [("im2col", STRIDED_LAST[1]), ("im2col", STRIDED_LAST[3]),
                                       ("winograd", WINOGRAD3D[0])])
def test_deterministicCompiled(algo, case):
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float32)
    first = conv.backwardParams(x, dy, w.shape, True, stride, pad, dilation, groups, algo=algo)[0]
    firstY = conv.forward(x, w, b, stride, pad, dilation, groups, algo=algo)
    for _ in range(2):
        assert np.array_equal(conv.backwardParams(x, dy, w.shape, True, stride, pad, dilation, groups, algo=algo)[0],
                              first)
        assert np.array_equal(conv.forward(x, w, b, stride, pad, dilation, groups, algo=algo), firstY)


def test_heuristicPicksWinograd3d():
    args = ((1, 1, 1), (1, 1, 1), (1, 1, 1), 1)
    assert conv.chooseAlgorithm("forward", (2, 32, 16, 32, 32), (32, 32, 3, 3, 3), *args) == "winograd"
    assert conv.chooseAlgorithm("forward", (2, 32, 16, 32, 32), (32, 32, 3, 3, 3), (1, 1, 1), (1, 1, 1), (2, 1, 1),
                                1) == "im2col"


@pytest.mark.parametrize("case", [GENERAL[1], GENERAL[3], STRIDED_LAST[1], STRIDED_LAST[3]])
def test_im2colWeightGradientBlocksAndChunks(case, monkeypatch):
    # A tiny tile bound cuts the weight-gradient GEMM both along dw's rows (blocks within each group) and
    # along the batch's pixels (partial products added): the result still matches the reference.
    from PuzzleLib.Engines.cpu import conv_common
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float64)
    monkeypatch.setattr(conv_common, "TILE_BYTES", 700)
    dw, _ = conv.backwardParams(x, dy, w.shape, False, stride, pad, dilation, groups, algo="im2col")
    np.testing.assert_allclose(dw, convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)[0], **TOL64)


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
@pytest.mark.parametrize("case", WINOGRAD3D[:3])
def test_winograd3dOneSlicePerChunk(case, monkeypatch):
    # The stacked input is built one output depth slice at a time: same results as the reference.
    from PuzzleLib.Engines.cpu import conv_winograd3d
    monkeypatch.setattr(conv_winograd3d, "STACK_BYTES", 1)
    _check("winograd", case, np.float64, 1e-12, scaled=True)


@pytest.mark.skipif(not conv_direct.useNumba, reason="numba is not installed")
@pytest.mark.parametrize("kernel", [(1, 1), (1, 2), (2, 2), (3, 3), (2, 5), (4, 4), (1, 3, 3), (3, 3, 3)])
def test_directTapPassesEveryKernelSize(kernel):
    # The direct kernels sum 9, then 3, then 1 taps per pass: every remainder mix matches the reference,
    # forward and the unit-stride backward-data that reads the kernel flipped in place.
    spatial = (7, 6) if len(kernel) == 2 else (4, 5, 6)
    case = (2, 4, spatial, 4, kernel, (1,) * len(kernel), tuple(k // 2 for k in kernel), (1,) * len(kernel), 2)
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float64)
    y = conv.forward(x, w, b, stride, pad, dilation, groups, algo="direct")
    np.testing.assert_allclose(y, convForward(x, w, b, stride, pad, dilation, groups), **TOL64)
    dy = np.random.default_rng(3).standard_normal(y.shape)
    dx = conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="direct")
    np.testing.assert_allclose(dx, convBackwardData(dy, w, x.shape, stride, pad, dilation, groups), **TOL64)


@pytest.mark.skipif(not conv_direct.useNumba, reason="numba is not installed")
def test_directBackwardDataSeesWeightsChangedInPlace():
    # Nothing derived from w is kept between calls: an in-place update shows in the next gradient.
    x, w, b, dy, (stride, pad, dilation, groups) = convData(GENERAL[5], np.float64)
    first = conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="direct")
    w *= -2.0
    second = conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="direct")
    np.testing.assert_allclose(second, convBackwardData(dy, w, x.shape, stride, pad, dilation, groups), **TOL64)
    np.testing.assert_allclose(second, -2.0 * first, **TOL64)


# -- Winograd: chunks run on threads with BLAS single-threaded --------------------------------------------
WINOGRAD_CHUNKED = (3, 6, (21, 17), 5, (3, 3), (1, 1), (1, 1), (1, 1), 1)  # 3 x 6 x 5 tiles: many small chunks


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
@pytest.mark.parametrize("threads", [1, 2])
def test_winogradChunksOnThreadsMatchReference(threads, monkeypatch):
    # Tiny chunks (one tile row each) dealt out to the threads: every direction still meets the float64 bound,
    # with the padding gathered into the transform, partial edge tiles and tile rows crossing batch items.
    monkeypatch.setattr(conv_common, "THREADS", threads)
    monkeypatch.setattr(conv_winograd, "chunkBytes", lambda resultBytes: 1)
    _check("winograd", WINOGRAD_CHUNKED, np.float64, 1e-12, scaled=True)


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
def test_winogradWeightGradientIndependentOfThreadCount(monkeypatch):
    # The weight gradient sums its chunks in fixed partial sums: bit-identical with one thread or two.
    x, w, b, dy, (stride, pad, dilation, groups) = convData(WINOGRAD_CHUNKED, np.float32)
    monkeypatch.setattr(conv_winograd, "chunkBytes", lambda resultBytes: 1)
    resultsOnThreads(monkeypatch, lambda: conv.backwardParams(x, dy, w.shape, False, stride, pad, dilation, groups,
                                                              algo="winograd")[0])


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("runBytes", [1, 1 << 30])
def test_winograd3dSharedSlicesMatchReference(threads, runBytes, monkeypatch):
    # Forward (and backward-data through it) transforms each input slice once per run of output slices:
    # runs of one output slice or all of them, on one or two threads, with groups and depth padding.
    from PuzzleLib.Engines.cpu import conv_winograd3d
    monkeypatch.setattr(conv_common, "THREADS", threads)
    monkeypatch.setattr(conv_winograd3d, "STACK_BYTES", runBytes)
    monkeypatch.setattr(conv_winograd, "chunkBytes", lambda resultBytes: 1)
    _check("winograd", (2, 6, (5, 9, 6), 4, (3, 3, 3), (1, 1, 1), (1, 2, 0), (1, 1, 1), 2), np.float64, 1e-12,
           scaled=True)


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
def test_winograd3dWeightGradientRunsIndependentOfThreadCount(monkeypatch):
    # One output slice per run, runs split into fixed partial sums: the same bits on one thread or two,
    # and within the bound of the float64 reference.
    case = (2, 4, (5, 7, 6), 6, (3, 3, 3), (1, 1, 1), (1, 1, 0), (1, 1, 1), 2)
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float64)
    monkeypatch.setattr(conv_winograd, "chunkBytes", lambda resultBytes: 1)
    dw = resultsOnThreads(monkeypatch, lambda: conv.backwardParams(x, dy, w.shape, False, stride, pad, dilation,
                                                                   groups, algo="winograd")[0], threads=(1, 2))
    ref = convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)[0]
    assert np.abs(dw - ref).max() < 1e-12 * np.abs(ref).max()


# -- direct "same" path (unit stride, output shape = input shape, kernel 3 wide) ---------------------------
SAME_CASES = [
    (2, 4, (7, 6), 4, (3, 3), (1, 1), (1, 1), (1, 1), 4),  # depthwise
    (2, 4, (5, 9), 6, (5, 3), (1, 1), (2, 1), (1, 1), 2),  # several kernel rows, groups of 2 channels
    (1, 2, (9, 8), 2, (3, 3), (1, 1), (2, 2), (2, 2), 2),  # dilation: shifts of +-2
    (1, 2, (2, 1), 2, (3, 3), (1, 1), (1, 1), (1, 1), 2),  # maps narrower than the kernel
    (2, 3, (11,), 3, (3,), (1,), (1,), (1,), 3),  # 1-D
    (1, 2, (4, 5, 6), 2, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 2),  # 3-D
]


@pytest.mark.skipif(not conv_direct.useNumba, reason="numba is not installed")
@pytest.mark.parametrize("case", SAME_CASES)
def test_directSameShape(case):
    # Taps read the unpadded input at flat shifts; wrapped columns are masked and band ends run per pixel.
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float64)
    y = conv.forward(x, w, b, stride, pad, dilation, groups, algo="direct")
    np.testing.assert_allclose(y, convForward(x, w, b, stride, pad, dilation, groups), **TOL64)
    dx = conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="direct")
    np.testing.assert_allclose(dx, convBackwardData(dy, w, x.shape, stride, pad, dilation, groups), **TOL64)


@pytest.mark.skipif(not conv_direct.useNumba, reason="numba is not installed")
def test_directSameShapeMasksWrappedColumns():
    # An inf in the last column must not reach the next row's first column through the flat shift.
    x, w, b, dy, (stride, pad, dilation, groups) = convData(SAME_CASES[0], np.float32)
    x[:, :, 2, -1] = np.inf
    y = conv.forward(x, w, b, stride, pad, dilation, groups, algo="direct")
    assert np.isfinite(y[:, :, 3, 0]).all() and np.isfinite(y[:, :, 1:4, :4]).all()
    assert np.isinf(y[:, :, 2, -1]).all()


# -- im2col: threads running their own tiles (small weights) or sharing each GEMM (large weights) -----------
@pytest.mark.parametrize("ownBytes", [0, 1 << 30])   # every weight matrix shared / run per thread
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", [GENERAL[3], STRIDED_LAST[1], STRIDED_LAST[3],
                                  (2, 2, (9, 9), 18, (3, 3), (2, 2), (1, 1), (1, 1), 1)])  # dw square: O = C * taps
def test_im2colThreadModesMatchReference(case, threads, ownBytes, monkeypatch):
    # A tiny tile bound makes many tiles (forward) and many pixel chunks summed in fixed partial sums times
    # several column blocks (weight gradient), dealt out to one or two threads: both still match float64.
    from PuzzleLib.Engines.cpu import conv_common, conv_im2col
    monkeypatch.setattr(conv_common, "THREADS", threads)
    monkeypatch.setattr(conv_im2col, "_OWN_GEMM_BYTES", ownBytes)
    monkeypatch.setattr(conv_common, "TILE_BYTES", 700)
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float64)
    np.testing.assert_allclose(conv.forward(x, w, b, stride, pad, dilation, groups, algo="im2col"),
                               convForward(x, w, b, stride, pad, dilation, groups), **TOL64)
    dw, _ = conv.backwardParams(x, dy, w.shape, False, stride, pad, dilation, groups, algo="im2col")
    np.testing.assert_allclose(dw, convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)[0], **TOL64)


@pytest.mark.parametrize("tile", [700, 1 << 20])  # chunks summed in partials / the whole batch in one chunk
def test_im2colIndependentOfThreadCount(tile, monkeypatch):
    # Per-thread tiles and partial sums are fixed by the shape: bit-identical results on one thread or two.
    from PuzzleLib.Engines.cpu import conv_common
    monkeypatch.setattr(conv_common, "TILE_BYTES", tile)
    x, w, b, dy, (stride, pad, dilation, groups) = convData(STRIDED_LAST[1], np.float32)
    # The thread count alone changes: the tile bound above leaves MIN_TILE_BYTES as it is (setTiles would lower it).
    resultsOnThreads(monkeypatch, lambda: (
        conv.forward(x, w, b, stride, pad, dilation, groups, algo="im2col"),
        conv.backwardParams(x, dy, w.shape, False, stride, pad, dilation, groups, algo="im2col")[0]))


@pytest.mark.skipif(conv_common.blasThreads is None, reason="no control of the BLAS threads")
@pytest.mark.parametrize("algo,case", [("winograd", WINOGRAD[3]), ("im2col", STRIDED_LAST[1])])
def test_restoresBlasThreads(algo, case):
    # Winograd's chunks and im2col's per-thread tiles run with BLAS held at one thread: the count goes back.
    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float32)
    assertRestoresBlasThreads(lambda: (
        conv.forward(x, w, b, stride, pad, dilation, groups, algo=algo),
        conv.backwardParams(x, dy, w.shape, True, stride, pad, dilation, groups, algo=algo)))


STEM = (2, 3, (23, 22), 16, (7, 7), (2, 2), (3, 3), (1, 1), 1)  # the 7x7 stride-2 stem, dy larger than x


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tile", [400 << 10, 77616])  # one chunk per item / chunks of three output rows
def test_im2colWeightGradientDeinterleavedMatchesReference(tile, threads, monkeypatch):
    # Chunks within one item and the whole column matrix in one block: the weight gradient gathers from the
    # de-interleaved input (the forward's gather) instead of reading the stride-2 axis in place.
    from PuzzleLib.Engines.cpu import conv_common, conv_im2col
    monkeypatch.setattr(conv_common, "THREADS", threads)
    monkeypatch.setattr(conv_common, "TILE_BYTES", tile)
    plans = []
    plan = conv_im2col._fastPlan
    monkeypatch.setattr(conv_im2col, "_fastPlan", lambda *a: plans.append(1) or plan(*a))
    x, w, b, dy, (stride, pad, dilation, groups) = convData(STEM, np.float64)
    dw, _ = conv.backwardParams(x, dy, w.shape, False, stride, pad, dilation, groups, algo="im2col")
    assert plans == [1]
    np.testing.assert_allclose(dw, convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)[0], **TOL64)


# -- dilated 3x3 stride 1: Winograd on the polyphase sub-planes (conv_polyphase) ----------------------------
POLYPHASE = [
    (2, 3, (9, 11), 4, (3, 3), (1, 1), (0, 0), (2, 2), 1),
    (2, 4, (11, 13), 6, (3, 3), (1, 1), (1, 2), (2, 3), 2),        # odd maps, groups, phases of unequal sizes
    (1, 3, (13, 7), 5, (3, 3), (1, 1), (3, 0), (3, 1), 1),
    (2, 2, (7, 9), 3, (3, 3), (1, 1), (4, 4), (2, 2), 1),          # pad beyond the dilated kernel's reach
    (1, 4, (10, 9), 4, (3, 3), (1, 1), (2, 1), (2, 3), 4),         # depthwise
    (1, 2, (5, 8), 2, (3, 3), (1, 1), (0, 3), (2, 3), 1),          # one output row: some phases are empty
]


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POLYPHASE)
def test_winogradDilatedPolyphase(case, dtype):
    assert "winograd" in conv.algorithms("forward", (case[0], case[1]) + case[2], (case[3], case[1] // case[8])
                                         + case[4], case[5], case[6], case[7], case[8])
    _check("winograd", case, dtype, 5e-5 if dtype == np.float32 else 1e-12, scaled=True)


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
def test_winogradDilatedDeterministicAndChosen():
    x, w, b, dy, (stride, pad, dilation, groups) = convData(POLYPHASE[1], np.float32)
    first = [conv.forward(x, w, b, stride, pad, dilation, groups, algo="winograd"),
             conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="winograd"),
             conv.backwardParams(x, dy, w.shape, True, stride, pad, dilation, groups, algo="winograd")[0]]
    for _ in range(2):
        again = [conv.forward(x, w, b, stride, pad, dilation, groups, algo="winograd"),
                 conv.backwardData(dy, w, x.shape, stride, pad, dilation, groups, algo="winograd"),
                 conv.backwardParams(x, dy, w.shape, True, stride, pad, dilation, groups, algo="winograd")[0]]
        assert all(np.array_equal(a, f) for a, f in zip(again, first))
    case8 = ((8, 64, 56, 56), (64, 64, 3, 3), (1, 1), (2, 2), (2, 2), 1)
    assert conv.chooseAlgorithm("forward", *case8) == "winograd"
    assert conv.chooseAlgorithm("backwardData", *case8) == "winograd"
    assert conv.chooseAlgorithm("backwardParams", *case8) == "winograd"
    # Phases of 5x5 outputs are too small for the tiles to pay off.
    assert conv.chooseAlgorithm("forward", (8, 64, 10, 10), (64, 64, 3, 3), (1, 1), (2, 2), (2, 2), 1) == "im2col"


@pytest.mark.skipif(not conv_winograd.available, reason="numba is not installed")
@pytest.mark.parametrize("stackBytes", [1, 1 << 40])
@pytest.mark.parametrize("case", [
    (5, 3, (8, 12), 4, (3, 3), (1, 1), (2, 2), (2, 2), 1),      # equal phases: 5 items in chunks of 2, 2, 1
    (3, 4, (12, 9), 6, (3, 3), (1, 1), (3, 0), (3, 3), 2),      # nine equal phases, groups
])
def test_polyphaseStackedChunks(case, stackBytes):
    """Backward directions with the phases stacked along the batch axis, in batch chunks (stackBytes=1: the
    smallest chunks, n / phases items) or in one chunk: both equal the float64 reference."""
    from PuzzleLib.Engines.cpu import conv_polyphase

    x, w, b, dy, (stride, pad, dilation, groups) = convData(case, np.float64)
    phases = conv_polyphase._phases(x.shape[2:], pad, dilation)
    assert conv_polyphase._equal(phases)
    dx = conv_polyphase.backwardData(dy, w, x.shape, pad, dilation, groups, stackBytes=stackBytes)
    np.testing.assert_allclose(dx, convBackwardData(dy, w, x.shape, stride, pad, dilation, groups), **TOL64)
    dw = conv_polyphase.backwardParams(x, dy, w.shape, pad, dilation, groups, stackBytes=stackBytes)
    np.testing.assert_allclose(dw, convBackwardParams(x, dy, w.shape, stride, pad, dilation, groups)[0], **TOL64)


@pytest.mark.parametrize("aShape, bShape", [((64, 64), (64, 196)), ((256, 1152), (1152, 1568)), ((3, 7), (7, 4001)),
                                            ((1, 64, 256), (2, 1, 256, 3136))])
def test_sharedMatmulIndependentOfThreadCount(aShape, bShape, monkeypatch):
    # conv_common.matmul cuts the columns by shape, not by thread count: same bits on 1 and 2 threads,
    # and the product itself (checked against float64).
    from PuzzleLib.Engines.cpu import conv_common
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(aShape, dtype=np.float32), rng.standard_normal(bShape, dtype=np.float32)
    expected = np.matmul(a.astype(np.float64), b)
    monkeypatch.setattr(conv_common, "PARALLEL_WORK", 1)  # every shape split, the small ones too

    def product():
        out = np.empty(expected.shape, np.float32)
        conv_common.matmul(a, b, out)
        return out

    np.testing.assert_allclose(resultsOnThreads(monkeypatch, product, threads=(1, 2)), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("groups,items", [(1, 5), (2, 5), (1, 1)])
def test_pointwiseSameBitsOnAnyThreadCount(groups, items, monkeypatch):
    # 1x1 forward / backward-data over several items run fixed runs of items per thread, one item its columns
    # split between them: same bits on 1 or 2. Float32 in one group takes sgemm where the host has it (both
    # directions: 128 maps).
    fast = groups == 1 and sgemm.applies(np.dtype(np.float32))
    assert conv_im2col._packedGemm(np.float32, 64, groups) == fast
    assert conv_im2col._packedGemmData(np.float32, 64, 128, groups) == fast
    rng = np.random.default_rng(11)
    x = rng.standard_normal((items, 64, 24, 24), dtype=np.float32)
    w = rng.standard_normal((128, 64 // groups, 1, 1), dtype=np.float32)
    b = rng.standard_normal(128, dtype=np.float32)
    dy = rng.standard_normal((items, 128, 24, 24), dtype=np.float32)
    unit, zero = (1, 1), (0, 0)
    y, dx = resultsOnThreads(monkeypatch, lambda: (
        conv.forward(x, w, b, unit, zero, unit, groups, algo="gemm"),
        conv.backwardData(dy, w, x.shape, unit, zero, unit, groups, algo="gemm")), threads=(1, 2))
    np.testing.assert_allclose(y, convForward(x, w, b, unit, zero, unit, groups), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, convBackwardData(dy, w, x.shape, unit, zero, unit, groups), rtol=1e-4, atol=1e-4)
