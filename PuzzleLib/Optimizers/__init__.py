"""PuzzleLib's optimizers: ``from PuzzleLib.Optimizers import Adam``. Every update adds to the parameters."""

from PuzzleLib.Optimizers.AdaGrad import AdaGrad
from PuzzleLib.Optimizers.Adam import Adam
from PuzzleLib.Optimizers.Hooks import Hook, WeightDecay
from PuzzleLib.Optimizers.MomentumSGD import MomentumSGD
from PuzzleLib.Optimizers.NesterovSGD import NesterovSGD
from PuzzleLib.Optimizers.Optimizer import Optimizer, OptimizerError
from PuzzleLib.Optimizers.RMSProp import RMSProp
from PuzzleLib.Optimizers.SGD import SGD

__all__ = [
    "AdaGrad", "Adam", "Hook", "MomentumSGD", "NesterovSGD", "Optimizer", "OptimizerError", "RMSProp", "SGD",
    "WeightDecay",
]
