"""Optimizers: each update rule against its formula (float64 references written here), in local and
global-state mode, with per-variable multipliers, hooks and custom updaters; training lowers the loss."""

import math

import numpy as np
import pytest

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Containers import Sequential
from PuzzleLib.Cost import MSE
from PuzzleLib.Modules import Conv2D
from PuzzleLib.Modules.Module import Module
from PuzzleLib.Optimizers import (
    SGD,
    AdaGrad,
    Adam,
    MomentumSGD,
    NesterovSGD,
    OptimizerError,
    RMSProp,
    WeightDecay,
)
from PuzzleLib.Variable import Variable


class Params(Module):
    """A module that only holds two variables, so the tests control every gradient."""

    def __init__(self, dtype=np.float64, name=None, seed=0):
        super().__init__(name)
        rng = np.random.default_rng(seed)
        self.setVar("W", Variable(gpuarray.to_gpu(rng.standard_normal((3, 4)).astype(dtype))))
        self.setVar("b", Variable(gpuarray.to_gpu(rng.standard_normal(4).astype(dtype))))


# -- float64 reference rules: (p, g, state, lr, mr, t) -> new p; state updated in place -----------------


def refSGD(p, g, s, lr, mr, t, hp):
    return p + lr * g


def refMomentum(p, g, s, lr, mr, t, hp):
    s["m"] = mr * s.get("m", 0) + lr * g
    return p + s["m"]


def refNesterov(p, g, s, lr, mr, t, hp):
    old = s.get("m", 0)
    s["m"] = mr * old + lr * g
    return p + mr**2 * old + (1 + mr) * lr * g


def refAdam(p, g, s, lr, mr, t, hp):
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["epsilon"]
    stepRate = hp["alpha"] * math.sqrt(1 - b2**t) / (1 - b1**t) * lr / hp["alpha"]
    s["mg"] = s.get("mg", 0) + (1 - b1) * (g - s.get("mg", 0))
    s["ms"] = s.get("ms", 0) + (1 - b2) * (g * g - s.get("ms", 0))
    return p + stepRate * s["mg"] / (np.sqrt(s["ms"]) + eps)


def refAdaGrad(p, g, s, lr, mr, t, hp):
    s["h"] = s.get("h", 0) + g * g
    return p + lr * g / (np.sqrt(s["h"]) + hp["epsilon"])


def refRMSProp(p, g, s, lr, mr, t, hp):
    f = hp["factor"]
    s["ms"] = f * s.get("ms", 0) + (1 - f) * g * g
    return p + lr * g / (np.sqrt(s["ms"]) + hp["epsilon"])


# (class, constructor kwargs, reference, learning rate, momentum rate)
CASES = {
    "SGD": (SGD, {"learnRate": 0.1}, refSGD, 0.1, 0.0),
    "MomentumSGD": (MomentumSGD, {"learnRate": 0.1, "momRate": 0.8}, refMomentum, 0.1, 0.8),
    "NesterovSGD": (NesterovSGD, {"learnRate": 0.1, "momRate": 0.8}, refNesterov, 0.1, 0.8),
    "Adam": (Adam, {"alpha": 0.01, "beta1": 0.8, "beta2": 0.9, "epsilon": 1e-8}, refAdam, 0.01, 0.0),
    "AdaGrad": (AdaGrad, {"learnRate": 0.1, "epsilon": 1e-8}, refAdaGrad, 0.1, 0.0),
    "RMSProp": (RMSProp, {"learnRate": 0.1, "factor": 0.7, "epsilon": 1e-5}, refRMSProp, 0.1, 0.0),
}


def _run(case, useGlobalState, multipliers, steps=4, dtype=np.float64, name=None, hook=None):
    """Run the optimizer and the reference side by side; return (ours, reference) final values."""
    cls, kwargs, ref, lr, mr = CASES[case]
    mod = Params(dtype, name=name)
    for varName, (varLr, varMom) in multipliers.items():
        mod.getVar(varName).learnRate, mod.getVar(varName).momRate = varLr, varMom
    expected = {n: mod.getVar(n).data.get().astype(np.float64) for n in ("W", "b")}

    opt = cls(**kwargs)
    if hook is not None:
        opt.addHook(hook)
    opt.setupOn(mod, useGlobalState=useGlobalState)

    rng = np.random.default_rng(42)
    states = {n: {} for n in expected}
    for t in range(1, steps + 1):
        opt.zeroGradParams()
        for n in expected:
            var = mod.getVar(n)
            assert not var.grad.get().any(), "zeroGradParams must clear every gradient"
            g = rng.standard_normal(var.data.shape)
            var.grad.set(g.astype(dtype))
            g = var.grad.get().astype(np.float64)
            if hook is not None and var.wc > 0:
                g = g - hook.rate * var.wc * expected[n]
            varLr, varMom = multipliers.get(n, (1.0, 1.0))
            if varLr > 0:
                expected[n] = ref(expected[n], g, states[n], lr * varLr, mr * varMom, t, kwargs)
        opt.update()
    return {n: mod.getVar(n).data.get() for n in expected}, expected, mod


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("useGlobalState", [False, True])
@pytest.mark.parametrize("multipliers", [{}, {"W": (0.5, 0.25), "b": (2.0, 1.0)}, {"b": (0.0, 1.0)}],
                         ids=["plain", "multipliers", "frozen"])
def test_updateRuleMatchesFormula(case, useGlobalState, multipliers):
    ours, expected, _ = _run(case, useGlobalState, multipliers)
    for n in expected:
        np.testing.assert_allclose(ours[n], expected[n], rtol=1e-12, atol=1e-12, err_msg=n)
    if "b" in multipliers and multipliers["b"][0] == 0.0:
        np.testing.assert_array_equal(ours["b"], Params().getVar("b").data.get())


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32AndNamedStandaloneModule(case):
    for useGlobalState in (False, True):
        ours, expected, mod = _run(case, useGlobalState, {}, dtype=np.float32, name="params")
        for n in expected:
            assert ours[n].dtype == np.float32
            np.testing.assert_allclose(ours[n], expected[n], rtol=2e-5, atol=2e-6, err_msg=n)
        assert mod.W is mod.getVar("W").data, "the attribute must stay bound to the variable's data"


@pytest.mark.parametrize("useGlobalState", [False, True])
def test_weightDecayHook(useGlobalState):
    hook = WeightDecay(0.3)
    cls, kwargs, ref, lr, mr = CASES["MomentumSGD"]
    mod = Params()
    mod.getVar("W").wc = 1.0  # decay W only; b keeps wc = 0
    expected = {n: mod.getVar(n).data.get() for n in ("W", "b")}
    opt = cls(**kwargs).addHook(hook)
    opt.setupOn(mod, useGlobalState=useGlobalState)
    assert mod.getVar("W").wc == 1.0

    states = {"W": {}, "b": {}}
    rng = np.random.default_rng(0)
    for t in (1, 2, 3):
        for n in expected:
            g = rng.standard_normal(expected[n].shape)
            mod.getVar(n).grad.set(g)
            decayed = g - 0.3 * expected[n] if n == "W" else g
            expected[n] = ref(expected[n], decayed, states[n], lr, mr, t, kwargs)
        opt.update()
    for n in expected:
        np.testing.assert_allclose(mod.getVar(n).data.get(), expected[n], rtol=1e-12, err_msg=n)


def test_globalStateSharesOneBuffer():
    np.random.seed(0)
    seq = Sequential().append(Conv2D(2, 3, 3, name="c1")).append(Conv2D(3, 2, 1))
    before = {name: var.data.get() for var, names in seq.getVarTable().items() for name in names}
    assert sorted(before) == ["1.W", "1.b", "c1.W", "c1.b"]

    opt = SGD(0.5)
    opt.setupOn(seq, useGlobalState=True)
    flat = opt.groups[0].var
    assert flat.data.size == sum(v.size for v in before.values())
    for name, value in before.items():
        var = seq.getVar(name)
        np.testing.assert_array_equal(var.data.get(), value, err_msg=name)
        assert np.shares_memory(var.data.ary, flat.data.ary) and np.shares_memory(var.grad.ary, flat.grad.ary)
    assert seq["c1"].W is seq.getVar("c1.W").data

    # One flat step moves every parameter: data += 0.5 * grad.
    flat.grad.fill(2.0)
    opt.update()
    for name, value in before.items():
        np.testing.assert_allclose(seq.getVar(name).data.get(), value + 1.0, err_msg=name)
    opt.zeroGradParams()
    assert not flat.grad.get().any()


