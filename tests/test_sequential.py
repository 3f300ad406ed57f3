"""PuzzleLib.Containers.Sequential: building, access, forward/backward chaining, training state, errors."""

import re

import numpy as np
import pytest
from conftest import assertSameState, snapshot
from reference import convBackwardData, convBackwardParams, convForward

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Containers import Sequential
from PuzzleLib.Modules import Conv1D, Conv2D, ModuleError, Pad2D
from PuzzleLib.Variable import Variable

P1 = dict(stride=(1, 1), pad=(1, 1), dilation=(1, 1), groups=1)
P2 = dict(stride=(2, 1), pad=(0, 0), dilation=(1, 2), groups=2)


def block(seed=0):
    """conv (2 -> 4, 3x3, pad 1) then conv (4 -> 6, 2x2, stride (2, 1), dilation (1, 2), groups 2), random weights."""
    rng = np.random.default_rng(seed)
    seq = Sequential()
    seq.append(Conv2D(2, 4, 3, pad=1)).append(Conv2D(4, 6, 2, stride=(2, 1), dilation=(1, 2), groups=2))
    for conv in seq:
        conv.setVar("W", Variable(gpuarray.to_gpu(rng.standard_normal(conv.W.shape).astype(np.float32))))
        conv.setVar("b", Variable(gpuarray.to_gpu(rng.standard_normal(conv.b.shape).astype(np.float32))))
    return seq


def test_append_chains_and_names_by_position():
    seq = Sequential(name="net")
    a, b, c = Conv2D(1, 1, 1), Conv2D(1, 1, 1, name="named"), Conv2D(1, 1, 1)
    assert seq.append(a) is seq
    seq.append(b).append(c)
    assert [m.name for m in seq] == ["0", "named", "2"]
    assert list(seq.modules) == ["0", "named", "2"]
    assert seq["0"] is a and seq["named"] is b and seq["2"] is c
    assert len(seq) == 3 and list(seq) == [a, b, c]
    assert seq.name == "net"


def test_append_without_acquire_keeps_module_unnamed():
    seq = Sequential()
    mod = Conv2D(1, 1, 1)
    seq.append(mod, acquire=False)
    assert mod.name is None and seq["0"] is mod


def test_append_rejects_duplicates_and_non_modules():
    seq = Sequential().append(Conv2D(1, 1, 1, name="x"))
    with pytest.raises(ModuleError) as info:
        seq.append(Conv2D(1, 1, 1, name="x"))
    assert "'x'" in str(info.value)
    with pytest.raises(ModuleError):
        seq.append("conv")
    assert len(seq) == 1


def test_extend_insert_pop():
    mods = [Conv2D(1, 1, 1, name=f"m{i}") for i in range(4)]
    seq = Sequential().extend(mods[:2])
    assert list(seq) == mods[:2]
    assert seq.insert(mods[2], 0) is seq
    assert list(seq) == [mods[2], mods[0], mods[1]]
    seq.insert(mods[3], -1)
    assert list(seq) == [mods[2], mods[0], mods[3], mods[1]]
    assert seq.pop() is mods[1]
    assert "m1" not in seq.modules and len(seq) == 3
    assert seq.pop(0) is mods[2]
    assert list(seq) == [mods[0], mods[3]]
    seq.insertAfter(mods[1], "m0")
    assert list(seq) == [mods[0], mods[1], mods[3]]
    assert seq.getModuleIndex("m3") == 2 and seq.getByIndex(1) is mods[1]


def test_unnamed_append_after_pop_does_not_collide():
    seq = Sequential()
    for _ in range(3):
        seq.append(Conv2D(1, 1, 1))
    seq.pop(0)
    mod = Conv2D(1, 1, 1)
    seq.append(mod)
    assert len(seq) == 3 and seq[-1] is mod and seq[mod.name] is mod
    assert len(set(seq.modules)) == 3


def test_indexing():
    seq = block()
    first, second = seq.graph
    assert seq[0] is first and seq[1] is second and seq[-1] is second and seq[-2] is first
    assert seq["0"] is first and seq["1"] is second
    part = seq[1:]
    assert isinstance(part, Sequential) and part is not seq
    assert len(part) == 1 and part[0] is second, "a slice shares the modules"
    assert len(seq) == 2, "slicing leaves the original alone"
    assert list(seq[::-1]) == [second, first]
    with pytest.raises(ModuleError):
        seq["nope"]
    with pytest.raises(ModuleError):
        seq[5]


def test_get_by_name_recursive():
    inner = Sequential(name="inner").append(Conv2D(1, 1, 1, name="deep"))
    seq = Sequential().append(Conv2D(1, 1, 1, name="top")).append(inner)
    assert seq.getByName("top") is seq[0]
    assert seq.getByName("inner") is inner
    assert seq.getByName("deep") is inner[0]
    assert seq.getByName("absent") is None


def test_forward_chains():
    seq = block()
    x = np.random.default_rng(1).standard_normal((3, 2, 7, 9)).astype(np.float32)
    out = seq(x)
    c1, c2 = seq
    h = convForward(x, c1.W.get(), c1.b.get(), **P1)
    y = convForward(h, c2.W.get(), c2.b.get(), **P2)
    assert out is seq.data and out.shape == y.shape == seq.dataShapeFrom(x.shape)
    np.testing.assert_allclose(out.get(), y, rtol=1e-4, atol=1e-4 * np.abs(y).max())
    assert seq[1].inData is seq[0].data


def test_backward_in_reverse():
    seq = block()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 7, 9)).astype(np.float32)
    y = seq(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    seq.backward(dy)
    c1, c2 = seq
    h = convForward(x, c1.W.get(), c1.b.get(), **P1)
    dh = convBackwardData(dy, c2.W.get(), h.shape, **P2)
    dx = convBackwardData(dh, c1.W.get(), x.shape, **P1)
    assert seq.grad is c1.grad
    np.testing.assert_allclose(seq.grad.get(), dx, rtol=1e-4, atol=1e-4 * np.abs(dx).max())
    for conv, (inp, grad, params) in zip(seq, [(x, dh, P1), (h, dy, P2)]):
        dW, db = convBackwardParams(inp, grad, conv.W.shape, **params)
        np.testing.assert_allclose(conv.vars["W"].grad.get(), dW, rtol=1e-4, atol=1e-4 * np.abs(dW).max())
        np.testing.assert_allclose(conv.vars["b"].grad.get(), db, rtol=1e-4, atol=1e-4 * np.abs(db).max())


def test_backward_flags():
    seq = block()
    x = np.ones((1, 2, 5, 6), np.float32)
    y = seq(x)
    dy = np.ones(y.shape, np.float32)
    seq.backward(dy, updGrad=False)
    assert seq.grad is None
    assert seq[1].grad is not None, "inner modules still pass the gradient on"
    w = seq[0].vars["W"].grad.get()
    assert w.any()
    seq.backward(dy, momentum=1.0)
    np.testing.assert_allclose(seq[0].vars["W"].grad.get(), 2 * w, rtol=1e-5)
    seq.backward(dy, scale=0.5)
    np.testing.assert_allclose(seq[0].vars["W"].grad.get(), 0.5 * w, rtol=1e-5)
    seq.backward(dy, updParamGrads=False)
    np.testing.assert_allclose(seq[0].vars["W"].grad.get(), 0.5 * w, rtol=1e-5)
    assert seq.grad is not None


def test_default_backward_does_not_accumulate():
    seq = block()
    y = seq(np.ones((1, 2, 5, 6), np.float32))
    seq.backward(np.ones(y.shape, np.float32))
    w = seq[0].vars["W"].grad.get()
    seq.backward(np.ones(y.shape, np.float32))
    np.testing.assert_allclose(seq[0].vars["W"].grad.get(), w, rtol=1e-6)


def test_training_state_propagates():
    seq = block()
    seq.append(Pad2D(1))
    assert seq.numOfParams() == (4 * 2 * 9 + 4) + (6 * 2 * 4 + 6)
    assert seq.paramSize() == 4 * seq.numOfParams()
    for conv in seq[:2]:
        conv.vars["W"].grad.fill(1.0)
    w0 = seq[0].W.get()
    seq.updateParams(0.5)
    np.testing.assert_allclose(seq[0].W.get(), w0 + 0.5, rtol=1e-6)
    seq.zeroGradParams()
    assert not any(conv.vars["W"].grad.get().any() for conv in seq[:2])
    seq(np.ones((1, 2, 5, 6), np.float32))
    seq.evalMode()
    assert not seq.train and all(not m.train for m in seq)
    assert all(m.data is None for m in seq) and seq.data is None
    seq.trainMode()
    assert seq.train and all(m.train for m in seq)


def test_var_table_and_dotted_names():
    seq = block()
    table = seq.getVarTable()
    names = sorted(name for names in table.values() for name in names)
    assert names == ["0.W", "0.b", "1.W", "1.b"]
    assert table[seq[1].vars["W"]] == ["1.W"]
    assert seq.getVar("1.W") is seq[1].vars["W"]
    new = Variable(gpuarray.zeros(seq[0].W.shape))
    seq.setVar("0.W", new)
    assert seq[0].W is new.data


def test_error_inside_names_module_and_position():
    seq = Sequential(name="net")
    seq.append(Conv2D(2, 3, 3, name="first")).append(Conv2D(4, 5, 1, name="second"))
    before = [snapshot(m) for m in seq]
    with pytest.raises(ModuleError) as info:
        seq(np.ones((1, 2, 5, 5), np.float32))
    message = str(info.value)
    assert "second" in message and re.search(r"(#|index |position )1\b", message), message
    assert "Data has 3 maps" in message and "expected: 4" in message
    for mod, state in zip(seq, before):
        assertSameState(mod, state)
    assert seq.data is None


def test_error_in_first_module_and_in_backward():
    seq = Sequential().append(Conv1D(2, 3, 3)).append(Conv1D(3, 1, 1))
    with pytest.raises(ModuleError) as info:
        seq(np.ones((1, 2, 2), np.float32))
    assert re.search(r"(#|index |position )0\b", str(info.value)) and "size is too small" in str(info.value)
    y = seq(np.ones((1, 2, 6), np.float32))
    before = [snapshot(m) for m in seq]
    with pytest.raises(ModuleError) as info:
        seq.backward(np.ones((1, 1, y.shape[2] + 1), np.float32))
    assert str(y.shape) in str(info.value)
    for mod, state in zip(seq, before):
        assertSameState(mod, state)


def test_page_depthwise_separable_block():
    seq = Sequential()
    seq.append(Conv2D(3, 3, size=4, initscheme="gaussian", groups=3, name="depthwise"))
    seq.append(Conv2D(3, 32, size=1, initscheme="gaussian", name="pointwise"))
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 5)).astype(np.float32)
    y = seq(x)
    assert y.shape == (1, 32, 2, 2)
    dw, pw = seq["depthwise"], seq["pointwise"]
    h = convForward(x, dw.W.get(), dw.b.get(), (1, 1), (0, 0), (1, 1), 3)
    ref = convForward(h, pw.W.get(), pw.b.get(), (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(y.get(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
