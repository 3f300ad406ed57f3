"""The Module contract: calling, backward, variables, training state, sizes, blueprint, initialisation schemes."""

import math

import numpy as np
import pytest

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Modules import Conv2D, Module, ModuleError
from PuzzleLib.Variable import Variable


class Scale(Module):
    """y = a * x with a learnable scalar-per-map a: a minimal module written against the contract."""

    def __init__(self, maps, name=None):
        super().__init__(name)
        self.setVar("a", Variable(gpuarray.to_gpu(np.full((1, maps), 2.0, np.float32))))
        self.calls = []

    def updateData(self, data):
        self.calls.append("updateData")
        self.data = gpuarray.to_gpu(np.asarray(data) * np.asarray(self.a))

    def updateGrad(self, grad):
        self.calls.append("updateGrad")
        self.grad = gpuarray.to_gpu(np.asarray(grad) * np.asarray(self.a))

    def accGradParams(self, grad, scale=1.0, momentum=0.0):
        self.calls.append(("accGradParams", scale, momentum))
        new = (np.asarray(grad) * np.asarray(self.inData)).sum(axis=0, keepdims=True)
        var = self.vars["a"]
        var.grad.set((scale * new + momentum * var.grad.get()).astype(np.float32))

    def dataShapeFrom(self, shape):
        return shape

    def gradShapeFrom(self, shape):
        return shape

    def checkDataShape(self, shape):
        if len(shape) != 2:
            raise ModuleError(f"Data must be 2d tensor (got {len(shape)}d)")


def test_call_stores_in_data_and_data():
    mod = Scale(3)
    x = np.ones((2, 3), np.float32)
    out = mod(x)
    assert out is mod.data and np.asarray(mod.inData).tolist() == x.tolist()
    np.testing.assert_array_equal(out.get(), 2.0)
    assert mod.calls == ["updateData"]


def test_backward_calls_and_flags():
    mod = Scale(3)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    mod(x)
    dy = np.ones((2, 3), np.float32)
    mod.calls.clear()
    mod.backward(dy, scale=0.5, momentum=0.25)
    assert mod.calls == ["updateGrad", ("accGradParams", 0.5, 0.25)]
    mod.calls.clear()
    mod.backward(dy, updGrad=False)
    assert mod.calls == [("accGradParams", 1.0, 0.0)]
    mod.calls.clear()
    mod.backward(dy, updParamGrads=False)
    assert mod.calls == ["updateGrad"]
    mod.evalMode()
    mod(x)
    mod.calls.clear()
    mod.backward(dy)
    assert mod.calls == ["updateGrad"], "no parameter gradients in eval mode"


def test_failed_check_does_not_call_compute():
    mod = Scale(3)
    with pytest.raises(ModuleError):
        mod(np.ones((2, 3, 1), np.float32))
    assert mod.calls == [] and mod.inData is None and mod.data is None


def test_set_var_binds_attribute_and_get_var():
    conv = Conv2D(2, 4, 3)
    var = Variable(gpuarray.to_gpu(np.ones((4, 2, 3, 3), np.float32)))
    conv.setVar("W", var)
    assert conv.getVar("W") is var and conv.vars["W"] is var and conv.W is var.data
    assert set(conv.vars) == {"W", "b"}
    assert conv.hasVar("W") and not conv.hasVar("c")


def test_set_attr():
    mod = Scale(1)
    mod.setAttr("running", gpuarray.zeros((3,)))
    assert mod.hasAttr("running") and mod.attrs["running"] is mod.running


def test_zero_grad_params_and_update_params():
    conv = Conv2D(1, 2, 2)
    w0, b0 = conv.W.get(), conv.b.get()
    conv.vars["W"].grad.fill(1.0)
    conv.vars["b"].grad.fill(-2.0)
    conv.updateParams(0.1)
    np.testing.assert_allclose(conv.W.get(), w0 + 0.1, rtol=1e-6)
    np.testing.assert_allclose(conv.b.get(), b0 - 0.2, rtol=1e-6)
    conv.zeroGradParams()
    assert not conv.vars["W"].grad.get().any() and not conv.vars["b"].grad.get().any()


def test_zero_grad_params_skips_variables_without_grad():
    mod = Scale(2)
    mod.setVar("frozen", Variable(gpuarray.zeros((2,)), withgrad=False))
    mod.vars["a"].grad.fill(1.0)
    mod.zeroGradParams()
    assert not mod.vars["a"].grad.get().any()
    mod.vars["a"].grad.fill(0.5)
    mod.updateParams(1.0)
    np.testing.assert_array_equal(mod.vars["frozen"].data.get(), np.zeros(2))
    np.testing.assert_array_equal(mod.a.get(), np.full((1, 2), 2.5))


def test_train_eval_reset():
    conv = Conv2D(1, 1, 1)
    assert conv.train is True
    conv(np.ones((1, 1, 2, 2), np.float32))
    conv.backward(np.ones((1, 1, 2, 2), np.float32))
    conv.evalMode()
    assert conv.train is False and conv.inData is None and conv.data is None and conv.grad is None
    conv(np.ones((1, 1, 2, 2), np.float32))
    conv.trainMode()
    assert conv.train is True and conv.data is None
    conv(np.ones((1, 1, 2, 2), np.float32))
    conv.reset()
    assert conv.inData is None and conv.data is None and conv.grad is None


def _linearGrads(x, g):
    """Reference parameter gradients of y = x W + b: (x^T g, column sums of g)."""
    return x.T.astype(np.float64) @ g, g.astype(np.float64).sum(axis=0)


@pytest.mark.parametrize("switch", ["trainMode", "trainAttribute", "optimizer"])
def test_module_made_in_global_eval_mode_trains_after_switching(switch):
    from PuzzleLib import Config
    from PuzzleLib.Containers import Sequential
    from PuzzleLib.Modules import Linear
    from PuzzleLib.Optimizers import SGD

    Config.globalEvalMode = True
    seq = Sequential().append(Linear(3, 2))
    lin = seq[0]
    assert lin.vars["W"].grad is None
    Config.globalEvalMode = False

    if switch == "trainMode":
        seq.trainMode()
    elif switch == "trainAttribute":
        lin.train = True
    else:
        SGD(0.5).setupOn(seq)
        lin.train = True
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    g = rng.standard_normal((4, 2)).astype(np.float32)
    seq(x)
    seq.backward(g)
    wgrad, bgrad = _linearGrads(x, g)
    np.testing.assert_allclose(lin.vars["W"].grad.get(), wgrad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin.vars["b"].grad.get(), bgrad, rtol=1e-5, atol=1e-6)


def test_variable_without_grad_stays_frozen_in_train_mode():
    mod = Scale(2)
    mod.setVar("frozen", Variable(gpuarray.zeros((2,)), withgrad=False))
    mod.trainMode()
    assert mod.vars["frozen"].grad is None and mod.vars["a"].grad is not None


def test_calc_mode():
    conv = Conv2D(1, 1, 1)
    conv.calcMode(np.float32)
    assert conv.calctype == np.float32


def test_num_of_params_and_param_size():
    conv = Conv2D(3, 8, 3)
    n = 8 * 3 * 9 + 8
    assert conv.numOfParams() == n
    assert conv.paramSize() == 4 * n
    assert conv.paramSize("kb") == pytest.approx(4 * n / 1024)
    assert conv.paramSize("mb") == pytest.approx(4 * n / 1024**2)


def test_shape_methods_and_optimize_for_shape():
    conv = Conv2D(3, 8, 3, pad=1)
    assert conv.dataShapeFrom((2, 3, 10, 12)) == (2, 8, 10, 12)
    assert conv.gradShapeFrom((2, 8, 10, 12)) == (2, 3, 10, 12)
    conv.checkDataShape((2, 3, 10, 12))
    conv.optimizeForShape((2, 3, 10, 12))
    conv.optimizeForShape((2, 3, 10, 12), memlimit=1 << 20)
    assert Module.optimizeForShape(conv, (2, 3, 10, 12)) is None, "a no-op by default"
    y = conv(np.ones((2, 3, 10, 12), np.float32))
    conv.checkGradShape(y.shape)


def test_blueprint_and_str():
    mod = Scale(5, name="s")
    assert mod.getBlueprint() == {"classname": "Scale", "scheme": {"maps": 5, "name": "s"}}
    assert str(mod) == "Module Scale (name: s)"
    assert str(Conv2D(1, 1, 1)) == "Module Conv2D (name: None)"


# -- createTensorWithScheme ------------------------------------------------------------------------------------------
SHAPE = (64, 32, 3, 3)
FAN_IN, FAN_OUT = 32 * 9, 64 * 9
FANS = {"in": FAN_IN, "out": FAN_OUT, "avg": (FAN_IN + FAN_OUT) / 2}


