"""Element-wise activation functions: relu, leakyRelu, elu, sigmoid, tanh, softPlus and clip.

``activation`` is an ``ActivationType`` (or one of the module constants ``relu``,
``sigmoid``, ...) or its name as a string. Constants: leakyRelu's negative slope
(0.01), elu's alpha (1.0) and clip's range (0.0, 6.0), overridable through ``args``.
``slc`` (a slice over the flattened data) applies the activation to that part only;
the rest passes through unchanged. ``inplace`` overwrites the input (and, backwards,
the incoming gradient) instead of allocating.
"""

import enum
import numbers

from PuzzleLib import Config
from PuzzleLib.Backend import ElementWise
from PuzzleLib.Modules.Module import Module, ModuleError


class ActivationType(str, enum.Enum):
    sigmoid = "sigmoid"
    tanh = "tanh"
    relu = "relu"
    leakyRelu = "leakyRelu"
    elu = "elu"
    softPlus = "softPlus"
    clip = "clip"


sigmoid = ActivationType.sigmoid
tanh = ActivationType.tanh
relu = ActivationType.relu
leakyRelu = ActivationType.leakyRelu
elu = ActivationType.elu
softPlus = ActivationType.softPlus
clip = ActivationType.clip

# Constants each activation takes, as in PuzzleLib.
_DEFAULT_ARGS = {leakyRelu: (0.01,), elu: (1.0,), clip: (0.0, 6.0)}


class Activation(Module):
    def __init__(self, activation, slc=None, inplace=False, name=None, args=()):
        super().__init__(name)
        if not isinstance(activation, str):
            raise ValueError(f"activation must be an ActivationType or its name, got {type(activation).__name__}")
        try:
            self.activation = ActivationType(activation)
        except ValueError:
            names = ", ".join(t.value for t in ActivationType)
            raise ModuleError(f"Unknown activation {activation!r} (expected one of {names})") from None
        if slc is not None and not isinstance(slc, slice):
            raise ValueError(f"slc must be a slice or None, got {type(slc).__name__}")

        self.actArgs = self._parseArgs(self.activation, args)
        self.slc = slc
        self.inplace = bool(inplace)
        if self.inplace and Config.showWarnings:
            print(f"Warning: {self} is using inplace flag")

    @staticmethod
    def _parseArgs(activation, args):
        default = _DEFAULT_ARGS.get(activation, ())
        args = tuple(args) if args else default
        if len(args) != len(default) or not all(isinstance(a, numbers.Real) for a in args):
            raise ModuleError(f"{activation.value} takes {len(default)} numeric constants (got {args!r})")
        if activation is clip and args[0] > args[1]:
            raise ModuleError(f"clip range must have low <= high (got {args[0]}, {args[1]})")
        return tuple(float(a) for a in args)

    def updateData(self, data):
        self.data = ElementWise.activation(data, self.activation.value, self.actArgs, self.slc, self.inplace)

    def updateGrad(self, grad):
        self.grad = ElementWise.activationBackward(
            grad, self.data, self.activation.value, self.actArgs, self.slc, self.inplace
        )

    def dataShapeFrom(self, shape):
        return tuple(shape)

    def gradShapeFrom(self, shape):
        return tuple(shape)
