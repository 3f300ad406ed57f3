"""Every bad input of the core: a ModuleError (ValueError for bad constructor types) naming the expected and
the actual value, raised before anything changes."""

import numpy as np
import pytest
from conftest import assertSameState, snapshot

from PuzzleLib.Backend import gpuarray
from PuzzleLib.Modules import Conv1D, Conv2D, Conv3D, ModuleError, Pad1D, Pad2D
from PuzzleLib.Variable import Variable


def raisesWith(error, call, *fragments):
    """call() raises error and its message holds every fragment (the expected and the actual value)."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in message {message!r}"
    return message


def trainedConv(cls=Conv2D, spatial=(6, 7), **kwargs):
    """A module after a forward and a backward pass, so every piece of state is set."""
    nd = len(spatial)
    args = dict(inmaps=2, outmaps=4, size=3, **kwargs)
    conv = cls(**args)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2) + spatial).astype(np.float32)
    y = conv(x)
    conv.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert conv.grad is not None and conv.vars["W"].grad.get().any()
    assert nd == conv.nd
    return conv


def assertRejects(module, call, *fragments):
    before = snapshot(module)
    message = raisesWith(ModuleError, call, *fragments)
    assertSameState(module, before)
    return message


# -- forward ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,spatial,expected", [(Conv1D, (6,), "3d"), (Conv2D, (6, 7), "4d"),
                                                  (Conv3D, (5, 6, 4), "5d")])
@pytest.mark.parametrize("delta", [-1, 1])
def test_data_wrong_rank(cls, spatial, expected, delta):
    conv = trainedConv(cls, spatial)
    shape = (2, 2) + spatial[:-1] if delta < 0 else (2, 2) + spatial + (3,)
    actual = f"{len(shape)}d"
    assertRejects(conv, lambda: conv(np.zeros(shape, np.float32)), f"Data must be {expected} tensor", actual)


@pytest.mark.parametrize("cls,spatial", [(Conv1D, (6,)), (Conv2D, (6, 7)), (Conv3D, (5, 6, 4))])
def test_data_wrong_maps(cls, spatial):
    conv = trainedConv(cls, spatial)
    assertRejects(conv, lambda: conv(np.zeros((2, 3) + spatial, np.float32)), "Data has 3 maps", "expected: 2")


@pytest.mark.parametrize("cls,spatial,axis,small", [
    (Conv1D, (6,), "size", (4,)),
    (Conv2D, (6, 7), "height", (4, 9)),
    (Conv2D, (6, 7), "width", (9, 3)),
    (Conv3D, (5, 6, 5), "depth", (4, 9, 9)),
    (Conv3D, (5, 6, 5), "height", (9, 2, 9)),
    (Conv3D, (5, 6, 5), "width", (9, 9, 1)),
])
def test_data_maps_smaller_than_dilated_kernel(cls, spatial, axis, small):
    # size 3, dilation 2, pad 0: the dilated kernel spans 5.
    conv = trainedConv(cls, spatial, dilation=2)
    got = min(small)
    assertRejects(conv, lambda: conv(np.zeros((2, 2) + small, np.float32)),
                  f"Data maps {axis} is too small", f"got {got}", "expected at least 5")


def test_data_smaller_than_kernel_counts_padding():
    conv = trainedConv(Conv2D, (6, 7), pad=1)
    # 1 + 2 * 1 = 3 is enough for a 3x3 kernel; 0 + 2 = 2 is not.
    assert conv(np.zeros((1, 2, 1, 1), np.float32)).shape == (1, 4, 1, 1)
    conv = trainedConv(Conv2D, (6, 7), pad=(0, 1))
    assertRejects(conv, lambda: conv(np.zeros((1, 2, 2, 5), np.float32)), "height is too small", "got 2",
                  "expected at least 3")


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_data_wrong_dtype(dtype):
    conv = trainedConv()
    assertRejects(conv, lambda: conv(np.zeros((2, 2, 6, 7), dtype)), "float32", np.dtype(dtype).name)


def test_data_not_an_array():
    conv = trainedConv()
    assertRejects(conv, lambda: conv([[1.0]]), "list")


def test_data_float64_message_is_the_originals():
    conv = trainedConv()
    assertRejects(conv, lambda: conv(np.zeros((2, 2, 6, 7))), "Expected dtype <class 'numpy.float32'>, got float64")


# -- backward --------------------------------------------------------------------------------------------------------
def test_grad_wrong_rank():
    conv = trainedConv()
    assertRejects(conv, lambda: conv.backward(np.zeros((2, 4, 4), np.float32)), "Grad must be 4d tensor", "3d")


def test_grad_wrong_maps():
    conv = trainedConv()
    assertRejects(conv, lambda: conv.backward(np.zeros((2, 3, 4, 5), np.float32)), "Grad has 3 maps",
                  "expected: 4")


@pytest.mark.parametrize("shape", [(2, 4, 4, 4), (2, 4, 5, 5), (3, 4, 4, 5), (1, 4, 4, 5)])
def test_grad_wrong_shape(shape):
    conv = trainedConv()
    assert conv.data.shape == (2, 4, 4, 5)
    assertRejects(conv, lambda: conv.backward(np.zeros(shape, np.float32)), "(2, 4, 4, 5)", str(shape))


def test_grad_wrong_dtype():
    conv = trainedConv()
    assertRejects(conv, lambda: conv.backward(np.zeros((2, 4, 4, 5))), "float32", "float64")


def test_grad_wrong_shape_conv3d():
    conv = trainedConv(Conv3D, (5, 6, 4))
    expected = conv.data.shape
    bad = expected[:2] + (expected[2] + 1,) + expected[3:]
    assertRejects(conv, lambda: conv.backward(np.zeros(bad, np.float32)), str(expected), str(bad))


def test_backward_before_forward():
    conv = Conv2D(2, 4, 3)
    before = snapshot(conv)
    raisesWith(ModuleError, lambda: conv.backward(np.zeros((1, 4, 2, 2), np.float32)), "forward")
    assertSameState(conv, before)


def test_accepted_shapes_are_remembered_per_shape():
    """ConvND skips re-checking a shape it accepted (per-call cost on small inputs): a different bad shape after a
    good one still fails, and a grad shaped for an earlier input fails after a forward on another."""
    conv = trainedConv()
    assertRejects(conv, lambda: conv(np.zeros((2, 3, 6, 7), np.float32)), "Data has 3 maps", "expected: 2")
    conv(np.zeros((1, 2, 8, 9), np.float32))
    assertRejects(conv, lambda: conv.backward(np.zeros((2, 4, 4, 5), np.float32)), "(1, 4, 6, 7)",
                  "(2, 4, 4, 5)")


# -- setVar ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,shape", [("W", (4, 2, 3, 2)), ("W", (4, 1, 3, 3)), ("W", (2, 4, 3, 3)),
                                        ("b", (1, 4)), ("b", (4,)), ("b", (1, 3, 1, 1))])
def test_set_var_wrong_shape(name, shape):
    conv = trainedConv()
    expected = str(conv.vars[name].data.shape)
    var = Variable(gpuarray.to_gpu(np.zeros(shape, np.float32)))
    assertRejects(conv, lambda: conv.setVar(name, var), expected, str(shape))


def test_set_var_wrong_shape_grouped_conv3d():
    conv = Conv3D(4, 6, (1, 2, 3), groups=2)
    var = Variable(gpuarray.to_gpu(np.zeros((6, 4, 1, 2, 3), np.float32)))
    assertRejects(conv, lambda: conv.setVar("W", var), "(6, 2, 1, 2, 3)", "(6, 4, 1, 2, 3)")


def test_set_var_wrong_dtype():
    conv = trainedConv()
    var = Variable(gpuarray.to_gpu(np.zeros((4, 2, 3, 3), np.float64)))
    assertRejects(conv, lambda: conv.setVar("W", var), "float32", "float64")


def test_set_var_on_empty_conv_checks_shape():
    conv = Conv2D(2, 4, 3, empty=True)
    var = Variable(gpuarray.to_gpu(np.zeros((4, 2, 2, 2), np.float32)))
    assertRejects(conv, lambda: conv.setVar("W", var), "(4, 2, 3, 3)", "(4, 2, 2, 2)")
    assert conv.W is None and conv.vars == {}


def test_set_var_not_a_variable():
    conv = trainedConv()
    assertRejects(conv, lambda: conv.setVar("W", np.zeros((4, 2, 3, 3), np.float32)), "Variable", "ndarray")


def test_empty_conv_called_before_weights():
    conv = Conv2D(2, 4, 3, empty=True)
    before = snapshot(conv)
    raisesWith(ModuleError, lambda: conv(np.zeros((1, 2, 5, 5), np.float32)), "W")
    assertSameState(conv, before)


# -- constructor: values ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("inmaps,outmaps,groups", [(3, 4, 2), (4, 3, 2), (4, 4, 3), (2, 2, 4)])
def test_groups_not_dividing_maps(inmaps, outmaps, groups):
    raisesWith(ModuleError, lambda: Conv2D(inmaps, outmaps, 3, groups=groups),
               "Number of input and output maps must be divisible by number of groups",
               f"({inmaps} inmaps, {outmaps} outmaps, {groups} groups)")


@pytest.mark.parametrize("what", ["size", "stride", "dilation"])
@pytest.mark.parametrize("value,shown", [(0, "0"), (-2, "-2"), ((1, 0), "0"), ((3, -1), "-1")])
def test_below_one(what, value, shown):
    kwargs = {"size": 3, what: value}
    message = raisesWith(ModuleError, lambda: Conv2D(2, 4, **kwargs), what, "at least 1", shown)
    assert "got" in message


@pytest.mark.parametrize("cls", [Conv1D, Conv2D, Conv3D])
def test_negative_pad(cls):
    raisesWith(ModuleError, lambda: cls(2, 4, 3, pad=-1), "pad", "at least 0", "-1")
    pad = (0,) * (cls.__name__ != "Conv1D") + (-2,) + (1,) * (cls.__name__ == "Conv3D")
    raisesWith(ModuleError, lambda: cls(2, 4, 3, pad=pad), "pad", "at least 0", "-2")


@pytest.mark.parametrize("what", ["inmaps", "outmaps", "groups"])
def test_maps_below_one(what):
    kwargs = {"inmaps": 2, "outmaps": 2, "size": 1, what: 0}
    raisesWith(ModuleError, lambda: Conv2D(**kwargs), what, "at least 1", "0")


@pytest.mark.parametrize("cls,nd", [(Conv1D, 1), (Conv2D, 2), (Conv3D, 3)])
@pytest.mark.parametrize("what", ["size", "stride", "pad", "dilation"])
def test_tuple_wrong_length(cls, nd, what):
    value = (1,) * (nd + 1)
    kwargs = {"size": 1, what: value}
    raisesWith(ModuleError, lambda: cls(2, 2, **kwargs), what, f"tuple of {nd}", f"{nd + 1}", str(value))


# -- constructor: types ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(inmaps=2.0), dict(outmaps="4"), dict(size=3.0), dict(size="3"), dict(stride=1.5), dict(pad=None),
    dict(dilation=(1, 1.0)), dict(groups=True), dict(wscale="big"), dict(size=(3, "3")),
])
def test_bad_constructor_types(kwargs):
    args = dict(inmaps=2, outmaps=4, size=3)
    args.update(kwargs)
    name, value = next(iter(kwargs.items()))
    message = raisesWith(ValueError, lambda: Conv2D(**args), name)
    assert type(value if not isinstance(value, tuple) else value[-1]).__name__ in message


def test_bad_initscheme():
    raisesWith(ValueError, lambda: Conv2D(2, 4, 3, initscheme="glorot"), "glorot", "xavier_uniform")
    raisesWith(ValueError, lambda: Conv2D(2, 4, 3, initscheme=("he", "in", 1)), "Scheme tuple has 3 length, expected 2")
    raisesWith(ValueError, lambda: Conv2D(2, 4, 3, initscheme=("he", "sideways")), "sideways", "avg")


# -- padding modules -------------------------------------------------------------------------------------------------
def trainedPad(cls=Pad2D, **kwargs):
    pad = cls(**kwargs)
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6) if cls is Pad2D else (2, 3, 6)).astype(np.float32)
    y = pad(x)
    pad.backward(np.ones(y.shape, np.float32))
    return pad


def test_pad_wrong_rank():
    pad = trainedPad(pad=1)
    assertRejects(pad, lambda: pad(np.zeros((2, 3, 5), np.float32)), "Data must be 4d tensor", "3d")
    pad = trainedPad(Pad1D, pad=1)
    assertRejects(pad, lambda: pad(np.zeros((2, 3, 5, 5), np.float32)), "Data must be 3d tensor", "4d")


def test_pad_wrong_dtype():
    pad = trainedPad(pad=1)
    assertRejects(pad, lambda: pad(np.zeros((2, 3, 5, 6))), "float32", "float64")


def test_pad_grad_wrong_shape():
    pad = trainedPad(pad=(1, 2, 0, 1))
    assert pad.data.shape == (2, 3, 8, 7)
    assertRejects(pad, lambda: pad.backward(np.zeros((2, 3, 8, 6), np.float32)), "(2, 3, 8, 7)", "(2, 3, 8, 6)")


def test_pad_grad_smaller_than_pads():
    pad = trainedPad(pad=(2, 2, 1, 1))
    assertRejects(pad, lambda: pad.backward(np.zeros((2, 3, 4, 6), np.float32)), "height", "got 4",
                  "expected at least 5")


def test_pad_reflect_too_small():
    pad = trainedPad(pad=(1, 1, 3, 3), mode="reflect")
    assertRejects(pad, lambda: pad(np.zeros((2, 3, 5, 3), np.float32)), "width", "got 3", "expected at least 4")


@pytest.mark.parametrize("cls,value,fragments", [
    (Pad2D, (1, 2, 3), ("4", "3")), (Pad1D, (1, 2, 3), ("2", "3")), (Pad2D, -1, ("at least 0", "-1")),
    (Pad2D, (1, 1, -2, 0), ("at least 0", "-2")),
])
def test_pad_bad_values(cls, value, fragments):
    raisesWith(ModuleError, lambda: cls(value), "pad", *fragments)


def test_pad_bad_mode_and_types():
    raisesWith(ModuleError, lambda: Pad2D(1, mode="wrap"), "wrap", "reflect")
    raisesWith(ValueError, lambda: Pad2D(1.5), "pad", "float")
    raisesWith(ValueError, lambda: Pad2D(1, fillValue="zero"), "fillValue", "str")
