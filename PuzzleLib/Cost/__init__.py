"""PuzzleLib's losses: ``from PuzzleLib.Cost import MSE, CrossEntropy``.

Each loss returns the NEGATIVE gradient of its error with respect to the prediction.
"""

from PuzzleLib.Cost.Abs import Abs
from PuzzleLib.Cost.BCE import BCE
from PuzzleLib.Cost.Cost import Cost, CostError
from PuzzleLib.Cost.CrossEntropy import CrossEntropy
from PuzzleLib.Cost.MSE import MSE
from PuzzleLib.Cost.SmoothL1 import SmoothL1

__all__ = ["Abs", "BCE", "Cost", "CostError", "CrossEntropy", "MSE", "SmoothL1"]