def test_customUpdaterAndVariablesWithoutGrad():
    calls = []
    mod = Params()
    mod.setVar("frozen", Variable(np.ones(3), withgrad=False))
    mod.setVar("custom", Variable(np.ones(2), updater=lambda var, lr: calls.append(lr)))
    for useGlobalState in (False, True):
        calls.clear()
        opt = SGD(0.25)
        opt.setupOn(mod, useGlobalState=useGlobalState)
        opt.zeroGradParams()
        opt.update()
        assert calls == [0.25]
        np.testing.assert_array_equal(mod.getVar("frozen").data.get(), np.ones(3))


def test_learnRateIsWritable():
    mod = Params()
    start = mod.getVar("b").data.get()
    opt = SGD(0.1)
    opt.setupOn(mod)
    mod.getVar("b").grad.fill(1.0)
    opt.update()
    opt.learnRate = 0.5
    opt.update()
    np.testing.assert_allclose(mod.getVar("b").data.get(), start + 0.6)

    adam = Adam(alpha=0.01)
    adam.learnRate = 0.02
    assert adam.alpha == 0.02 and adam.learnRate == 0.02


def test_misuse():
    with pytest.raises(OptimizerError):
        SGD().update()
    with pytest.raises(ValueError):
        SGD().setupOn("not a module")
    with pytest.raises(ValueError):
        SGD(learnRate="fast")
    with pytest.raises(ValueError):
        Adam(beta1=1.0)
    with pytest.raises(ValueError):
        SGD().addHook(3)


def test_defaults():
    assert SGD().learnRate == 1e-3
    assert (MomentumSGD().learnRate, MomentumSGD().momRate) == (1e-3, 0.9)
    assert (NesterovSGD().learnRate, NesterovSGD().momRate) == (1e-3, 0.9)
    adam = Adam()
    assert (adam.alpha, adam.beta1, adam.beta2, adam.epsilon) == (1e-3, 0.9, 0.999, 1e-8)
    assert (AdaGrad().learnRate, AdaGrad().epsilon) == (1e-3, 1e-8)
    assert (RMSProp().learnRate, RMSProp().factor, RMSProp().epsilon) == (1e-3, 0.9, 1e-5)


TRAINING = [
    (SGD, {"learnRate": 0.5}), (MomentumSGD, {"learnRate": 0.1}), (NesterovSGD, {"learnRate": 0.1}),
    (Adam, {"alpha": 0.02}), (AdaGrad, {"learnRate": 0.05}), (RMSProp, {"learnRate": 0.01}),
]


@pytest.mark.parametrize("cls, kwargs", TRAINING, ids=[cls.__name__ for cls, _ in TRAINING])
@pytest.mark.parametrize("useGlobalState", [False, True])
def test_trainingLowersTheLoss(cls, kwargs, useGlobalState):
    np.random.seed(3)
    seq = Sequential().append(Conv2D(2, 6, 3, pad=1)).append(Conv2D(6, 3, 4))
    rng = np.random.default_rng(3)
    data = gpuarray.to_gpu(rng.standard_normal((16, 2, 4, 4)).astype(np.float32))
    target = gpuarray.to_gpu(rng.standard_normal((16, 3, 1, 1)).astype(np.float32))

    cost, opt = MSE(), cls(**kwargs)
    opt.setupOn(seq, useGlobalState=useGlobalState)
    first = cost(seq(data), target)[0]
    for _ in range(60):
        grad = cost(seq(data), target, queryError=False)
        opt.zeroGradParams()
        seq.backward(grad, updGrad=False)
        opt.update()
    last = cost(seq(data), target)[0]
    assert last < 0.5 * first, f"{cls.__name__}: loss {first} -> {last}"
