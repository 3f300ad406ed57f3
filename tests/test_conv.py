"""ConvND/Conv1D/Conv2D/Conv3D: forward and every gradient against the float64 reference in tests/reference.py."""

import math

import numpy as np
import pytest
from reference import (
    convBackwardData,
    convBackwardParams,
    convBruteForce,
    convForward,
    outShape,
)

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Modules import Conv1D, Conv2D, Conv3D, ConvND
from PuzzleLib.Variable import Variable

CLASSES = {1: Conv1D, 2: Conv2D, 3: Conv3D}
# Largest spatial extent per dimensionality, so every config stays cheap.
MAXMAP = {1: 24, 2: 12, 3: 8}


def randomConfig(rng, nd):
    """One random but valid convolution: every feature of the issue appears often over a few hundred seeds."""
    groups = int(rng.choice([1, 1, 1, 2, 3, 4]))
    depthwise = rng.random() < 0.2
    cg = 1 if depthwise else int(rng.integers(1, 4))
    og = 1 if depthwise else int(rng.integers(1, 4))
    inmaps, outmaps = groups * cg, groups * og
    size = tuple(int(k) for k in rng.integers(1, 5, size=nd))
    if rng.random() < 0.15:
        size = (1,) * nd
    stride = tuple(int(s) for s in rng.integers(1, 4, size=nd))
    pad = tuple(int(p) for p in rng.integers(0, 3, size=nd))
    dilation = tuple(int(d) for d in rng.integers(1, 4, size=nd)) if rng.random() < 0.4 else (1,) * nd
    spatial = []
    for k, p, d in zip(size, pad, dilation):
        need = d * (k - 1) + 1 - 2 * p
        spatial.append(max(1, need, int(rng.integers(max(1, need), max(need, 1) + MAXMAP[nd]))))
    if rng.random() < 0.15:
        # A kernel exactly as large as the padded map: one output position per axis.
        dilation = (1,) * nd
        spatial = [int(n) for n in rng.integers(1, MAXMAP[nd] - 1, size=nd)]
        pad = tuple(int(p) for p in rng.integers(0, 2, size=nd))
        size = tuple(n + 2 * p for n, p in zip(spatial, pad))
    batch = int(rng.integers(1, 4))
    useBias = bool(rng.random() < 0.75)
    return dict(nd=nd, batch=batch, inmaps=inmaps, outmaps=outmaps, size=size, stride=stride, pad=pad,
                dilation=dilation, groups=groups, useBias=useBias, spatial=tuple(spatial))


def convConfig(*, inmaps, outmaps, size, spatial, batch=2, stride=None, pad=None, dilation=None, groups=1,
               useBias=True):
    """A configuration as randomConfig makes them, for the cases written out: only what is special about a
    case is named (stride and dilation default to 1, padding to 0 on every axis)."""
    nd = len(spatial)
    return dict(nd=nd, batch=batch, inmaps=inmaps, outmaps=outmaps, size=size, stride=stride or (1,) * nd,
                pad=pad or (0,) * nd, dilation=dilation or (1,) * nd, groups=groups, useBias=useBias,
                spatial=spatial)


def makeConv(cfg, rng, kind="class"):
    """A module for cfg with random weights and bias; built through the class, ConvND, or scalar arguments."""
    args = dict(stride=cfg["stride"], pad=cfg["pad"], dilation=cfg["dilation"], groups=cfg["groups"],
                useBias=cfg["useBias"])
    if kind == "ConvND":
        conv = ConvND(cfg["nd"], cfg["inmaps"], cfg["outmaps"], cfg["size"], **args)
    else:
        conv = CLASSES[cfg["nd"]](cfg["inmaps"], cfg["outmaps"], cfg["size"], **args)
    w = rng.standard_normal(conv.W.shape).astype(np.float32)
    conv.setVar("W", Variable(gpuarray.to_gpu(w)))
    if cfg["useBias"]:
        b = rng.standard_normal(conv.b.shape).astype(np.float32)
        conv.setVar("b", Variable(gpuarray.to_gpu(b)))
    else:
        assert "b" not in conv.vars and conv.b is None
    return conv


