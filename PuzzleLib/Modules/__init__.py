"""PuzzleLib's modules, importable by name: ``from PuzzleLib.Modules import Conv2D``.

Each public class lives in a file of its own name; a name is imported on first use,
so importing this package stays cheap.
"""

import importlib
import sys
import types

# public name -> submodule that defines it
_LOCATIONS = {
    "Module": "Module", "ModuleError": "Module", "InitScheme": "Module", "FactorType": "Module",
    "ConvND": "ConvND", "Conv1D": "Conv1D", "Conv2D": "Conv2D", "Conv3D": "Conv3D",
    "PadMode": "PadND", "PadND": "PadND", "Pad1D": "Pad1D", "Pad2D": "Pad2D",
    "Activation": "Activation", "ActivationType": "Activation",
    "sigmoid": "Activation", "tanh": "Activation", "relu": "Activation", "leakyRelu": "Activation",
    "elu": "Activation", "softPlus": "Activation", "clip": "Activation",
    "Linear": "Linear",
    "MaxPool2D": "MaxPool2D", "AvgPool2D": "AvgPool2D",
    "Flatten": "Flatten", "Reshape": "Reshape",
    "BatchNorm2D": "BatchNorm2D", "Dropout": "Dropout", "SoftMax": "SoftMax", "Identity": "Identity",
}

__all__ = sorted(_LOCATIONS)


def __getattr__(name):
    location = _LOCATIONS.get(name)
    if location is None:
        raise AttributeError(f"module 'PuzzleLib.Modules' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{location}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


class _Package(types.ModuleType):
    """This package, binding classes where the import system would bind same-named submodules.

    Once ``ConvND.py`` has loaded (say as a side effect of ``Conv2D.py``), Python sets the package
    attribute ``ConvND`` to that submodule, which would shadow the class and bypass ``__getattr__``.
    """

    def __setattr__(self, name, value):
        if (isinstance(value, types.ModuleType) and _LOCATIONS.get(name) == name
                and value.__name__ == f"{__name__}.{name}"):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
