"""Dataset readers: ``MnistLoader`` for the MNIST IDX files."""

from PuzzleLib.Datasets.MnistLoader import MnistLoader, readIdxImages, readIdxLabels

__all__ = ["MnistLoader", "readIdxImages", "readIdxLabels"]