def assertClose(actual, expected, what, rtol=1e-4):
    """Float32 against float64: the error is bounded relative to the magnitude of the reference."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual - expected).max(initial=0.0))
    assert err <= rtol * scale, f"{what}: max abs error {err} > {rtol} * {scale}"


def checkConfig(cfg, seed, kind="class"):
    rng = np.random.default_rng(seed + 10_000)
    conv = makeConv(cfg, rng, kind)
    x = rng.standard_normal((cfg["batch"], cfg["inmaps"]) + cfg["spatial"]).astype(np.float32)
    params = (cfg["stride"], cfg["pad"], cfg["dilation"], cfg["groups"])
    W = conv.W.get()
    b = conv.b.get() if cfg["useBias"] else None

    y = conv(gpuarray.to_gpu(x))
    yRef = convForward(x, W, b, *params)
    assertClose(y.get(), yRef, f"forward {cfg}")
    assert conv.dataShapeFrom(x.shape) == yRef.shape

    dy = rng.standard_normal(yRef.shape).astype(np.float32)
    conv.backward(gpuarray.to_gpu(dy))
    assertClose(conv.grad.get(), convBackwardData(dy, W, x.shape, *params), f"input grad {cfg}")
    dW, db = convBackwardParams(x, dy, W.shape, *params)
    assertClose(conv.vars["W"].grad.get(), dW, f"W grad {cfg}")
    if cfg["useBias"]:
        assertClose(conv.vars["b"].grad.get(), db, f"b grad {cfg}")
    # The parameters themselves are untouched by backward.
    np.testing.assert_array_equal(conv.W.get(), W)


SEEDS_PER_CHUNK = 40


@pytest.mark.parametrize("nd,chunk", [(nd, c) for nd in (1, 2, 3) for c in range(4)])
def test_random_configs_against_reference(nd, chunk):
    """4 chunks x 40 seeds per dimensionality: 480 configurations in all."""
    for seed in range(chunk * SEEDS_PER_CHUNK, (chunk + 1) * SEEDS_PER_CHUNK):
        cfg = randomConfig(np.random.default_rng(1000 * nd + seed), nd)
        checkConfig(cfg, seed, kind="ConvND" if seed % 5 == 0 else "class")


def test_random_configs_cover_every_feature():
    """The generator above must actually produce each combination the issue names."""
    seen = set()
    for nd in (1, 2, 3):
        for seed in range(4 * SEEDS_PER_CHUNK):
            cfg = randomConfig(np.random.default_rng(1000 * nd + seed), nd)
            out = outShape(cfg["spatial"], cfg["size"], cfg["stride"], cfg["pad"], cfg["dilation"])
            seen.add(f"batch>1/{nd}") if cfg["batch"] > 1 else None
            if len(set(cfg["spatial"])) > 1:
                seen.add("non-square")
            if any((n + 2 * p - d * (k - 1) - 1) % s for n, k, s, p, d in
                   zip(cfg["spatial"], cfg["size"], cfg["stride"], cfg["pad"], cfg["dilation"])):
                seen.add(f"stride-not-dividing/{nd}")
            if all(k == n + 2 * p for k, n, p in zip(cfg["size"], cfg["spatial"], cfg["pad"])):
                seen.add(f"kernel-as-large-as-padded-map/{nd}")
            if all(o == 1 for o in out):
                seen.add("single-output")
            if cfg["size"] == (1,) * nd:
                seen.add(f"1x1/{nd}")
            if max(cfg["dilation"]) > 1 and max(cfg["stride"]) > 1:
                seen.add(f"dilation-with-stride/{nd}")
            if cfg["groups"] > 1:
                seen.add(f"groups/{nd}")
            if cfg["groups"] > 1 and cfg["inmaps"] == cfg["outmaps"] == cfg["groups"]:
                seen.add(f"depthwise/{nd}")
            if not cfg["useBias"]:
                seen.add(f"no-bias/{nd}")
            if len(set(cfg["size"])) > 1:
                seen.add(f"rectangular-kernel/{nd}")
            if max(cfg["pad"]) > 0:
                seen.add(f"pad/{nd}")
    expected = {"non-square", "single-output"}
    for nd in (1, 2, 3):
        expected |= {f"batch>1/{nd}", f"stride-not-dividing/{nd}", f"kernel-as-large-as-padded-map/{nd}",
                     f"1x1/{nd}", f"dilation-with-stride/{nd}", f"groups/{nd}", f"depthwise/{nd}",
                     f"no-bias/{nd}", f"pad/{nd}"}
        if nd > 1:
            expected.add(f"rectangular-kernel/{nd}")
    assert expected <= seen, f"never generated: {sorted(expected - seen)}"


# -- named cases the issue lists, each once, so a failure says what broke -----------------------------------------
NAMED = {
    "batch3-nonsquare": convConfig(batch=3, inmaps=2, outmaps=3, size=(3, 3), spatial=(7, 11)),
    "stride-not-dividing": convConfig(inmaps=3, outmaps=2, size=(3, 3), stride=(2, 3), pad=(1, 0), spatial=(8, 10)),
    "kernel-as-padded-map": convConfig(inmaps=2, outmaps=4, size=(7, 9), pad=(1, 2), groups=2, spatial=(5, 5)),
    "1x1-strided": convConfig(inmaps=5, outmaps=3, size=(1, 1), stride=(2, 2), spatial=(7, 6)),
    "dilation-with-stride": convConfig(inmaps=2, outmaps=2, size=(3, 2), stride=(2, 3), pad=(1, 1), dilation=(2, 3),
                                       spatial=(11, 13)),
    "depthwise": convConfig(inmaps=6, outmaps=6, size=(3, 3), pad=(1, 1), groups=6, spatial=(6, 7)),
    "depthwise-multiplier": convConfig(inmaps=3, outmaps=6, size=(3, 3), stride=(2, 1), pad=(1, 1), groups=3,
                                       useBias=False, spatial=(6, 7)),
    "groups-no-bias": convConfig(inmaps=8, outmaps=4, size=(2, 3), stride=(1, 2), pad=(0, 1), groups=4, useBias=False,
                                 spatial=(5, 8)),
    "conv1d-all": convConfig(batch=3, inmaps=4, outmaps=6, size=(4,), stride=(3,), pad=(2,), dilation=(2,), groups=2,
                             spatial=(17,)),
    "conv3d-all": convConfig(inmaps=4, outmaps=2, size=(2, 3, 1), stride=(2, 1, 3), pad=(1, 0, 1), dilation=(2, 1, 1),
                             groups=2, spatial=(5, 6, 7)),
    "pad-larger-than-kernel": convConfig(batch=1, inmaps=1, outmaps=2, size=(2, 2), stride=(2, 2), pad=(3, 3),
                                         spatial=(5, 5)),
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_case(name):
    checkConfig(NAMED[name], seed=7)


def test_reference_matches_brute_force():
    """The einsum reference agrees with the definition, one output element at a time."""
    rng = np.random.default_rng(3)
    cases = [
        ((2, 4, 6, 5), (6, 2, 3, 2), (2, 1), (1, 0), (1, 2), 2),
        ((1, 3, 9), (3, 1, 3), (2,), (2,), (3,), 3),
        ((1, 2, 4, 3, 5), (2, 2, 2, 1, 3), (1, 2, 2), (1, 0, 1), (2, 1, 1), 1),
    ]
    for xShape, wShape, stride, pad, dilation, groups in cases:
        x, w = rng.standard_normal(xShape), rng.standard_normal(wShape)
        b = rng.standard_normal(wShape[0])
        np.testing.assert_allclose(convForward(x, w, b, stride, pad, dilation, groups),
                                   convBruteForce(x, w, b, stride, pad, dilation, groups), rtol=1e-12, atol=1e-12)


def test_reference_gradients_are_adjoints():
    """<conv(x, w), dy> = <x, dX(dy)> = <w, dW(x, dy)>: the reference's gradients are the true adjoints."""
    rng = np.random.default_rng(4)
    for xShape, wShape, stride, pad, dilation, groups in [
        ((2, 4, 7, 6), (6, 2, 3, 2), (2, 3), (1, 2), (2, 1), 2),
        ((3, 2, 10), (4, 1, 3), (3,), (1,), (2,), 2),
        ((2, 3, 4, 5, 6), (3, 1, 2, 2, 3), (1, 2, 2), (1, 1, 0), (1, 2, 1), 3),
    ]:
        x, w = rng.standard_normal(xShape), rng.standard_normal(wShape)
        y = convForward(x, w, None, stride, pad, dilation, groups)
        dy = rng.standard_normal(y.shape)
        inner = np.vdot(y, dy)
        np.testing.assert_allclose(np.vdot(x, convBackwardData(dy, w, xShape, stride, pad, dilation, groups)), inner)
        dW, db = convBackwardParams(x, dy, wShape, stride, pad, dilation, groups)
        np.testing.assert_allclose(np.vdot(w, dW), inner)
        np.testing.assert_allclose(db.ravel(), dy.sum(axis=(0,) + tuple(range(2, dy.ndim))))


