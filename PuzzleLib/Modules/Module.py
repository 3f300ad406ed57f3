"""The module contract every layer follows, as in PuzzleLib.

A module holds named Variables (``vars``) and plain attributes (``attrs``). Calling it
checks the input's shape and dtype, stores the input as ``inData``, computes
``updateData`` and returns ``self.data``. ``backward`` checks the gradient, computes
the input gradient (``updateGrad``, stored in ``self.grad``) and accumulates the
parameter gradients (``accGradParams``) as ``scale * new + momentum * old``.
Subclasses implement the four ``*ShapeFrom``/``check*Shape`` methods and the three
compute methods; a failed check raises ``ModuleError`` before any state changes.
"""

import functools
import inspect
import math
import numbers

import numpy as np

from PuzzleLib import Config
from PuzzleLib.Backend import gpuarray
from PuzzleLib.Backend.gpuarray import GPUArray
from PuzzleLib.Variable import Variable


class ModuleError(Exception):
    pass


# Names of the spatial axes of (N, C, *spatial) data, for messages.
SPATIAL_AXES = {1: ("size",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def checkInt(value, what, minimum=None):
    """An int that is not a bool (numpy integers included): ValueError for any other type,
    ModuleError when below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ModuleError(f"{what} must be at least {minimum} (got {value})")
    return value


def ntuple(value, nd, what, minimum):
    """An int or an nd-tuple of ints, as an nd-tuple, each entry at least ``minimum``."""
    if isinstance(value, (tuple, list)):
        if len(value) != nd:
            raise ModuleError(
                f"{what} must be an int or a tuple of {nd} ints (got {len(value)} entries: {tuple(value)})"
            )
        return tuple(checkInt(v, what, minimum) for v in value)
    return (checkInt(value, what, minimum),) * nd


def asArray(ary, what, error):
    """A GPUArray as is, a numpy array wrapped without a copy; ``error`` for anything else."""
    if isinstance(ary, GPUArray):
        return ary
    if isinstance(ary, np.ndarray):
        return gpuarray.wrap(ary)
    raise error(f"{what} must be a GPUArray or a numpy array (got {type(ary).__name__})")


def windowOutShape(spatial, size, stride, pad, dilation=None):
    """Output extent per axis of a sliding window (convolution, pooling) over padded maps."""
    dilation = (1,) * len(size) if dilation is None else dilation
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(spatial, size, stride, pad, dilation))


def windowInShape(spatial, size, stride, pad, dilation=None):
    """The input extent per axis that windowOutShape maps to ``spatial`` (the smallest such)."""
    dilation = (1,) * len(size) if dilation is None else dilation
    return tuple((n - 1) * s + d * (k - 1) - 2 * p + 1 for n, k, s, p, d in zip(spatial, size, stride, pad, dilation))


class InitScheme:
    none = "none"
    xavier = "xavier"
    xavierNormal = "xavier_normal"
    xavierUniform = "xavier_uniform"
    he = "he"
    gaussian = "gaussian"
    uniform = "uniform"


class FactorType:
    inFactor = "in"
    outFactor = "out"
    avgFactor = "avg"


def _recordBlueprint(init):
    """Wrap a subclass __init__ so the outermost call records its arguments as the blueprint."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if "_scheme" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            arguments.pop(next(iter(signature.parameters)))
            object.__setattr__(self, "_scheme", arguments)
        init(self, *args, **kwargs)

    return wrapper


class Module:
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recordBlueprint(cls.__dict__["__init__"])

    def __init__(self, name=None):
        if "_scheme" not in self.__dict__:
            self._scheme = {"name": name}
        self.name = name
        self.blueprint = None
        self.vars = {}
        self.attrs = {}
        self.train = not Config.globalEvalMode
        self.calctype = np.float32
        self.inData = None
        self.data = None
        self.grad = None
        # Algorithms chosen by optimizeForShape (None: the engine's heuristic).
        self.algos = {}

    # -- calling ------------------------------------------------------------------------------
    def __call__(self, data):
        data = self._asArray(data, "Data")
        if not Config.disableDtypeShapeChecks:
            self.checkDataShape(data.shape)
            self.checkDataType(data.dtype)
        self.updateData(data)
        self.inData = data
        return self.data

    def backward(self, grad, updParamGrads=True, updGrad=True, scale=1.0, momentum=0.0):
        grad = self._checkedGrad(grad)
        if updGrad:
            self.updateGrad(grad)
        if updParamGrads and self.train:
            self.ensureGradParams()
            self.accGradParams(grad, scale, momentum)

    def _checkedGrad(self, grad):
        grad = self._asArray(grad, "Grad")
        if self.inData is None:
            raise ModuleError(f"{self}: backward called before a forward pass")
        if not Config.disableDtypeShapeChecks:
            self.checkGradShape(grad.shape)
            self.checkGradType(grad.dtype)
        return grad

    def checkRank(self, shape, ndim, what="Data"):
        if len(shape) != ndim:
            raise ModuleError(f"{what} must be {ndim}d tensor (got {len(shape)}d tensor of shape {tuple(shape)})")

    def checkMinRank(self, shape, ndim, what="Data"):
        if len(shape) < ndim:
            raise ModuleError(
                f"{what} must be at least {ndim}d tensor (got {len(shape)}d tensor of shape {tuple(shape)})"
            )

    def checkWindowFits(self, shape, size, pad, dilation=None):
        """Every padded spatial axis of (N, C, *spatial) data holds at least one (dilated) window."""
        dilation = (1,) * len(size) if dilation is None else dilation
        for axis, n, k, p, d in zip(SPATIAL_AXES[len(size)], shape[2:], size, pad, dilation):
            if n + 2 * p < d * (k - 1) + 1:
                raise ModuleError(
                    f"Data maps {axis} is too small (got {n + 2 * p}, expected at least {d * (k - 1) + 1})"
                )

    @staticmethod
    def _asArray(ary, what):
        return asArray(ary, what, ModuleError)

    def updateData(self, data):
        raise NotImplementedError(f"{type(self).__name__} does not implement updateData")

    def updateGrad(self, grad):
        raise NotImplementedError(f"{type(self).__name__} does not implement updateGrad")

    def accGradParams(self, grad, scale=1.0, momentum=0.0):
        pass

    # -- shapes and types ---------------------------------------------------------------------------
    def dataShapeFrom(self, shape):
        raise NotImplementedError(f"{type(self).__name__} does not implement dataShapeFrom")

    def gradShapeFrom(self, shape):
        raise NotImplementedError(f"{type(self).__name__} does not implement gradShapeFrom")

    def checkDataShape(self, shape):
        pass

    def checkGradShape(self, shape):
        """By default the gradient must have exactly the output's shape."""
        if self.inData is not None:
            expected = self.dataShapeFrom(self.inData.shape)
            if tuple(shape) != tuple(expected):
                raise ModuleError(f"Expected grad shape {tuple(expected)}, got {tuple(shape)}")

    def checkDataType(self, dtype):
        self._checkType(dtype)

    def checkGradType(self, dtype):
        self._checkType(dtype)

    def _checkType(self, dtype):
        if dtype != self.calctype:
            raise ModuleError(f"Expected dtype {self.calctype}, got {dtype}")

    # -- variables and attributes ---------------------------------------------------------------------
    def setVar(self, name, var):
        if not isinstance(var, Variable):
            raise ModuleError(f"setVar expects a Variable for {name!r}, got {type(var).__name__}")
        expected = self.paramShapes().get(name)
        if expected is not None:
            if var.data.shape != expected:
                raise ModuleError(f"Variable {name!r} must have shape {expected}, got {var.data.shape}")
            if var.data.dtype != self.calctype:
                raise ModuleError(f"Variable {name!r} must have dtype {np.dtype(self.calctype)}, got {var.data.dtype}")
        old = self.vars.get(name)
        if old is not None and not Config.disableModuleCompatChecks:
            if old.data.shape != var.data.shape:
                raise ModuleError(f"Variable {name!r} must have shape {old.data.shape}, got {var.data.shape}")
            if old.data.dtype != var.data.dtype:
                raise ModuleError(f"Variable {name!r} must have dtype {old.data.dtype}, got {var.data.dtype}")
        self.vars[name] = var
        object.__setattr__(self, name, var.data)

    def paramShapes(self):
        """{name: shape} of the parameters this module defines; setVar refuses any other shape or dtype."""
        return {}

    def getVar(self, name):
        return self.vars[name]

    def getVarTable(self, vartable=None, name=None, root=True):
        """Map each Variable to the list of dotted names it is known by."""
        vartable = {} if vartable is None else vartable
        prefix = "" if name is None else name
        for varName, var in self.vars.items():
            vartable.setdefault(var, []).append(f"{prefix}{varName}")
        return vartable

    def setAttr(self, name, attr):
        self.attrs[name] = attr
        object.__setattr__(self, name, attr)

    def hasAttr(self, name):
        return name in self.attrs

    def hasVar(self, name):
        return name in self.vars

    # -- training state ---------------------------------------------------------------------------
    def zeroGradParams(self):
        for var in self.vars.values():
            if var.grad is not None:
                var.grad.fill(0)

    def updateParams(self, learnRate):
        for var in self.vars.values():
            if var.grad is not None:
                var.update(learnRate)

    def ensureGradParams(self):
        """Create the gradient arrays that variables made under Config.globalEvalMode lack, so that a
        module switched to train mode accumulates (and an optimizer updates) every parameter."""
        for var in self.getVarTable():
            var.ensureGrad()

    def trainMode(self):
        self.train = True
        self.ensureGradParams()
        self.reset()

    def evalMode(self):
        self.train = False
        self.reset()

    def reset(self):
        self.inData = None
        self.data = None
        self.grad = None

    def calcMode(self, T):
        if np.dtype(T) != np.float32:
            raise ModuleError(f"Expected calculation type {np.float32} (the only one on the CPU), got {np.dtype(T)}")
        self.calctype = np.float32

    def numOfParams(self):
        return sum(var.data.size for var in self.vars.values())

    def paramSize(self, unit=None):
        size = sum(var.data.nbytes for var in self.vars.values())
        divisors = {None: 1, "kb": 1024, "mb": 1024**2}
        if unit not in divisors:
            raise ModuleError(f"Expected unit None, 'kb' or 'mb', got {unit!r}")
        return size / divisors[unit] if unit else size

    def optimizeForShape(self, shape, memlimit=None):
        """Pick the fastest algorithms for inputs of this shape; a no-op unless overridden."""

    def getBlueprint(self):
        return {"classname": type(self).__name__, "scheme": dict(self._scheme)}

    # -- saving (see PuzzleLib.Serialization) --------------------------------------------------------
    def save(self, hdf=None, varlinks=None, name=None, compress="gzip", assumeUniqueNames=False,
             withBlueprint=False):
        from PuzzleLib import Serialization
        return Serialization.save(self, hdf, varlinks=varlinks, name=name, compress=compress,
                                  assumeUniqueNames=assumeUniqueNames, withBlueprint=withBlueprint)

    def load(self, hdf, initvars=None, name=None, assumeUniqueNames=False):
        from PuzzleLib import Serialization
        return Serialization.load(self, hdf, initvars=initvars, name=name, assumeUniqueNames=assumeUniqueNames)

    def __str__(self):
        return f"Module {type(self).__name__} (name: {self.name})"

    # -- initialisation ----------------------------------------------------------------------------------
    @staticmethod
    def createTensorWithScheme(scheme, shape, wscale, factorShape=None, factorTranspose=False, dtype=np.float32):
        """A new tensor drawn from numpy's global generator by a named scheme.

        scheme: None (= xavier_uniform), a name, or (name, factor) with factor "in"
        (default), "out" or "avg" choosing which fan scales the draw.
        """
        name, factor = _parseScheme(scheme)
        fanIn, fanOut = _fans(factorShape if factorShape is not None else shape)
        if factorTranspose:
            fanIn, fanOut = fanOut, fanIn
        fan = {"in": fanIn, "out": fanOut, "avg": (fanIn + fanOut) / 2}[factor]

        if name == InitScheme.none:
            return None
        if name == InitScheme.xavierUniform:
            bound = math.sqrt(3.0 / fan)
            values = np.random.uniform(-bound, bound, size=shape)
        elif name in (InitScheme.xavier, InitScheme.xavierNormal):
            values = np.random.normal(0.0, math.sqrt(1.0 / fan), size=shape)
        elif name == InitScheme.he:
            values = np.random.normal(0.0, math.sqrt(2.0 / fan), size=shape)
        elif name == InitScheme.gaussian:
            values = np.random.normal(0.0, wscale, size=shape)
        else:
            values = np.random.uniform(-wscale, wscale, size=shape)
        return values.astype(dtype)


_SCHEMES = ("none", "xavier", "xavier_normal", "xavier_uniform", "he", "gaussian", "uniform")


def _parseScheme(scheme):
    factor = "in"
    if scheme is None:
        name = InitScheme.xavierUniform
    elif isinstance(scheme, str):
        name = scheme
    elif isinstance(scheme, (tuple, list)):
        if len(scheme) != 2:
            raise ValueError(f"Scheme tuple has {len(scheme)} length, expected 2")
        name, factor = scheme
    else:
        raise ValueError(f"Scheme must be None, a name or a (name, factor) tuple, got {type(scheme).__name__}")
    if name not in _SCHEMES:
        raise ValueError(f"Unknown init scheme {name!r} (expected one of {', '.join(_SCHEMES)})")
    if factor not in ("in", "out", "avg"):
        raise ValueError(f"Unknown factor type {factor!r} (expected 'in', 'out' or 'avg')")
    return name, factor


def _fans(shape):
    shape = tuple(shape)
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive
