"""The engines the convolution benchmark compares: ours (through the public module API), torch and onnxruntime.

Each ``setup*`` function takes a case (see ``conv.py``) and its numpy arrays and returns
``(callables, results)``: ``callables`` maps a direction ("forward", "backwardData", "backwardParams") to a
zero-argument function doing one call, ``results`` maps a direction to a function returning the last
result as numpy arrays (for the correctness cross-check). The directions must first be called in that
order (our backward needs the forward's stored input).

torch, onnxruntime and onnx are imported lazily here and only here: none of them is a dependency of
the library; a missing one makes its ``available*`` function return None (the benchmark then skips it).
"""

import importlib
import importlib.metadata

import numpy as np

DIRECTIONS = ("forward", "backwardData", "backwardParams")


def version(module):
    """The installed distribution's version, else None; read from its metadata, so nothing is imported
    (the benchmark's parent process must not load torch or onnxruntime next to the engines it times)."""
    try:
        return importlib.metadata.version(module)
    except Exception:  # an absent or broken peer is skipped, whatever the reason
        return None


# -- ours: the public Conv1D/2D/3D module ---------------------------------------------------------------
def setupOurs(case, arrays, optimize=False):
    """Per-direction calls through the module: __call__ and backward with updParamGrads/updGrad switched."""
    from PuzzleLib.Backend import gpuarray
    from PuzzleLib.Modules import Conv1D, Conv2D, Conv3D
    from PuzzleLib.Variable import Variable

    cls = {1: Conv1D, 2: Conv2D, 3: Conv3D}[case["nd"]]
    conv = cls(case["inmaps"], case["outmaps"], size=case["size"], stride=case["stride"], pad=case["pad"],
               dilation=case["dilation"], useBias=case["bias"], groups=case["groups"], empty=True)
    conv.setVar("W", Variable(gpuarray.to_gpu(arrays["W"])))
    if case["bias"]:
        conv.setVar("b", Variable(gpuarray.to_gpu(arrays["b"].reshape(conv.bshape))))

    data, grad = gpuarray.to_gpu(arrays["x"]), gpuarray.to_gpu(arrays["dy"])
    optimizeInfo = None
    if optimize:
        optimizeInfo = runOptimize(conv, arrays["x"].shape)

    calls = {
        "forward": lambda: conv(data),
        # scale=1, momentum=0: the parameter gradient is overwritten each call, never accumulated.
        "backwardData": lambda: conv.backward(grad, updParamGrads=False),
        "backwardParams": lambda: conv.backward(grad, updGrad=False),
    }
    results = {
        "forward": lambda: (conv.data.get(),),
        "backwardData": lambda: (conv.grad.get(),),
        "backwardParams": lambda: tuple(conv.vars[n].grad.get().ravel() if n == "b" else conv.vars[n].grad.get()
                                        for n in ("W", "b") if n in conv.vars),
    }
    return calls, results, conv, optimizeInfo


def freeOursHeld():
    """Hands back the memory our engine keeps between calls (its scratch buffers)."""
    from PuzzleLib.Backend import gpuarray

    gpuarray.memoryPool.freeHeld()


def runOptimize(conv, shape):
    """optimizeForShape if the module provides one; its time and whatever algorithm choice it recorded."""
    import time

    if not hasattr(conv, "optimizeForShape"):
        return {"available": False}
    start = time.perf_counter()
    conv.optimizeForShape(shape)
    return {"available": True, "seconds": time.perf_counter() - start, "algos": algosOf(conv)}


def algosOf(conv):
    """The algorithm choice the module remembers, as plain data (empty when it keeps none)."""
    found = {}
    algos = getattr(conv, "algos", None)
    if isinstance(algos, dict):
        found.update({str(k): str(v) for k, v in algos.items()})
    for name in ("fwdAlgo", "bwdDataAlgo", "bwdFilterAlgo"):
        value = getattr(conv, name, None)
        if value is not None:
            found[name] = str(value)
    return found


# -- torch -------------------------------------------------------------------------------------------
def availableTorch(threads):
    """torch with its thread count fixed, or None. OMP_WAIT_POLICY must already be set by the caller."""
    try:
        import torch
    except Exception:
        return None
    torch.set_num_threads(threads)
    return torch


def setupTorch(torch, case, arrays):
    """F.convNd forward; aten.convolution_backward with an output_mask per backward direction."""
    import torch.nn.functional as F

    nd = case["nd"]
    fconv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    x, w, dy = (torch.from_numpy(arrays[k]) for k in ("x", "W", "dy"))
    b = torch.from_numpy(arrays["b"]) if case["bias"] else None
    stride, pad, dil, groups = list(case["stride"]), list(case["pad"]), list(case["dilation"]), case["groups"]
    biasSizes = [case["outmaps"]] if case["bias"] else None
    last = {}

    def backward(mask):
        return torch.ops.aten.convolution_backward(dy, x, w, biasSizes, stride, pad, dil, False, [0] * nd, groups,
                                                   mask)

    def run(direction, fn):
        def call():
            last[direction] = fn()
            return last[direction]
        return call

    calls = {
        "forward": run("forward", lambda: fconv(x, w, b, stride, pad, dil, groups)),
        "backwardData": run("backwardData", lambda: backward([True, False, False])),
        "backwardParams": run("backwardParams", lambda: backward([False, True, case["bias"]])),
    }
    results = {
        "forward": lambda: (last["forward"].numpy(),),
        "backwardData": lambda: (last["backwardData"][0].numpy(),),
        "backwardParams": lambda: tuple(t.numpy() for t in last["backwardParams"][1:] if t is not None),
    }
    # ``last`` holds the latest results for the cross-check; the memory probe clears it between calls.
    return calls, results, last