# -- backward semantics ----------------------------------------------------------------------------------------------
def _convAndData(seed=0, useBias=True):
    cfg = dict(NAMED["stride-not-dividing"], useBias=useBias)
    rng = np.random.default_rng(seed)
    conv = makeConv(cfg, rng)
    x = rng.standard_normal((cfg["batch"], cfg["inmaps"]) + cfg["spatial"]).astype(np.float32)
    y = conv(gpuarray.to_gpu(x))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    params = (cfg["stride"], cfg["pad"], cfg["dilation"], cfg["groups"])
    dW, db = convBackwardParams(x, dy, conv.W.shape, *params)
    return conv, x, dy, dW, db


@pytest.mark.parametrize("scale,momentum", [(1.0, 0.0), (0.5, 0.0), (2.0, 1.0), (0.25, 0.75), (1.0, 1.0), (-1.5, 0.3)])
def test_backward_scale_momentum(scale, momentum):
    """Each parameter gradient becomes scale * new + momentum * old."""
    conv, x, dy, dW, db = _convAndData()
    oldW = np.random.default_rng(1).standard_normal(conv.W.shape).astype(np.float32)
    oldB = np.random.default_rng(2).standard_normal(conv.b.shape).astype(np.float32)
    conv.vars["W"].grad.set(oldW)
    conv.vars["b"].grad.set(oldB)
    wgrad, bgrad = conv.vars["W"].grad, conv.vars["b"].grad
    conv.backward(gpuarray.to_gpu(dy), scale=scale, momentum=momentum)
    assert conv.vars["W"].grad is wgrad and conv.vars["b"].grad is bgrad, "gradients must be updated in place"
    assertClose(wgrad.get(), scale * dW + momentum * oldW.astype(np.float64), "W grad")
    assertClose(bgrad.get(), scale * db + momentum * oldB.astype(np.float64), "b grad")


