"""A small, readable deep-learning library that speaks PuzzleLib's API.

Importing the package touches no hardware: the compute engine is chosen lazily,
on the first operation that needs one (see ``PuzzleLib.Config``).
"""

__version__ = "0.1.0"