def draw(scheme, wscale=1.0, shape=SHAPE, **kwargs):
    np.random.seed(123)
    return Module.createTensorWithScheme(scheme, shape, wscale, **kwargs)


def assertStd(w, std, uniformBound=None):
    assert w.dtype == np.float32 and w.shape == SHAPE
    assert abs(w.mean()) < 0.05 * std
    assert w.std() == pytest.approx(std, rel=0.03)
    if uniformBound is not None:
        assert np.abs(w).max() <= uniformBound
        assert np.abs(w).max() > 0.99 * uniformBound


@pytest.mark.parametrize("factor", ["in", "out", "avg"])
def test_scheme_statistics(factor):
    fan = FANS[factor]
    bound = math.sqrt(3.0 / fan)
    assertStd(draw(("xavier_uniform", factor)), bound / math.sqrt(3), bound)
    assertStd(draw(("xavier", factor)), math.sqrt(1.0 / fan))
    assertStd(draw(("xavier_normal", factor)), math.sqrt(1.0 / fan))
    assertStd(draw(("he", factor)), math.sqrt(2.0 / fan))
    # gaussian and uniform ignore the fan and use wscale.
    assertStd(draw(("gaussian", factor), wscale=0.3), 0.3)
    assertStd(draw(("uniform", factor), wscale=0.3), 0.3 / math.sqrt(3), 0.3)


def test_default_scheme_is_xavier_uniform_in():
    bound = math.sqrt(3.0 / FAN_IN)
    assertStd(draw(None), bound / math.sqrt(3), bound)
    np.testing.assert_array_equal(draw(None), draw("xavier_uniform"))
    np.testing.assert_array_equal(draw("he"), draw(("he", "in")))
    np.testing.assert_array_equal(draw(["he", "out"]), draw(("he", "out")))


def test_scheme_none_gives_none():
    assert draw("none") is None


def test_scheme_reproducible_with_numpy_seed():
    for scheme in ("xavier_uniform", "xavier", "he", "gaussian", "uniform"):
        np.testing.assert_array_equal(draw(scheme), draw(scheme))
    np.random.seed(1)
    a = Module.createTensorWithScheme("he", (3, 4), 1.0)
    b = Module.createTensorWithScheme("he", (3, 4), 1.0)
    assert not np.array_equal(a, b), "successive draws continue numpy's global stream"


def test_factor_shape_and_transpose():
    # With factorShape the fan comes from it, not from shape.
    w = draw(("he", "in"), factorShape=(10, 100, 2, 2))
    assertStd(w, math.sqrt(2.0 / 400))
    w = draw(("he", "in"), factorTranspose=True)
    assertStd(w, math.sqrt(2.0 / FAN_OUT))
    w = draw(("he", "out"), factorTranspose=True)
    assertStd(w, math.sqrt(2.0 / FAN_IN))


def test_fans_of_low_rank_shapes():
    np.random.seed(0)
    w = Module.createTensorWithScheme(("he", "in"), (400, 300), 1.0)
    assert w.std() == pytest.approx(math.sqrt(2.0 / 400), rel=0.03)
    w = Module.createTensorWithScheme(("he", "out"), (400, 300), 1.0)
    assert w.std() == pytest.approx(math.sqrt(2.0 / 300), rel=0.03)
    w = Module.createTensorWithScheme("xavier", (50000,), 1.0)
    assert w.std() == pytest.approx(math.sqrt(1.0 / 50000), rel=0.03)


def test_dtype_argument():
    assert draw("he", dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("scheme,words", [
    (("he",), ["1 length", "expected 2"]), (("he", "in", "x"), ["3 length"]), ("kaiming", ["kaiming"]),
    (("he", "fan"), ["fan"]), (("he", "out", 1, 2), ["4 length"]),
])
def test_bad_schemes(scheme, words):
    with pytest.raises(ValueError) as info:
        draw(scheme)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_conv_uses_grouped_fan_in(groups):
    """Through the module: he init of a grouped conv has std sqrt(2 / (inmaps / groups * k volume))."""
    np.random.seed(5)
    conv = Conv2D(16, 128, (3, 4), groups=groups, initscheme="he")
    fan = 16 // groups * 12
    assert conv.W.get().std() == pytest.approx(math.sqrt(2.0 / fan), rel=0.05)