def test_backward_momentum_zero_ignores_nan_in_old_gradient():
    conv, x, dy, dW, db = _convAndData()
    conv.vars["W"].grad.fill(np.nan)
    conv.backward(gpuarray.to_gpu(dy), momentum=0.0)
    assertClose(conv.vars["W"].grad.get(), dW, "W grad")


def test_backward_twice_with_momentum_one_accumulates():
    conv, x, dy, dW, db = _convAndData()
    conv.backward(gpuarray.to_gpu(dy))
    conv.backward(gpuarray.to_gpu(dy), momentum=1.0)
    assertClose(conv.vars["W"].grad.get(), 2 * dW, "W grad")
    assertClose(conv.vars["b"].grad.get(), 2 * db, "b grad")


def test_backward_upd_param_grads_false_leaves_parameter_gradients():
    conv, x, dy, dW, db = _convAndData()
    conv.vars["W"].grad.fill(3.0)
    conv.backward(gpuarray.to_gpu(dy), updParamGrads=False)
    np.testing.assert_array_equal(conv.vars["W"].grad.get(), np.full(conv.W.shape, 3.0, np.float32))
    np.testing.assert_array_equal(conv.vars["b"].grad.get(), np.zeros(conv.b.shape, np.float32))
    assert conv.grad is not None and conv.grad.shape == x.shape


def test_backward_upd_grad_false_leaves_input_gradient():
    conv, x, dy, dW, db = _convAndData()
    assert conv.grad is None
    conv.backward(gpuarray.to_gpu(dy), updGrad=False)
    assert conv.grad is None
    assertClose(conv.vars["W"].grad.get(), dW, "W grad")