# -- onnxruntime ----------------------------------------------------------------------------------------
def availableOrt():
    try:
        import onnxruntime
    except Exception:
        return None
    return onnxruntime


def setupOrt(ort, case, arrays, threads, arena=True, forceMinimal=False):
    """A one-node Conv model (W, b as initializers), run with IO binding so no output copy is timed."""
    model = convModelBytes(case, arrays, forceMinimal=forceMinimal)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = arena
    # Spinning pool threads would steal the second core from the next engine's call in the round-robin.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])

    binding = sess.io_binding()
    binding.bind_cpu_input("X", arrays["x"])
    binding.bind_output("Y", "cpu")

    calls = {"forward": lambda: sess.run_with_iobinding(binding)}
    results = {"forward": lambda: (binding.copy_outputs_to_cpu()[0],)}
    return calls, results, sess


def convModelBytes(case, arrays, forceMinimal=False):
    """The serialized ONNX model: built with onnx.helper when onnx is installed, else encoded here."""
    onnx = None if forceMinimal else _tryImport("onnx")
    attrs = _convAttrs(case)
    outShape = list(arrays["dy"].shape)
    inits = [("W", arrays["W"])] + ([("B", arrays["b"])] if case["bias"] else [])
    if onnx is not None:
        from onnx import TensorProto, helper, numpy_helper

        node = helper.make_node("Conv", ["X"] + [n for n, _ in inits], ["Y"], **attrs)
        graph = helper.make_graph(
            [node], "conv",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(arrays["x"].shape))],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, outShape)],
            initializer=[numpy_helper.from_array(a, name=n) for n, a in inits],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
        model.ir_version = _IR_VERSION
        return model.SerializeToString()
    return _minimalModel(attrs, list(arrays["x"].shape), outShape, inits)


_OPSET, _IR_VERSION = 13, 8


def _convAttrs(case):
    return {
        "kernel_shape": list(case["size"]), "strides": list(case["stride"]), "dilations": list(case["dilation"]),
        "pads": list(case["pad"]) * 2, "group": case["groups"],  # ONNX pads: all begins, then all ends
    }


def _tryImport(name):
    try:
        return importlib.import_module(name)
    except Exception:
        return None


# A hand encoder for the few ONNX protobuf messages a one-node model needs (field numbers from onnx.proto),
# so onnxruntime can be benchmarked without the onnx package.
def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _fieldInt(number, value):
    return _varint(number << 3) + _varint(value)


def _fieldBytes(number, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _attribute(name, value):
    if isinstance(value, list):  # AttributeProto: name=1, ints=8, type=20 (INTS=7)
        return _fieldBytes(1, name) + b"".join(_fieldInt(8, v) for v in value) + _fieldInt(20, 7)
    return _fieldBytes(1, name) + _fieldInt(3, value) + _fieldInt(20, 2)  # i=3, INT=2


def _valueInfo(name, shape):
    dims = b"".join(_fieldBytes(1, _fieldInt(1, d)) for d in shape)  # Dimension.dim_value=1
    tensorType = _fieldInt(1, 1) + _fieldBytes(2, dims)  # elem_type FLOAT=1, shape=2
    return _fieldBytes(1, name) + _fieldBytes(2, _fieldBytes(1, tensorType))  # TypeProto.tensor_type=1


def _tensor(name, array):
    array = np.ascontiguousarray(array, dtype="<f4")
    dims = b"".join(_fieldInt(1, d) for d in array.shape)
    return dims + _fieldInt(2, 1) + _fieldBytes(8, name) + _fieldBytes(9, array.tobytes())  # raw_data=9


def _minimalModel(attrs, inShape, outShape, inits):
    node = b"".join(_fieldBytes(1, n) for n in ["X"] + [n for n, _ in inits])
    node += _fieldBytes(2, "Y") + _fieldBytes(3, "conv") + _fieldBytes(4, "Conv")
    node += b"".join(_fieldBytes(5, _attribute(k, v)) for k, v in attrs.items())
    graph = _fieldBytes(1, node) + _fieldBytes(2, "conv")
    graph += b"".join(_fieldBytes(5, _tensor(n, a)) for n, a in inits)
    graph += _fieldBytes(11, _valueInfo("X", inShape)) + _fieldBytes(12, _valueInfo("Y", outShape))
    opset = _fieldBytes(1, "") + _fieldInt(2, _OPSET)
    return _fieldInt(1, _IR_VERSION) + _fieldBytes(2, "puzzlelib-benchmark") + _fieldBytes(7, graph) + \
        _fieldBytes(8, opset)

