"""Containers of modules: ``Sequential`` (and its base ``Container``)."""

from PuzzleLib.Containers.Container import Container
from PuzzleLib.Containers.Sequential import Sequential

__all__ = ["Container", "Sequential"]