def test_backward_in_eval_mode_computes_no_parameter_gradients():
    conv, x, dy, dW, db = _convAndData()
    conv.evalMode()
    conv(gpuarray.to_gpu(x))
    conv.backward(gpuarray.to_gpu(dy))
    np.testing.assert_array_equal(conv.vars["W"].grad.get(), np.zeros(conv.W.shape, np.float32))
    assert conv.grad.shape == x.shape


def test_backward_without_bias():
    conv, x, dy, dW, db = _convAndData(useBias=False)
    conv.backward(gpuarray.to_gpu(dy), scale=2.0)
    assert set(conv.vars) == {"W"}
    assertClose(conv.vars["W"].grad.get(), 2 * dW, "W grad")


def test_backward_returns_nothing_and_accepts_numpy():
    conv, x, dy, dW, db = _convAndData()
    assert conv.backward(dy) is None
    assertClose(conv.vars["W"].grad.get(), dW, "W grad")


def test_forward_accepts_numpy_and_returns_data():
    conv, x, dy, dW, db = _convAndData()
    out = conv(x)
    assert out is conv.data
    assert isinstance(conv.inData, gpuarray.GPUArray)
    np.testing.assert_array_equal(np.asarray(conv.inData), x)


def test_forward_plan_follows_shape_weights_and_algorithm():
    # The module plans its forward's dispatch once per input shape, dtype, kernel shape and algorithm: each change
    # is followed (float64, as the gradient checks switch to, in tests/test_conv_gradcheck.py), and new weights
    # are read on every call.
    rng = np.random.default_rng(3)
    conv = Conv2D(2, 3, 2, pad=1)
    for shape in ((1, 2, 5, 5), (2, 2, 4, 6), (1, 2, 5, 5)):
        x = rng.standard_normal(shape).astype(np.float32)
        ref = convForward(x, conv.W.get(), conv.b.get().ravel(), (1, 1), (1, 1), (1, 1), 1)
        assertClose(conv(x).get(), ref, f"forward of {shape}")
    w = rng.standard_normal(conv.W.shape).astype(np.float32)
    conv.setVar("W", Variable(gpuarray.to_gpu(w)))
    assertClose(conv(x).get(), convForward(x, w, conv.b.get().ravel(), (1, 1), (1, 1), (1, 1), 1), "new weights")
    conv.fwdAlgo = "im2col"
    assertClose(conv(x).get(), convForward(x, w, conv.b.get().ravel(), (1, 1), (1, 1), (1, 1), 1), "im2col")
    assert conv._planKey[3] == "im2col"


# -- construction ----------------------------------------------------------------------------------------------------
def test_constructor_defaults_and_shapes():
    np.random.seed(0)
    conv = Conv2D(4, 6, 3)
    assert conv.stride == (1, 1) and conv.pad == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1
    assert conv.useBias is True and conv.W.shape == (6, 4, 3, 3) and conv.b.shape == (1, 6, 1, 1)
    assert conv.W.dtype == np.float32 and conv.b.dtype == np.float32
    np.testing.assert_array_equal(conv.b.get(), 0)
    assert conv.vars["W"].grad.shape == conv.W.shape
    for attr in ("fwdAlgo", "bwdDataAlgo", "bwdFilterAlgo"):
        assert hasattr(conv, attr)
    # The default scheme is xavier_uniform with fan-in 4 * 9: every weight inside +-sqrt(3 / 36).
    assert np.abs(conv.W.get()).max() <= math.sqrt(3 / 36)
    assert str(conv) == "Module Conv2D (name: None)"


def test_constructor_dims_and_tuples():
    assert Conv1D(2, 4, 5, stride=2, pad=1, dilation=3).W.shape == (4, 2, 5)
    c1 = Conv1D(2, 4, (5,), stride=(2,), pad=(1,), dilation=(3,))
    assert (c1.size, c1.stride, c1.pad, c1.dilation) == ((5,), (2,), (1,), (3,))
    c3 = Conv3D(2, 4, (1, 2, 3), stride=(1, 2, 3), pad=(0, 1, 2), groups=2)
    assert c3.W.shape == (4, 1, 1, 2, 3) and c3.b.shape == (1, 4, 1, 1, 1)
    assert c3.stride == (1, 2, 3) and c3.pad == (0, 1, 2) and c3.dilation == (1, 1, 1)
    c2 = Conv2D(3, 3, size=(2, 5), groups=3, useBias=False)
    assert c2.W.shape == (3, 1, 2, 5) and c2.b is None and set(c2.vars) == {"W"}
    nd = ConvND(2, 2, 2, 3)
    assert nd.W.shape == (2, 2, 3, 3)


