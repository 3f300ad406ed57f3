"""Padding of 1-D maps: pad is an int or (left, right)."""

from PuzzleLib.Modules.PadND import PadND


class Pad1D(PadND):
    def __init__(self, pad, mode="constant", fillValue=None, name=None):
        super().__init__(1, pad, mode=mode, fillValue=fillValue, name=name)
