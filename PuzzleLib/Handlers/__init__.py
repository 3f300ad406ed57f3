"""PuzzleLib's data loops: ``from PuzzleLib.Handlers import Trainer, Validator, Calculator``."""

from PuzzleLib.Handlers.Calculator import Calculator
from PuzzleLib.Handlers.Handler import Handler
from PuzzleLib.Handlers.Trainer import Trainer
from PuzzleLib.Handlers.Validator import Validator

__all__ = ["Calculator", "Handler", "Trainer", "Validator"]