def test_numpy_integers_are_accepted():
    conv = Conv2D(np.int64(2), np.int32(4), np.int64(3), stride=np.int64(2), groups=np.int64(2))
    assert conv.W.shape == (4, 1, 3, 3) and conv.stride == (2, 2)


def test_empty_creates_no_variables():
    conv = Conv2D(2, 4, 3, empty=True)
    assert conv.vars == {} and conv.W is None and conv.b is None
    conv.setVar("W", Variable(gpuarray.to_gpu(np.ones((4, 2, 3, 3), np.float32))))
    out = conv(np.ones((1, 2, 3, 3), np.float32))
    np.testing.assert_array_equal(out.get(), np.full((1, 4, 1, 1), 18.0, np.float32))


def test_initscheme_reproducible_with_numpy_seed():
    np.random.seed(42)
    a = Conv3D(3, 4, 2, initscheme="he").W.get()
    np.random.seed(42)
    b = Conv3D(3, 4, 2, initscheme="he").W.get()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_conv_fan_in(groups):
    """Fan-in of a grouped conv is inmaps / groups * kernel volume: xavier_uniform bound sqrt(3 / fan)."""
    np.random.seed(groups)
    conv = Conv2D(16, 64, (3, 5), groups=groups, initscheme="xavier_uniform")
    bound = math.sqrt(3.0 / (16 // groups * 15))
    w = conv.W.get()
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.95 * bound


def test_blueprint_records_constructor_arguments():
    conv = Conv2D(2, 4, 3, stride=2, pad=(1, 0), name="c", groups=2, useBias=False)
    bp = conv.getBlueprint()
    assert bp["classname"] == "Conv2D"
    scheme = bp["scheme"]
    assert scheme["inmaps"] == 2 and scheme["outmaps"] == 4 and scheme["size"] == 3
    assert scheme["stride"] == 2 and scheme["pad"] == (1, 0) and scheme["groups"] == 2
    assert scheme["useBias"] is False and scheme["name"] == "c"
    rebuilt = Conv2D(**scheme)
    assert rebuilt.W.shape == conv.W.shape and rebuilt.stride == conv.stride and rebuilt.pad == conv.pad


def test_shape_formulas():
    conv = Conv2D(2, 3, 3, stride=(2, 3), pad=(1, 0), dilation=(2, 1))
    assert conv.dataShapeFrom((4, 2, 9, 10)) == (4, 3, (9 + 2 - 4 - 1) // 2 + 1, (10 - 2 - 1) // 3 + 1)
    assert conv.gradShapeFrom((4, 3, 4, 3)) == (4, 2, 3 * 2 + 4 - 2 + 1, 2 * 3 + 2 + 1)


def test_num_of_params_and_param_size():
    conv = Conv2D(4, 6, 3, groups=2)
    assert conv.numOfParams() == 6 * 2 * 9 + 6
    assert conv.paramSize() == 4 * (6 * 2 * 9 + 6)
    assert Conv2D(4, 6, 3, useBias=False).numOfParams() == 6 * 4 * 9


def test_optimize_for_shape_keeps_results():
    """Whatever algorithms optimizeForShape picks, results stay those of the reference."""
    cfg = NAMED["dilation-with-stride"]
    rng = np.random.default_rng(0)
    conv = makeConv(cfg, rng)
    x = rng.standard_normal((cfg["batch"], cfg["inmaps"]) + cfg["spatial"]).astype(np.float32)
    conv.optimizeForShape(x.shape)
    conv.optimizeForShape(x.shape, memlimit=1 << 16)
    params = (cfg["stride"], cfg["pad"], cfg["dilation"], cfg["groups"])
    y = conv(x)
    assertClose(y.get(), convForward(x, conv.W.get(), conv.b.get(), *params), "forward")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    conv.backward(dy)
    assertClose(conv.grad.get(), convBackwardData(dy, conv.W.get(), x.shape, *params), "input grad")
    assertClose(conv.vars["W"].grad.get(), convBackwardParams(x, dy, conv.W.shape, *params)[0], "W grad")


# -- every engine algorithm, not only the heuristic's pick -------------------------------------------------------------
def checkEveryAlgorithm(cfg, seed):
    """Force each algorithm that applies, direction by direction, through the module's algorithm fields."""
    from PuzzleLib.Backend import Dnn

    rng = np.random.default_rng(seed)
    conv = makeConv(cfg, rng)
    x = rng.standard_normal((cfg["batch"], cfg["inmaps"]) + cfg["spatial"]).astype(np.float32)
    params = (cfg["stride"], cfg["pad"], cfg["dilation"], cfg["groups"])
    W = conv.W.get()
    b = conv.b.get() if cfg["useBias"] else None
    yRef = convForward(x, W, b, *params)
    dy = rng.standard_normal(yRef.shape).astype(np.float32)
    dxRef = convBackwardData(dy, W, x.shape, *params)
    dWRef, dbRef = convBackwardParams(x, dy, W.shape, *params)
    kwargs = dict(stride=cfg["stride"], pad=cfg["pad"], dilation=cfg["dilation"], groups=cfg["groups"])
    tried = []
    for direction, attr in ((Dnn.FORWARD, "fwdAlgo"), (Dnn.BACKWARD_DATA, "bwdDataAlgo"),
                            (Dnn.BACKWARD_PARAMS, "bwdFilterAlgo")):
        for algo in Dnn.convNdAlgorithms(direction, x.shape, W.shape, **kwargs):
            conv.fwdAlgo = conv.bwdDataAlgo = conv.bwdFilterAlgo = None
            setattr(conv, attr, algo)
            what = f"{direction}/{algo} {cfg}"
            y = conv(x)
            assertClose(y.get(), yRef, what)
            conv.backward(dy)
            assertClose(conv.grad.get(), dxRef, what)
            assertClose(conv.vars["W"].grad.get(), dWRef, what)
            if b is not None:
                assertClose(conv.vars["b"].grad.get(), dbRef, what)
            tried.append(algo)
    return tried


ALGO_CASES = {
    "winograd-odd-sizes": convConfig(inmaps=5, outmaps=3, size=(3, 3), pad=(1, 1), spatial=(9, 14)),
    "winograd-no-pad": convConfig(batch=1, inmaps=2, outmaps=4, size=(3, 3), useBias=False, spatial=(3, 7)),
    "winograd-pad2-groups": convConfig(inmaps=4, outmaps=6, size=(3, 3), pad=(2, 2), groups=2, spatial=(5, 6)),
    "winograd-wide": convConfig(batch=3, inmaps=20, outmaps=18, size=(3, 3), pad=(1, 0), spatial=(17, 13)),
    "winograd-depthwise": convConfig(inmaps=4, outmaps=4, size=(3, 3), pad=(1, 1), groups=4, spatial=(8, 8)),
    "gemm-1x1": convConfig(batch=3, inmaps=6, outmaps=4, size=(1, 1), groups=2, spatial=(5, 7)),
    "gemm-1x1-1d": convConfig(inmaps=3, outmaps=5, size=(1,), useBias=False, spatial=(11,)),
    "gemm-1x1-3d": convConfig(inmaps=4, outmaps=4, size=(1, 1, 1), groups=4, spatial=(3, 4, 5)),
    "direct-depthwise-strided": convConfig(inmaps=6, outmaps=12, size=(3, 2), stride=(2, 3), pad=(1, 2),
                                           dilation=(2, 1), groups=6, spatial=(9, 10)),
}


@pytest.mark.parametrize("name", sorted(ALGO_CASES))
def test_every_algorithm_named(name):
    tried = checkEveryAlgorithm(ALGO_CASES[name], seed=3)
    if name.startswith("winograd"):
        assert "winograd" in tried
    if name.startswith("gemm"):
        assert "gemm" in tried
    assert "im2col" in tried and "direct" in tried


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_every_algorithm_random(nd):
    for seed in range(15):
        checkEveryAlgorithm(randomConfig(np.random.default_rng(70_000 + 100 * nd + seed), nd), seed)
